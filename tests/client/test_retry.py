"""429 and 503 are tried again after their Retry-After, a bounded number of times: against
the server's own throttle, and against a target scripted to answer as a server would."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from tasks_server.client import DEFAULT_RETRY_AFTER, TaskCounts, TasksError, retry_after
from tests.client.conftest import Connect, owner_name
from tests.conftest import Api
from tests.targets import Reply, Target

STATS = "/v1/queues/stats"
COUNTS = b'{"RUNNING":1,"PAUSED":0,"SUCCESS":0,"ERROR":0,"REVOKED":0}'
UNAVAILABLE = Reply(
    503,
    b'{"action":"Retry later","message":"The database cannot take this change now"}',
    {"Retry-After": "0", "Content-Type": "application/json"},
)


def test_a_throttled_request_is_sent_again_after_retry_after(
    connect: Connect, start_server: Callable[..., Api]
) -> None:
    # two requests, then one more a second: Retry-After says 1
    server = start_server(max_throttle_request=2, max_throttle_time_window=2_000)
    impatient = connect(base_url=server.base_url, retries=0)
    owner = impatient.register_owner(owner_name())
    impatient.stats()
    with pytest.raises(TasksError) as throttled:
        impatient.stats()
    assert throttled.value.status == 429
    assert throttled.value.message == "Too many requests in a given amount of time"

    patient = connect(owner.id, owner.key, base_url=server.base_url)
    started = time.monotonic()
    assert patient.stats().RUNNING == 0  # without a retry this is the 429 above
    assert time.monotonic() - started >= 0.9


def test_503_is_sent_again_until_it_is_answered(connect: Connect, target: Target) -> None:
    target.script(STATS, UNAVAILABLE, UNAVAILABLE, Reply(200, COUNTS))
    client = connect("01JH2AAAAAAAAAAAAAAAAAAAAA", "k" * 64, base_url=target.url(""))
    assert client.stats() == TaskCounts(RUNNING=1, PAUSED=0, SUCCESS=0, ERROR=0, REVOKED=0)
    arrivals = target.arrivals_at(STATS)
    assert len(arrivals) == 3
    assert {a.header("X-Tasks-Owner-Id") for a in arrivals} == {"01JH2AAAAAAAAAAAAAAAAAAAAA"}


def test_a_post_answered_503_is_not_sent_again(connect: Connect, target: Target) -> None:
    # the 503 may come after the task was registered: sent again, it could be twice
    target.script("/v1/queues/register", always=UNAVAILABLE)
    client = connect("01JH2AAAAAAAAAAAAAAAAAAAAA", "k" * 64, base_url=target.url(""))
    with pytest.raises(TasksError) as unavailable:
        client.register({"url": "http://127.0.0.1:9/x", "method": "GET"})
    assert unavailable.value.status == 503
    assert len(target.arrivals_at("/v1/queues/register")) == 1


def test_retries_are_bounded(connect: Connect, target: Target) -> None:
    target.script(STATS, always=UNAVAILABLE)
    with pytest.raises(TasksError) as unavailable:
        connect(base_url=target.url(""), retries=2).stats()
    assert unavailable.value.status == 503
    assert unavailable.value.message == "The database cannot take this change now"
    assert len(target.arrivals_at(STATS)) == 3  # the first and two more


def test_a_long_retry_after_is_cut_to_max_retry_wait(connect: Connect, target: Target) -> None:
    long_wait = Reply(429, b"{}", {"Retry-After": "3600"})
    target.script(STATS, long_wait, Reply(200, COUNTS))
    started = time.monotonic()
    connect(base_url=target.url(""), max_retry_wait=0.05).stats()
    assert time.monotonic() - started < 5


def test_an_error_that_is_not_the_servers_shape_is_still_a_tasks_error(
    connect: Connect, target: Target
) -> None:
    target.script(STATS, Reply(502, b"Bad Gateway from the proxy"))
    with pytest.raises(TasksError) as failed:
        connect(base_url=target.url("")).stats()
    assert (failed.value.status, failed.value.message) == (502, "Bad Gateway from the proxy")
    assert failed.value.fields == {}


def answer(retry_after_header: str | None) -> httpx.Response:
    headers = {"Retry-After": retry_after_header} if retry_after_header is not None else {}
    return httpx.Response(429, headers=headers)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        ("0", 0.0),
        ("120", 60.0),  # capped
        (None, DEFAULT_RETRY_AFTER),
        ("soon", DEFAULT_RETRY_AFTER),
        (format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True), 0.0),
    ],
)
def test_retry_after_reads_seconds_and_dates(header: str | None, expected: float) -> None:
    assert retry_after(answer(header), cap=60.0) == expected


def test_retry_after_an_http_date_to_come() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    assert 25 <= retry_after(answer(format_datetime(when, usegmt=True)), cap=60.0) <= 30
