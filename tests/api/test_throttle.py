"""The throttle: a token bucket per client IP (MAX_THROTTLE_REQUEST per
MAX_THROTTLE_TIME_WINDOW ms), 429 with Retry-After and RateLimit-* headers, X-Forwarded-For
only with TRUST_PROXY_HEADERS=1, bounded memory. The buckets are driven by a clock the test
holds; the middleware through a real server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tasks_server.api.middleware.throttle import TokenBuckets, client_address
from tests.conftest import Api
from tests.targets import wait_until


class Clock:
    """Seconds, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def buckets(limit: int, window_ms: int, **extra: Any) -> tuple[TokenBuckets, Clock]:
    clock = Clock()
    return TokenBuckets(limit, window_ms, clock=clock, **extra), clock


# ---- the buckets ----


def test_a_full_bucket_allows_limit_requests_then_refuses() -> None:
    throttle, _ = buckets(3, 60_000)
    decisions = [throttle.take("a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    # one request comes back every 20 s; the bucket is full 60 s after the first three
    assert decisions[3].retry_after_s == 20
    assert [d.reset_s for d in decisions] == [20, 40, 60, 60]


def test_tokens_come_back_one_interval_at_a_time() -> None:
    throttle, clock = buckets(3, 60_000)
    for _ in range(3):
        throttle.take("a")
    clock.now += 19.9
    assert not throttle.take("a").allowed
    clock.now += 0.1
    assert throttle.take("a").allowed
    assert not throttle.take("a").allowed
    clock.now += 60
    assert [throttle.take("a").allowed for _ in range(4)] == [True, True, True, False]


def test_a_refused_request_costs_nothing() -> None:
    throttle, clock = buckets(2, 10_000)
    throttle.take("a")
    throttle.take("a")
    for _ in range(100):
        assert not throttle.take("a").allowed
    clock.now += 5
    assert throttle.take("a").allowed


def test_over_a_long_time_the_rate_is_limit_per_window() -> None:
    throttle, clock = buckets(10, 1_000)
    allowed = 0
    for _ in range(10_000):  # one attempt every ms, for 10 s
        allowed += throttle.take("a").allowed
        clock.now += 0.001
    assert 10 * 10 <= allowed <= 10 * 10 + 10  # the rate, plus the first full bucket


def test_clients_have_their_own_buckets() -> None:
    throttle, _ = buckets(1, 60_000)
    assert throttle.take("a").allowed
    assert not throttle.take("a").allowed
    assert throttle.take("b").allowed


def test_idle_clients_are_forgotten() -> None:
    throttle, clock = buckets(5, 1_000)
    for client in range(1000):
        throttle.take(f"10.0.{client // 256}.{client % 256}")
    assert len(throttle) == 1000
    clock.now += 1.0  # every bucket is full again: nothing left worth keeping
    throttle.take("another")
    assert len(throttle) == 1


def test_memory_is_bounded_even_with_no_idle_client() -> None:
    throttle, _ = buckets(5, 60_000, max_clients=100)
    for client in range(10_000):
        throttle.take(str(client))
    assert len(throttle) == 100


# ---- who the client is ----


def scope(peer: str, *forwarded: str) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"type": "http", "client": (peer, 5555), "headers": headers}


@pytest.mark.parametrize(
    ("forwarded", "trusted", "expected"),
    [
        ((), True, "10.0.0.9"),
        (("203.0.113.7",), False, "10.0.0.9"),  # not trusted: the peer
        (("203.0.113.7",), True, "203.0.113.7"),
        (("198.51.100.1, 203.0.113.7",), True, "203.0.113.7"),  # the entry our proxy added
        (("198.51.100.1", "203.0.113.7"), True, "203.0.113.7"),  # two header lines
        (("2001:DB8::1",), True, "2001:db8::1"),
        (("not-an-address",), True, "10.0.0.9"),
        (("203.0.113.7, ",), True, "10.0.0.9"),
    ],
)
def test_client_address(forwarded: tuple[str, ...], trusted: bool, expected: str) -> None:
    assert client_address(scope("10.0.0.9", *forwarded), trusted) == expected


# ---- through the server ----


def assert_rate_headers(reply: httpx.Response, limit: int, remaining: int, window_s: int) -> None:
    assert reply.headers["ratelimit-policy"] == f"{limit};w={window_s}"
    assert reply.headers["ratelimit-limit"] == str(limit)
    assert reply.headers["ratelimit-remaining"] == str(remaining)
    assert int(reply.headers["ratelimit-reset"]) >= 1


def test_429_with_retry_after_and_ratelimit_headers(start_server: Callable[..., Api]) -> None:
    api = start_server(max_throttle_request=3, max_throttle_time_window=60_000)
    for remaining in (2, 1, 0):
        reply = api.http.get("/status")
        assert reply.status_code == 200
        assert_rate_headers(reply, 3, remaining, 60)
    reply = api.http.get("/status")
    assert reply.status_code == 429
    assert_rate_headers(reply, 3, 0, 60)
    assert 1 <= int(reply.headers["retry-after"]) <= 20
    body = reply.json()
    assert body == {
        "action": "Please wait until the server restore your connection",
        "message": "Too many requests in a given amount of time",
    }
    assert reply.headers["x-content-type-options"] == "nosniff"  # still a full response


def test_throttled_before_credentials_and_body_are_looked_at(
    start_server: Callable[..., Api],
) -> None:
    api = start_server(max_throttle_request=1, max_throttle_time_window=60_000)
    assert api.http.get("/v1/queues").status_code == 403
    reply = api.http.post("/v1/owners/register", json={"name": "too-late"})
    assert reply.status_code == 429
    assert api.http.get("/v1/owners/too-late").status_code == 429


def test_the_documentation_is_not_throttled(start_server: Callable[..., Api]) -> None:
    api = start_server(max_throttle_request=1, max_throttle_time_window=60_000)
    api.http.get("/status")
    assert api.http.get("/status").status_code == 429
    for path in ("/openapi.json", "/swagger", "/swagger/swagger-ui.css"):
        reply = api.http.get(path)
        assert reply.status_code == 200, path
        assert "ratelimit-limit" not in reply.headers


def test_requests_are_allowed_again_as_the_bucket_refills(
    start_server: Callable[..., Api],
) -> None:
    api = start_server(max_throttle_request=2, max_throttle_time_window=2_000)
    # a bucket of two, one request back every second: a quick burst of ten meets a 429
    replies = [api.http.get("/status") for _ in range(10)]
    refused = [reply for reply in replies if reply.status_code == 429]
    assert refused, [reply.status_code for reply in replies]
    assert refused[0].headers["retry-after"] == "1"
    wait_until(lambda: api.http.get("/status").status_code == 200, timeout=10, interval=0.1)


def test_off_when_both_settings_are_0(api: Api) -> None:
    for _ in range(50):
        reply = api.http.get("/status")
        assert reply.status_code == 200
        assert "ratelimit-limit" not in reply.headers


def test_x_forwarded_for_names_the_client_only_when_trusted(
    start_server: Callable[..., Api],
) -> None:
    trusting = start_server(
        max_throttle_request=1, max_throttle_time_window=60_000, trust_proxy_headers=True
    )
    for client in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        headers = {"X-Forwarded-For": f"198.51.100.99, {client}"}
        assert trusting.http.get("/status", headers=headers).status_code == 200
        assert trusting.http.get("/status", headers=headers).status_code == 429

    wary = start_server(max_throttle_request=1, max_throttle_time_window=60_000)
    assert wary.http.get("/status", headers={"X-Forwarded-For": "203.0.113.1"}).status_code == 200
    # another forwarded address is the same client: the socket's peer
    reply = wary.http.get("/status", headers={"X-Forwarded-For": "203.0.113.2"})
    assert reply.status_code == 429
