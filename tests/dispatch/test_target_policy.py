"""TARGET_ALLOW / TARGET_DENY: checked on the address connected to, never on the URL text.

Every target is a real local server: 127.0.0.1 stands for an allowed address
and 127.0.0.2 (also loopback on Linux) or ::1 for a denied one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tasks_server.config import Settings, SettingsError
from tests.conftest import Api, Owner
from tests.dispatch.helpers import get, named_url, pin, run
from tests.targets import DnsServer, ForwardProxy, Reply, Target

DENIED = "127.0.0.2"


@pytest.fixture
def denied() -> Iterator[Target]:
    """A target on an address the policies of these tests deny."""
    server = Target(host=DENIED)
    yield server
    server.close()


def served(start_server: Callable[..., Api], **policy: tuple[str, ...]) -> tuple[Api, Owner]:
    api = start_server(**policy)
    return api, api.owner()


def assert_refused(done: dict[str, Any], error: str) -> None:
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0, done
    assert done["error"] == error, done


def test_deny_loopback_blocks_a_local_target(
    start_server: Callable[..., Api], target: Target
) -> None:
    api, owner = served(start_server, target_deny=("127.0.0.0/8",))
    done = run(api, owner, get(target.url("/blocked")))
    assert_refused(done, "address 127.0.0.1 is denied by TARGET_DENY")
    assert target.arrivals == []


def test_allow_one_address_passes_it_and_refuses_the_rest(
    start_server: Callable[..., Api], target: Target, denied: Target
) -> None:
    api, owner = served(start_server, target_allow=("127.0.0.1/32",))
    done = run(api, owner, get(target.url("/allowed")))
    assert done["state"] == "SUCCESS", done
    assert len(target.arrivals_at("/allowed")) == 1
    done = run(api, owner, get(denied.url("/outside")))
    assert_refused(done, f"address {DENIED} is not in TARGET_ALLOW")
    assert denied.arrivals == []


def test_deny_wins_over_allow(
    start_server: Callable[..., Api], target: Target, denied: Target
) -> None:
    api, owner = served(start_server, target_allow=("127.0.0.0/8",), target_deny=(f"{DENIED}/32",))
    assert run(api, owner, get(target.url("/in")))["state"] == "SUCCESS"
    done = run(api, owner, get(denied.url("/both")))
    assert_refused(done, f"address {DENIED} is denied by TARGET_DENY")
    assert denied.arrivals == []


def test_a_redirect_to_a_denied_address_is_blocked(
    start_server: Callable[..., Api], target: Target, denied: Target
) -> None:
    api, owner = served(start_server, target_deny=(f"{DENIED}/32",))
    target.script("/hop", always=Reply(302, b"", {"Location": denied.url("/inside")}))
    done = run(api, owner, get(target.url("/hop")))
    assert_refused(done, f"address {DENIED} is denied by TARGET_DENY")
    assert len(target.arrivals_at("/hop")) == 1
    assert denied.arrivals == []


def test_a_resolve_pin_to_a_denied_address_is_blocked(
    start_server: Callable[..., Api], denied: Target
) -> None:
    api, owner = served(start_server, target_deny=(f"{DENIED}/32",))
    done = run(api, owner, get(named_url(denied)), pin(denied, DENIED))
    assert_refused(done, f"address {DENIED} is denied by TARGET_DENY")
    assert denied.arrivals == []


def test_a_name_that_looks_allowed_is_judged_by_its_address(
    start_server: Callable[..., Api], denied: Target
) -> None:
    # the URL text says 127.0.0.1 (allowed); the name is pinned to the denied address
    api, owner = served(start_server, target_allow=("127.0.0.1/32",))
    name = "127.0.0.1.example"
    config = pin(denied, DENIED, host=name)
    done = run(api, owner, get(named_url(denied, name=name)), config)
    assert_refused(done, f"address {DENIED} is not in TARGET_ALLOW")
    assert denied.arrivals == []


def test_an_ipv4_mapped_ipv6_address_is_judged_as_ipv4(
    start_server: Callable[..., Api], target: Target
) -> None:
    api, owner = served(start_server, target_deny=("127.0.0.0/8",))
    config = {**pin(target, "::ffff:127.0.0.1"), "ipVersion": 6}
    done = run(api, owner, get(named_url(target)), config)
    assert_refused(done, "address 127.0.0.1 is denied by TARGET_DENY")
    assert target.arrivals == []


def test_an_ipv6_target_is_checked(start_server: Callable[..., Api]) -> None:
    server = Target(host="::1")
    try:
        api, owner = served(start_server, target_deny=("::1/128",))
        done = run(api, owner, get(server.url("/six")), {"ipVersion": 6})
        assert_refused(done, "address ::1 is denied by TARGET_DENY")
        assert server.arrivals == []
    finally:
        server.close()


def test_a_dns_server_answer_is_checked(start_server: Callable[..., Api], denied: Target) -> None:
    dns = DnsServer({"inside.test": [DENIED]})
    try:
        api, owner = served(start_server, target_deny=(f"{DENIED}/32",))
        done = run(
            api, owner, get(named_url(denied, name="inside.test")), {"dnsServer": [dns.address]}
        )
        assert_refused(done, f"address {DENIED} is denied by TARGET_DENY")
        assert dns.queries == ["inside.test"]  # the lookup happened; the connection did not
        assert denied.arrivals == []
    finally:
        dns.close()


def test_a_denied_dns_server_is_never_asked(
    start_server: Callable[..., Api], target: Target
) -> None:
    dns = DnsServer({"inside.test": ["127.0.0.1"]})
    try:
        api, owner = served(start_server, target_deny=("127.0.0.1/32",))
        config = {"dnsServer": [dns.address]}
        done = run(api, owner, get(named_url(target, name="inside.test")), config)
        assert_refused(done, f"dnsServer {dns.address}: address 127.0.0.1 is denied by TARGET_DENY")
        assert dns.queries == []
        assert target.arrivals == []
    finally:
        dns.close()


def test_doh_is_refused_while_a_policy_is_set(
    start_server: Callable[..., Api], target: Target
) -> None:
    # libcurl's DoH requests open sockets without OPENSOCKETFUNCTION: they would go unchecked
    api, owner = served(start_server, target_deny=(f"{DENIED}/32",))
    doh = {"dohUrl": target.url("/dns-query")}
    done = run(api, owner, get(named_url(target)), doh)
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0, done
    assert done["error"].startswith("dohUrl cannot be used while TARGET_ALLOW or TARGET_DENY"), done
    assert target.arrivals == []


def test_a_refused_attempt_is_retried_like_a_network_failure(
    start_server: Callable[..., Api], denied: Target
) -> None:
    api, owner = served(start_server, target_deny=(f"{DENIED}/32",))
    done = run(api, owner, get(denied.url("/again")), {"retry": 2, "retryInterval": 1})
    assert_refused(done, f"address {DENIED} is denied by TARGET_DENY")
    assert done["attempts"] == 3, done
    assert done["retryCount"] == 2, done


def test_the_proxy_address_is_checked(start_server: Callable[..., Api], target: Target) -> None:
    proxy = ForwardProxy()
    try:
        api, owner = served(start_server, target_deny=("127.0.0.1/32",))
        config = {"proxy": {"protocol": "http", "host": "127.0.0.1", "port": proxy.port}}
        done = run(api, owner, get(f"http://{DENIED}:{target.port}/via"), config)
        assert_refused(done, "address 127.0.0.1 is denied by TARGET_DENY")
        assert proxy.arrivals == []
    finally:
        proxy.close()


def test_behind_an_allowed_proxy_the_target_is_the_proxy_s_to_police(
    start_server: Callable[..., Api], denied: Target
) -> None:
    # documented: the server connects to the proxy only, so only the proxy's address is checked
    proxy = ForwardProxy()
    try:
        api, owner = served(start_server, target_deny=(f"{DENIED}/32",))
        config = {"proxy": {"protocol": "http", "host": "127.0.0.1", "port": proxy.port}}
        done = run(api, owner, get(denied.url("/relayed")), config)
        assert done["state"] == "SUCCESS", done
        assert len(proxy.arrivals) == 1
        assert len(denied.arrivals_at("/relayed")) == 1
    finally:
        proxy.close()


def test_without_a_policy_every_address_is_allowed(api: Api, owner: Owner, denied: Target) -> None:
    assert run(api, owner, get(denied.url("/open")))["state"] == "SUCCESS"


@pytest.mark.parametrize("variable", ["TARGET_ALLOW", "TARGET_DENY"])
@pytest.mark.parametrize("value", ["10.0.0.0/33", "localhost", "10.0.0.0/8,nope"])
def test_a_bad_cidr_list_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{variable}="):
        Settings.from_env({variable: value})


def test_cidr_lists_are_parsed_into_their_normal_form() -> None:
    settings = Settings.from_env(
        {"TARGET_ALLOW": " 192.168.1.5/24 , 127.0.0.1,", "TARGET_DENY": "fc00::/7,::1"}
    )
    assert settings.target_allow == ("192.168.1.0/24", "127.0.0.1/32")
    assert settings.target_deny == ("fc00::/7", "::1/128")
