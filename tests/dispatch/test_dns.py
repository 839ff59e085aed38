"""Name resolution: resolve, dnsServer (a local UDP DNS server), DoH (a local RFC 8484 endpoint).

Each task's answers are its own: a name pinned or looked up for one task
never serves another (libcurl shares DNS and connection caches in a multi).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from tests.conftest import Api, Owner
from tests.dispatch.helpers import NAME, b64, get, named_url, pin, run
from tests.targets import DnsServer, Target, doh_responder, tls_context

# ---- resolve ----


def test_resolve_reaches_the_local_target(api: Api, owner: Owner, target: Target) -> None:
    done = run(api, owner, get(named_url(target)), pin(target))
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/cb")
    assert arrival.header("host") == f"{NAME}:{target.port}"


def test_resolve_to_an_ipv6_address(api: Api, owner: Owner) -> None:
    server = Target(host="::1")
    try:
        config = {**pin(server, "::1"), "ipVersion": 6}
        done = run(api, owner, get(named_url(server, "/six")), config)
        assert done["state"] == "SUCCESS", done
        assert len(server.arrivals_at("/six")) == 1
    finally:
        server.close()


def test_resolve_wildcard_host(api: Api, owner: Owner, target: Target) -> None:
    config = pin(target, host="*")
    done = run(api, owner, get(named_url(target, name="any-name.test")), config)
    assert done["state"] == "SUCCESS", done
    assert target.arrivals_at("/cb")[0].header("host") == f"any-name.test:{target.port}"


def test_a_resolve_entry_never_serves_another_task(api: Api, owner: Owner, target: Target) -> None:
    pinned = run(api, owner, get(named_url(target, "/pinned")), pin(target))
    assert pinned["state"] == "SUCCESS", pinned
    # same name and port, no resolve: neither the DNS cache nor the live connection helps
    other = run(api, api.owner(), get(named_url(target, "/unpinned")))
    assert other["state"] == "ERROR", other
    assert "resolve" in other["error"].lower(), other["error"]
    assert target.arrivals_at("/unpinned") == []


# ---- dnsServer ----


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer({NAME: ["127.0.0.1", "::1"]})
    yield server
    server.close()


def test_dns_server_answers_the_name(
    api: Api, owner: Owner, target: Target, dns_server: DnsServer
) -> None:
    done = run(api, owner, get(named_url(target)), {"dnsServer": [dns_server.address]})
    assert done["state"] == "SUCCESS", done
    assert dns_server.queries == [NAME]
    assert target.arrivals_at("/cb")[0].header("host") == f"{NAME}:{target.port}"


def test_dns_server_with_ip_version_6_asks_for_aaaa(
    api: Api, owner: Owner, dns_server: DnsServer
) -> None:
    server = Target(host="::1")
    try:
        config = {"dnsServer": [dns_server.address], "ipVersion": 6}
        done = run(api, owner, get(named_url(server, "/six")), config)
        assert done["state"] == "SUCCESS", done
        assert len(server.arrivals_at("/six")) == 1
    finally:
        server.close()


def test_dns_server_that_does_not_know_the_name_fails_the_attempt(
    api: Api, owner: Owner, target: Target, dns_server: DnsServer
) -> None:
    config = {"dnsServer": [dns_server.address], "retry": 1, "retryInterval": 50}
    done = run(api, owner, get(named_url(target, name="unknown.test")), config)
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0
    assert done["attempts"] == 2
    assert "Could not resolve host: unknown.test" in done["error"], done["error"]
    assert dns_server.queries == ["unknown.test", "unknown.test"]
    assert target.arrivals == []


def test_an_answer_of_a_dns_server_never_serves_another_task(
    api: Api, owner: Owner, target: Target, dns_server: DnsServer
) -> None:
    done = run(api, owner, get(named_url(target, "/a")), {"dnsServer": [dns_server.address]})
    assert done["state"] == "SUCCESS", done
    other = run(api, owner, get(named_url(target, "/b")))
    assert other["state"] == "ERROR", other
    assert target.arrivals_at("/b") == []


# ---- DNS over HTTPS ----


@pytest.fixture
def doh(ca: trustme.CA) -> Iterator[tuple[Target, list[str]]]:
    """An HTTPS DoH endpoint at /dns-query answering tasks.test; and the names it was asked."""
    server = Target(ssl_context=tls_context(ca))
    queries: list[str] = []
    server.respond("/dns-query", doh_responder({NAME: ["127.0.0.1"]}, queries))
    yield server, queries
    server.close()


def test_doh_insecure_resolves_through_an_untrusted_endpoint(
    api: Api, owner: Owner, target: Target, doh: tuple[Target, list[str]]
) -> None:
    endpoint, queries = doh
    config = {"dohUrl": endpoint.url("/dns-query"), "dohInsecure": True}
    done = run(api, owner, get(named_url(target)), config)
    assert done["state"] == "SUCCESS", done
    assert NAME in queries
    (query, *_) = endpoint.arrivals_at("/dns-query")
    assert query.method == "POST"
    assert query.header("content-type") == "application/dns-message"
    assert len(target.arrivals_at("/cb")) == 1


def test_doh_endpoint_certificate_is_verified(
    api: Api, owner: Owner, target: Target, doh: tuple[Target, list[str]]
) -> None:
    endpoint, queries = doh
    done = run(api, owner, get(named_url(target)), {"dohUrl": endpoint.url("/dns-query")})
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0
    assert queries == []  # the TLS handshake with the endpoint failed
    assert target.arrivals == []


def test_doh_endpoint_trusted_through_ca(
    api: Api, owner: Owner, ca: trustme.CA, target: Target, doh: tuple[Target, list[str]]
) -> None:
    endpoint, queries = doh
    config = {"dohUrl": endpoint.url("/dns-query"), "ca": b64(ca.cert_pem.bytes())}
    done = run(api, owner, get(named_url(target)), config)
    assert done["state"] == "SUCCESS", done
    assert NAME in queries


def test_a_doh_answer_never_serves_another_task(
    api: Api, owner: Owner, target: Target, doh: tuple[Target, list[str]]
) -> None:
    endpoint, _ = doh
    config = {"dohUrl": endpoint.url("/dns-query"), "dohInsecure": True}
    done = run(api, owner, get(named_url(target, "/a")), config)
    assert done["state"] == "SUCCESS", done
    other = run(api, owner, get(named_url(target, "/b")))
    assert other["state"] == "ERROR", other
    assert target.arrivals_at("/b") == []
