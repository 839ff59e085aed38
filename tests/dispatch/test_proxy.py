"""Proxies (a real local forward proxy: relays, CONNECT tunnels, TLS, auth) and PROXY protocol."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme

from tests.conftest import Api, Owner
from tests.dispatch.helpers import b64, digest_params, get, run
from tests.targets import ForwardProxy, ProxyArrival, Reply, Target, tls_context

PROXY_BASIC = "Basic " + base64.b64encode(b"proxy-user:proxy-pw").decode()
PROXY_USER = {"username": "proxy-user", "password": "proxy-pw"}


def via(proxy: ForwardProxy, protocol: str = "http", **extra: Any) -> dict[str, Any]:
    return {"proxy": {"protocol": protocol, "host": "127.0.0.1", "port": proxy.port}, **extra}


def basic_gate(expected: str) -> Callable[[ProxyArrival], Reply | None]:
    def check(arrival: ProxyArrival) -> Reply | None:
        if arrival.header("proxy-authorization") == expected:
            return None  # relay it
        return Reply(407, b"", {"Proxy-Authenticate": 'Basic realm="proxy"'})

    return check


def digest_gate(user: str, password: str, realm: str = "proxy@test") -> Any:
    nonce = "5fd2a1b0c3e4d5f6a7b8c9d0e1f2a3b4"
    challenge = {"Proxy-Authenticate": f'Digest realm="{realm}", qop="auth", nonce="{nonce}"'}

    def check(arrival: ProxyArrival) -> Reply | None:
        header = arrival.header("proxy-authorization") or ""
        if digest_params(header, arrival.method, user, password, realm, nonce):
            return None  # relay it
        return Reply(407, b"", challenge)

    return check


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy(challenge=basic_gate(PROXY_BASIC))
    yield server
    server.close()


def test_http_proxy_sees_the_request_its_headers_and_credentials(
    api: Api, owner: Owner, target: Target, proxy: ForwardProxy
) -> None:
    config = via(proxy, proxyHeaders={"X-Proxy-Token": "for-the-proxy"}, proxyAuthBasic=PROXY_USER)
    request = get(target.url("/via"), headers={"X-User": "for-the-target"})
    done = run(api, owner, request, config)
    assert done["state"] == "SUCCESS", done
    (asked,) = proxy.wait_for(1)
    assert (asked.method, asked.target) == ("GET", target.url("/via"))
    assert asked.header("x-proxy-token") == "for-the-proxy"
    assert asked.header("proxy-authorization") == PROXY_BASIC
    assert asked.header("x-user") == "for-the-target"
    (arrival,) = target.arrivals_at("/via")  # relayed
    assert arrival.header("x-user") == "for-the-target"
    assert arrival.header("x-tasks-queue-id") == done["id"]


def test_wrong_proxy_credentials_get_407(
    api: Api, owner: Owner, target: Target, proxy: ForwardProxy
) -> None:
    config = via(proxy, proxyAuthBasic={"username": "proxy-user", "password": "wrong"})
    done = run(api, owner, get(target.url("/via")), config)
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 407
    assert target.arrivals == []


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_https_target_through_a_connect_tunnel(
    api: Api, owner: Owner, ca: trustme.CA, https: Target, proxy: ForwardProxy, version: str
) -> None:
    config = via(
        proxy,
        proxyHttpVersion=version,
        proxyHeaders={"X-Proxy-Token": "t"},
        proxyAuthBasic=PROXY_USER,
        ca=b64(ca.cert_pem.bytes()),
    )
    done = run(api, owner, get(https.url("/tunnel"), headers={"X-User": "u"}), config)
    assert done["state"] == "SUCCESS", done
    (asked,) = proxy.wait_for(1)
    # the proxy's own port was used (the original dropped it with --proxy1.0)
    assert (asked.method, asked.target, asked.version) == (
        "CONNECT",
        f"127.0.0.1:{https.port}",
        f"HTTP/{version}",
    )
    assert asked.header("x-proxy-token") == "t"
    assert asked.header("proxy-authorization") == PROXY_BASIC
    assert asked.header("x-user") is None  # user headers go through the tunnel only
    (arrival,) = https.arrivals_at("/tunnel")
    assert arrival.header("x-user") == "u"
    assert arrival.header("proxy-authorization") is None


def test_proxy_digest_auth(api: Api, owner: Owner, target: Target) -> None:
    proxy = ForwardProxy(challenge=digest_gate("proxy-user", "proxy-pw"))
    try:
        done = run(api, owner, get(target.url("/d")), via(proxy, proxyAuthDigest=PROXY_USER))
        assert done["state"] == "SUCCESS", done
        first, second = proxy.wait_for(2)
        assert first.header("proxy-authorization") is None
        assert (second.header("proxy-authorization") or "").startswith("Digest ")
        assert len(target.arrivals_at("/d")) == 1
    finally:
        proxy.close()


@pytest.mark.parametrize(("insecure", "state"), [(True, "SUCCESS"), (None, "ERROR")])
def test_https_proxy_and_proxy_insecure(
    api: Api, owner: Owner, ca: trustme.CA, target: Target, insecure: bool | None, state: str
) -> None:
    proxy = ForwardProxy(ssl_context=tls_context(ca))
    try:
        config = via(proxy, "https")
        if insecure is not None:
            config["proxyInsecure"] = insecure
        done = run(api, owner, get(target.url("/tls-proxy")), config)
        assert done["state"] == state, done
        if state == "SUCCESS":
            (asked,) = proxy.wait_for(1)
            assert asked.target == target.url("/tls-proxy")
            assert len(target.arrivals_at("/tls-proxy")) == 1
        else:
            assert done["statusCode"] == 0
            assert proxy.arrivals == []
            assert target.arrivals == []
    finally:
        proxy.close()


def test_proxy_header_with_a_line_break_is_400(api: Api, owner: Owner, proxy: ForwardProxy) -> None:
    config = via(proxy, proxyHeaders={"X-Proxy": "a\r\nInjected: 1"})
    reply = api.register(owner, {"httpRequest": get("http://127.0.0.1:9/cb"), "config": config})
    assert reply.status_code == 400, reply.text
    assert set(reply.json()["fields"]) == {"config.proxyHeaders.X-Proxy"}


# ---- PROXY protocol (HAProxy) ----


@pytest.fixture
def behind_haproxy() -> Iterator[Target]:
    server = Target(proxy_protocol=True)
    yield server
    server.close()


def test_haproxy_protocol_line(api: Api, owner: Owner, behind_haproxy: Target) -> None:
    done = run(api, owner, get(behind_haproxy.url("/hap")), {"haProxyProtocol": True})
    assert done["state"] == "SUCCESS", done
    (arrival,) = behind_haproxy.arrivals_at("/hap")
    proto, family, source, destination, source_port, port = (arrival.proxy_line or "").split()
    assert (proto, family, source, destination) == ("PROXY", "TCP4", "127.0.0.1", "127.0.0.1")
    assert (int(source_port), int(port)) == (arrival.client_port, behind_haproxy.port)


def test_haproxy_client_ip(api: Api, owner: Owner, behind_haproxy: Target) -> None:
    config = {"haProxyProtocol": True, "haProxyClientIp": "203.0.113.7"}
    done = run(api, owner, get(behind_haproxy.url("/hap")), config)
    assert done["state"] == "SUCCESS", done
    (arrival,) = behind_haproxy.arrivals_at("/hap")
    # the client address is the one given (libcurl writes it as the destination too)
    assert (arrival.proxy_line or "").split()[:3] == ["PROXY", "TCP4", "203.0.113.7"]


def test_no_proxy_line_without_the_option(api: Api, owner: Owner, target: Target) -> None:
    """The control: a plain target would take a PROXY line as a bad request line."""
    done = run(api, owner, get(target.url("/plain")), {"haProxyProtocol": False})
    assert done["state"] == "SUCCESS", done
    assert target.arrivals_at("/plain")[0].proxy_line is None
