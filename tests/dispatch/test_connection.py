"""Connection options (keepAliveDuration, hsts), the cookie file, and bodies kept as bytes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from tests.conftest import Api, Owner
from tests.dispatch.helpers import b64, get, netscape_cookies, run
from tests.targets import Arrival, Reply, Target, tls_context, wait_until

NAME = "tasks.test"
USER_HZ = 100  # /proc/net/tcp timers are in clock ticks


def client_socket(port: int, server: Target) -> tuple[str, str, int] | None:
    """(state, timer kind, ticks left) of the loopback TCP socket from `port` to `server`.

    From /proc/net/tcp: state 01 is ESTABLISHED; timer kind 02 is the
    keep-alive timer, armed only on a socket with SO_KEEPALIVE.
    """
    ends = (f"0100007F:{port:04X}", f"0100007F:{server.port:04X}")
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            local, remote, state, timer = fields[1], fields[2], fields[3], fields[5]
            if (local, remote) == ends:
                kind, _, ticks = timer.partition(":")
                return state, kind, int(ticks, 16)
    return None


# ---- keepAliveDuration ----


def two_tasks(api: Api, owner: Owner, target: Target, config: dict[str, Any]) -> list[Arrival]:
    """Run two tasks one after the other; their arrivals."""
    for path in ("/one", "/two"):
        done = run(api, owner, get(target.url(path)), config)
        assert done["state"] == "SUCCESS", done
    return [target.arrivals_at(path)[0] for path in ("/one", "/two")]


def test_keep_alive_duration_sets_tcp_keep_alive_and_keeps_the_connection(
    api: Api, owner: Owner, target: Target
) -> None:
    one, two = two_tasks(api, owner, target, {"keepAliveDuration": 7})
    assert one.client_port == two.client_port  # the connection was kept and reused
    state, kind, ticks = wait_until(lambda: client_socket(one.client_port, target))
    assert (state, kind) == ("01", "02")  # open, with the keep-alive timer armed
    assert 0 < ticks <= 7 * USER_HZ


def test_keep_alive_duration_zero_means_no_keep_alive(
    api: Api, owner: Owner, target: Target
) -> None:
    one, two = two_tasks(api, owner, target, {"keepAliveDuration": 0})
    assert one.client_port != two.client_port  # a new connection for each
    # and the first one was closed by the client, not kept open
    wait_until(lambda: (client_socket(one.client_port, target) or ("closed",))[0] != "01")


# ---- hsts ----


@pytest.fixture
def named_https(ca: trustme.CA) -> Iterator[Target]:
    """An HTTPS target whose certificate is for tasks.test."""
    server = Target(ssl_context=tls_context(ca, NAME))
    yield server
    server.close()


def hsts_cache(*lines: str) -> str:
    return base64.b64encode(("# Your HSTS cache\n" + "\n".join(lines) + "\n").encode()).decode()


def tls_by_name(ca: trustme.CA, server: Target, **extra: Any) -> dict[str, Any]:
    return {
        "resolve": [{"host": NAME, "port": server.port, "address": ["127.0.0.1"]}],
        "ca": b64(ca.cert_pem.bytes()),
        **extra,
    }


@pytest.mark.parametrize(
    "cache",
    [f'{NAME} "20991231 00:00:00"', ".test unlimited"],
    ids=["host", "parent-domain"],
)
def test_hsts_cache_sends_an_http_url_over_https(
    api: Api, owner: Owner, ca: trustme.CA, named_https: Target, cache: str
) -> None:
    config = tls_by_name(ca, named_https, hsts=hsts_cache("other.example unlimited", cache))
    done = run(api, owner, get(f"http://{NAME}:{named_https.port}/upgraded"), config)
    assert done["state"] == "SUCCESS", done
    (arrival,) = named_https.arrivals_at("/upgraded")  # arrived over TLS
    assert arrival.header("x-tasks-queue-id") == done["id"]


def test_without_hsts_the_http_url_stays_http(
    api: Api, owner: Owner, ca: trustme.CA, named_https: Target
) -> None:
    done = run(
        api, owner, get(f"http://{NAME}:{named_https.port}/plain"), tls_by_name(ca, named_https)
    )
    assert done["state"] == "ERROR", done  # clear text to a TLS port
    assert named_https.arrivals == []


def test_an_expired_hsts_entry_is_not_used(
    api: Api, owner: Owner, ca: trustme.CA, named_https: Target
) -> None:
    config = tls_by_name(ca, named_https, hsts=hsts_cache(f'{NAME} "20200101 00:00:00"'))
    done = run(api, owner, get(f"http://{NAME}:{named_https.port}/old"), config)
    assert done["state"] == "ERROR", done
    assert named_https.arrivals == []


@pytest.mark.parametrize(("hsts", "state"), [(True, "SUCCESS"), (False, "ERROR")])
def test_hsts_true_honours_strict_transport_security_within_the_attempt(
    api: Api, owner: Owner, ca: trustme.CA, named_https: Target, hsts: bool, state: str
) -> None:
    back_to_http = f"http://{NAME}:{named_https.port}/next"
    named_https.script(
        "/start",
        always=Reply(
            302, b"", {"Strict-Transport-Security": "max-age=3600", "Location": back_to_http}
        ),
    )
    config = tls_by_name(ca, named_https, hsts=hsts)
    done = run(api, owner, get(f"https://{NAME}:{named_https.port}/start"), config)
    assert done["state"] == state, done
    assert len(named_https.arrivals_at("/next")) == (1 if hsts else 0)


# ---- the cookie file ----


def test_cookie_file_sends_only_the_cookies_that_match(
    api: Api, owner: Owner, target: Target
) -> None:
    # by name: libcurl counts 127.0.0.1 as a secure origin, where secure cookies go too
    host = f"api.{NAME}"
    cookie = netscape_cookies(
        f"{host}\tFALSE\t/\tFALSE\t0\tplain\tyes",
        f"#HttpOnly_{host}\tFALSE\t/\tFALSE\t0\thttponly\tyes",
        f".{NAME}\tTRUE\t/\tFALSE\t0\tparent_domain\tyes",
        f"{host}\tFALSE\t/jar\tFALSE\t0\tin_path\tyes",
        f"{host}\tFALSE\t/elsewhere\tFALSE\t0\tother_path\tno",
        f"{host}\tFALSE\t/\tTRUE\t0\tsecure_only\tno",
        f"{host}\tFALSE\t/\tFALSE\t1\texpired\tno",
        f"other.{NAME}\tFALSE\t/\tFALSE\t0\tsibling_host\tno",
        "127.0.0.1\tFALSE\t/\tFALSE\t0\tother_host\tno",
    )
    request = {**get(f"http://{host}:{target.port}/jar/x"), "cookie": cookie}
    config = {"resolve": [{"host": host, "port": target.port, "address": ["127.0.0.1"]}]}
    done = run(api, owner, request, config)
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/jar/x")
    (header,) = arrival.header_values("cookie")
    sent = dict(pair.split("=", 1) for pair in header.split("; "))
    assert sent == {"plain": "yes", "httponly": "yes", "parent_domain": "yes", "in_path": "yes"}


# ---- bodies ----


def test_binary_response_body_round_trips(api: Api, owner: Owner, target: Target) -> None:
    body = bytes(range(256)) * 8 + b"\x00\xff\xfe"
    target.script("/bin", Reply(200, body, {"Content-Type": "application/octet-stream"}))
    done = run(api, owner, get(target.url("/bin")))
    assert done["state"] == "SUCCESS", done
    assert base64.b64decode(done["response"]) == body


def test_binary_error_body_is_kept_too(api: Api, owner: Owner, target: Target) -> None:
    body = b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(128, 256))
    target.script("/bin", Reply(502, body))
    done = run(api, owner, get(target.url("/bin")))
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 502
    assert base64.b64decode(done["response"]) == body
