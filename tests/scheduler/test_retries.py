"""When attempts happen and how their outcomes are recorded: retries, timeouts, failures.

Timing assertions are strict below (never early) and generous above (a loaded
2-core machine may be late), measured at the target's clock, which is the
server's clock too.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tests.conftest import BOTH_STORES, Api, Owner
from tests.targets import Arrival, Reply, Target, closed_port, wait_until

pytestmark = BOTH_STORES

FINAL = ("SUCCESS", "ERROR")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def register(
    api: Api, owner: Owner, url: str, config: dict[str, Any], method: str = "GET"
) -> dict[str, Any]:
    return api.task(owner, {"httpRequest": {"url": url, "method": method}, "config": config})


def finish(api: Api, owner: Owner, task: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    return api.wait_state(owner, task["id"], *FINAL, timeout=timeout)


def gaps(arrivals: list[Arrival]) -> list[float]:
    return [b.at_ms - a.at_ms for a, b in itertools.pairwise(arrivals)]


def response_bytes(task: dict[str, Any]) -> bytes | None:
    return None if task["response"] is None else base64.b64decode(task["response"])


# ---- retry timing ----


def test_linear_retry_interval(api: Api, owner: Owner, target: Target) -> None:
    interval, slack = 300, 500
    target.script("/fail", always=Reply(500, b"no"))
    task = register(
        api,
        owner,
        target.url("/fail"),
        {"retry": 3, "retryInterval": interval, "retryExponential": False},
    )
    done = finish(api, owner, task)
    arrivals = target.arrivals_at("/fail")
    assert len(arrivals) == 4
    measured = gaps(arrivals)
    for gap in measured:
        assert interval <= gap < interval + slack, measured
    assert done["state"] == "ERROR"
    assert done["retryCount"] == 3
    assert done["attempts"] == 4


def test_exponential_retry_is_interval_times_n(api: Api, owner: Owner, target: Target) -> None:
    """retryExponential defaults to true with retry >= 2: gaps 1x, 2x, 3x (not 2^n)."""
    interval, slack = 500, 480  # slack < interval: 4x instead of 3x would show
    target.script("/fail", always=Reply(502, b"no"))
    task = register(api, owner, target.url("/fail"), {"retry": 3, "retryInterval": interval})
    done = finish(api, owner, task)
    measured = gaps(target.arrivals_at("/fail"))
    assert len(measured) == 3
    for n, gap in enumerate(measured, start=1):
        assert n * interval <= gap < n * interval + slack, measured
    assert done["state"] == "ERROR"
    assert done["retryCount"] == 3
    assert done["statusCode"] == 502


def test_retry_at_is_one_retry_at_that_time(api: Api, owner: Owner, target: Target) -> None:
    target.script("/fail", always=Reply(500, b"no"))
    retry_at = now_ms() + 1500
    # a date string with an offset, as a client would send it
    as_text = datetime.fromtimestamp(retry_at / 1000, tz=timezone(timedelta(hours=7)))
    task = register(
        api,
        owner,
        target.url("/fail"),
        {"retry": 5, "retryInterval": 10, "retryAt": as_text.isoformat(timespec="milliseconds")},
    )
    assert task["retryLimit"] == 1  # retryAt forces a single retry

    def waiting() -> dict[str, Any] | None:
        current = api.get(owner, task["id"])
        return current if current["retryCount"] == 1 else None

    between = wait_until(waiting, timeout=10)
    assert between["state"] == "RUNNING"
    assert between["estimateNextRetryAt"] == retry_at
    assert between["statusCode"] == 500
    done = finish(api, owner, task)
    first, second = target.arrivals_at("/fail")
    assert first.at_ms < retry_at - 500  # the first attempt did not wait for retryAt
    assert second.at_ms >= retry_at, (second.at_ms, retry_at)
    assert second.at_ms < retry_at + 1000, second.at_ms - retry_at
    assert done["state"] == "ERROR"
    assert done["retryCount"] == 1
    assert done["attempts"] == 2


# ---- how a task ends ----


@pytest.mark.parametrize(
    ("replies", "final_status", "retries"),
    [([Reply(503, b"stop")], 503, 0), ([Reply(500), Reply(418, b"stop")], 418, 1)],
    ids=["first-attempt", "after-a-retry"],
)
def test_ignore_status_code_ends_at_once(
    api: Api,
    owner: Owner,
    target: Target,
    replies: list[Reply],
    final_status: int,
    retries: int,
) -> None:
    target.script("/x", *replies, always=Reply(200))
    task = register(
        api,
        owner,
        target.url("/x"),
        {"retry": 3, "retryInterval": 50, "ignoreStatusCode": [418, 503]},
    )
    done = finish(api, owner, task)
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == final_status
    assert done["retryCount"] == retries
    assert done["attempts"] == retries + 1
    assert response_bytes(done) == b"stop"
    assert len(target.arrivals_at("/x")) == retries + 1


def test_exhausted_retries_end_in_error_with_the_last_failure(
    api: Api, owner: Owner, target: Target
) -> None:
    target.script("/x", Reply(500, b"one"), Reply(503, b"two"), Reply(404, b"three"))
    task = register(
        api, owner, target.url("/x"), {"retry": 2, "retryInterval": 50, "retryExponential": False}
    )
    done = finish(api, owner, task)
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 404
    assert response_bytes(done) == b"three"
    assert done["retryCount"] == 2
    assert done["retryLimit"] == 2
    assert done["attempts"] == 3
    assert done["estimateNextRetryAt"] == 0
    assert done["error"] == "HTTP 404"  # the last attempt's, in words
    assert len(target.arrivals_at("/x")) == 3


def test_success_after_failures(api: Api, owner: Owner, target: Target) -> None:
    target.script("/x", Reply(500, b"a"), Reply(502, b"b"), Reply(200, b"finally"))
    before = now_ms()
    task = register(api, owner, target.url("/x"), {"retry": 5, "retryInterval": 50})
    done = finish(api, owner, task)
    after = now_ms()
    assert done["state"] == "SUCCESS", done
    assert done["statusCode"] == 200
    assert response_bytes(done) == b"finally"
    assert done["retryCount"] == 2
    assert done["retryLimit"] == 5
    assert done["attempts"] == 3
    assert done["estimateNextRetryAt"] == 0
    assert done["error"] is None
    last = target.arrivals_at("/x")[-1]
    assert last.at_ms - 1 <= done["estimateEndAt"] <= after
    assert done["estimateEndAt"] >= before


def test_estimates_and_attempts_while_running_and_after(
    api: Api, owner: Owner, target: Target
) -> None:
    target.script("/x", Reply(200, b"done", delay=0.3))
    task = register(api, owner, target.url("/x"), {"executionDelay": 100})
    assert task["state"] == "RUNNING"
    assert task["estimateExecutionAt"] == task["createdAt"] + 100
    assert task["estimateEndAt"] == 0
    assert task["attempts"] == 0
    target.wait_for(1, "/x")
    in_flight = api.get(owner, task["id"])
    assert in_flight["state"] == "RUNNING"
    assert in_flight["attempts"] == 1
    assert in_flight["estimateEndAt"] == 0
    done = finish(api, owner, task)
    (arrival,) = target.arrivals_at("/x")
    assert done["state"] == "SUCCESS"
    assert done["attempts"] == 1
    assert done["retryCount"] == 0
    # ended after the reply, which came 300 ms after the arrival
    assert done["estimateEndAt"] >= arrival.at_ms + 300 - 1
    assert done["estimateExecutionAt"] == task["estimateExecutionAt"]


# ---- timeouts ----


def test_timeout_is_408_and_retried(api: Api, owner: Owner, target: Target) -> None:
    target.script("/slow", always=Reply(200, b"too late", delay=3.0))
    task = register(
        api, owner, target.url("/slow"), {"timeout": 1000, "retry": 1, "retryInterval": 100}
    )

    def retrying() -> dict[str, Any] | None:
        current = api.get(owner, task["id"])
        return current if current["retryCount"] == 1 else None

    between = wait_until(retrying, timeout=10)
    assert between["state"] == "RUNNING"
    assert between["statusCode"] == 408
    assert between["error"]
    done = finish(api, owner, task)
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 408
    assert "timed out" in done["error"].lower(), done["error"]
    assert done["attempts"] == 2
    first, second = target.arrivals_at("/slow")
    # the first attempt started at its due time at the earliest and ran for the whole
    # timeout; the retry waited its interval after that
    assert second.at_ms >= task["estimateExecutionAt"] + 1000 + 100 - 1
    # libcurl gave up at the timeout, well before the 3 s reply
    assert second.at_ms - first.at_ms < 1000 + 100 + 1200, second.at_ms - first.at_ms


def test_timeout_at_bounds_only_the_first_attempt(api: Api, owner: Owner, target: Target) -> None:
    target.script("/slow", Reply(200, b"late", delay=3.0), Reply(200, b"in time", delay=0.4))
    timeout_at = now_ms() + 1500
    task = register(
        api,
        owner,
        target.url("/slow"),
        {"timeout": 5000, "timeoutAt": timeout_at, "retry": 1, "retryInterval": 100},
    )
    done = finish(api, owner, task)
    # the first attempt stopped at timeoutAt; the retry, started after timeoutAt, had
    # the whole `timeout` and got its answer after 400 ms
    assert done["state"] == "SUCCESS", done
    assert done["retryCount"] == 1
    assert response_bytes(done) == b"in time"
    first, second = target.arrivals_at("/slow")
    assert second.at_ms >= timeout_at + 100 - 1, (second.at_ms, timeout_at)
    assert second.at_ms - first.at_ms < 2800, second.at_ms - first.at_ms


# ---- network failures ----


@pytest.mark.parametrize(
    ("make_url", "words"),
    [
        (lambda: f"http://127.0.0.1:{closed_port()}/x", ["connect"]),
        (lambda: "http://no-such-host.invalid/x", ["resolve", "no-such-host.invalid"]),
    ],
    ids=["connection-refused", "dns"],
)
def test_network_failures_are_retried_and_never_success(
    api: Api, owner: Owner, make_url: Callable[[], str], words: list[str]
) -> None:
    task = register(api, owner, make_url(), {"retry": 2, "retryInterval": 50})
    done = finish(api, owner, task)
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0
    assert done["response"] is None
    assert done["retryCount"] == 2
    assert done["attempts"] == 3
    for word in words:
        assert word in done["error"].lower(), done["error"]
    assert "curl error" in done["error"]


# ---- the stored response ----


@pytest.mark.parametrize(
    ("status", "size", "state"),
    [(200, 300, "SUCCESS"), (200, 100, "SUCCESS"), (200, 99, "SUCCESS"), (500, 300, "ERROR")],
)
def test_response_is_truncated_past_the_limit(
    start_server: Callable[..., Api], target: Target, status: int, size: int, state: str
) -> None:
    api = start_server(max_size_data_response=100)
    owner = api.owner()
    body = bytes((i * 7) % 256 for i in range(size))
    target.script("/big", always=Reply(status, body))
    done = finish(api, owner, register(api, owner, target.url("/big"), {}))
    assert done["state"] == state, done
    assert done["statusCode"] == status
    assert done["error"] == (None if state == "SUCCESS" else f"HTTP {status}")
    assert response_bytes(done) == body[:100]


def test_binary_body_round_trips(api: Api, owner: Owner, target: Target) -> None:
    body = bytes(range(256)) * 8 + b"\x00\xff\xfe\r\n\x80"
    target.script("/bin", Reply(200, body, {"Content-Type": "application/octet-stream"}))
    done = finish(api, owner, register(api, owner, target.url("/bin"), {}))
    assert done["state"] == "SUCCESS", done
    assert response_bytes(done) == body


def test_empty_body_is_an_empty_response(api: Api, owner: Owner, target: Target) -> None:
    target.script("/empty", Reply(204, b""))
    done = finish(api, owner, register(api, owner, target.url("/empty"), {}))
    assert done["state"] == "SUCCESS", done
    assert done["statusCode"] == 204
    assert done["response"] == ""


@pytest.mark.parametrize(("status", "state"), [(200, "SUCCESS"), (500, "ERROR")])
def test_trace_response_data_false_keeps_no_response(
    api: Api, owner: Owner, target: Target, status: int, state: str
) -> None:
    target.script("/x", always=Reply(status, b"secret body"))
    done = finish(api, owner, register(api, owner, target.url("/x"), {"traceResponseData": False}))
    assert done["state"] == state, done
    assert done["statusCode"] == status
    assert done["response"] is None


# ---- when the first attempt happens ----


def test_short_execution_delay_fires_on_time(api: Api, owner: Owner, target: Target) -> None:
    delays = (50, 120, 200)
    tasks = [
        register(api, owner, target.url(f"/d{delay}"), {"executionDelay": delay})
        for delay in delays
    ]
    lateness = {}
    for delay, task in zip(delays, tasks, strict=True):
        (arrival,) = target.wait_for(1, f"/d{delay}")
        due = task["createdAt"] + delay
        assert task["estimateExecutionAt"] == due
        lateness[delay] = round(arrival.at_ms - due, 1)
    message = f"lateness after the due time, ms by delay: {lateness}"
    assert all(late >= 0 for late in lateness.values()), message
    assert all(late < 1000 for late in lateness.values()), message
    for task in tasks:
        assert finish(api, owner, task)["state"] == "SUCCESS"


def test_execute_runs_a_far_future_task_now(api: Api, owner: Owner, target: Target) -> None:
    execute_at = datetime.now(UTC) + timedelta(hours=1)
    task = register(api, owner, target.url("/later"), {"executeAt": execute_at.isoformat()})
    assert task["estimateExecutionAt"] >= now_ms() + 3_500_000
    assert target.arrivals_at("/later") == []
    asked = now_ms()
    reply = api.http.post(f"/v1/queues/{task['id']}/execute", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"status": "Done"}
    (arrival,) = target.wait_for(1, "/later", timeout=5)
    assert arrival.at_ms - asked < 2000, arrival.at_ms - asked
    done = finish(api, owner, task)
    assert done["state"] == "SUCCESS"
    assert done["attempts"] == 1
    assert asked <= done["estimateExecutionAt"] <= arrival.at_ms + 1
    assert len(target.arrivals_at("/later")) == 1
