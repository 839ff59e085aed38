"""Far-future times: executeAt 10 years ahead, delays and retry intervals past
2^31 ms stay scheduled with the right times and never fire early, and they do
not hold back the tasks due before them."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.served import Served, ids_at, now_ms
from tests.targets import Reply, Target, wait_until

TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000
PAST_INT32 = 2**31 + 1000  # ~24.9 days: overflows a 32-bit timer
PAST_UINT32 = 2**32 + 5


def due_at(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, due_at FROM task WHERE due_at IS NOT NULL"))


def test_far_future_tasks_stay_scheduled(
    serve: Callable[..., Served], target: Target, tmp_path: Path
) -> None:
    target.script("/fail", Reply(500, b"no"))
    served = serve()
    owner = served.owner("clock-owner")
    asked = now_ms()
    in_ten_years = datetime.now(UTC) + timedelta(days=3650)
    far: list[tuple[dict[str, Any], str, int]] = []
    task = served.task(owner, target.url("/far"), executeAt=in_ten_years.isoformat())
    far.append((task, "at", int(in_ten_years.timestamp() * 1000)))
    task = served.task(owner, target.url("/far"), executeAt=asked + TEN_YEARS_MS)
    far.append((task, "at", asked + TEN_YEARS_MS))
    # the last: just before the largest date there is (JavaScript's, 8.64e15 ms)
    for delay in (PAST_INT32, PAST_UINT32, 8_640_000_000_000_000 - asked - 10_000):
        task = served.task(owner, target.url("/far"), executionDelay=delay)
        far.append((task, "delay", delay))
    retrying = served.task(
        owner, target.url("/fail"), executionDelay=0, retry=1, retryInterval=PAST_INT32
    )
    # registered after the far ones, due in order: they must fire on time, in due order
    near = [
        served.task(owner, target.url("/near"), executionDelay=delay) for delay in (900, 300, 600)
    ]

    fired = target.wait_for(3, "/near", timeout=5)
    assert ids_at(target, "/near") == [near[1]["id"], near[2]["id"], near[0]["id"]]
    for task, arrival in zip((near[1], near[2], near[0]), fired, strict=True):
        assert (
            task["estimateExecutionAt"] - 50 <= arrival.at_ms < task["estimateExecutionAt"] + 1000
        )
    failed = served.wait(owner, retrying["id"], lambda t: t["retryCount"] == 1, 5)
    assert failed["state"] == "RUNNING"
    assert failed["estimateNextRetryAt"] - now_ms() > PAST_INT32 - 10_000

    def check_still_scheduled(server: Served) -> None:
        rows = due_at(tmp_path / "data" / "tasks.db")
        for task, kind, expected in far:
            current = server.get(owner, task["id"])
            assert current["state"] == "RUNNING", current
            assert current["estimateExecutionAt"] == task["estimateExecutionAt"]
            if kind == "at":
                assert abs(current["estimateExecutionAt"] - expected) <= 1, (current, expected)
            else:  # a delay from the registration time
                assert 0 <= current["estimateExecutionAt"] - task["createdAt"] - expected <= 1
            assert rows[task["id"]] == current["estimateExecutionAt"]  # no overflow on disk
        again = server.get(owner, retrying["id"])
        assert (again["state"], again["retryCount"]) == ("RUNNING", 1)
        assert again["estimateNextRetryAt"] == failed["estimateNextRetryAt"]
        assert target.arrivals_at("/far") == []
        assert len(target.arrivals_at("/fail")) == 1

    # a few scheduler rounds later (the near ones fired, its 1 s idle poll passed), and after
    # a restart
    wait_until(lambda: now_ms() > asked + 2500, timeout=5)
    check_still_scheduled(served)
    assert served.stop(signal.SIGTERM) == 0
    second = serve()
    late = second.task(owner, target.url("/near"), executionDelay=0)
    target.wait_for(4, "/near", timeout=5)
    assert ids_at(target, "/near")[-1] == late["id"]
    check_still_scheduled(second)
    assert second.stop(signal.SIGTERM) == 0
