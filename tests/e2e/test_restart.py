"""A real `tasks-server serve` process: killed with SIGKILL and restarted, every
task completes; SIGTERM and SIGINT stop it cleanly."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from tests.conftest import BOTH_STORES
from tests.served import Served, ids_at, now_ms
from tests.targets import Reply, Target, wait_until

pytestmark = BOTH_STORES


def test_sigkill_then_restart_completes_every_task(
    serve: Callable[[], Served], target: Target
) -> None:
    # in flight at the kill: the first two requests hang; the re-sent ones are answered
    target.script("/slow", Reply(200, b"late", delay=3.0), Reply(200, b"late", delay=3.0))
    # between retries at the kill: each fails once, then succeeds
    target.script("/flaky", Reply(500, b"no"), Reply(500, b"no"), always=Reply(200, b"yes"))
    first = serve()
    owner = first.owner("restart-owner")

    in_flight = [first.task(owner, target.url("/slow"), executionDelay=1) for _ in range(2)]
    target.wait_for(2, "/slow")
    retrying = [
        first.task(owner, target.url("/flaky"), executionDelay=1, retry=3, retryInterval=1000)
        for _ in range(2)
    ]
    retrying = [first.wait(owner, t["id"], lambda t: t["retryCount"] == 1, 5) for t in retrying]
    pending = [first.task(owner, target.url("/cb"), executionDelay=2000) for _ in range(3)]
    paused = first.task(owner, target.url("/paused"), executionDelay=2000)
    reply = first.http.patch(f"/v1/queues/{paused['id']}/pause", headers=owner.headers)
    assert reply.status_code == 200
    first.kill()  # SIGKILL
    assert first.proc.returncode == -signal.SIGKILL
    assert target.arrivals_at("/cb") == [], "pending tasks fired before the kill"
    assert len(target.arrivals_at("/flaky")) == 2

    # let every pending task and every retry fall due while the server is down
    due = [t["estimateExecutionAt"] for t in pending]
    due += [t["estimateNextRetryAt"] for t in retrying]
    due.append(paused["estimateExecutionAt"])
    wait_until(lambda: now_ms() > max(due) + 200, interval=0.02)

    second = serve()
    resent = target.wait_for(4, "/slow", timeout=10)[2:]
    assert sorted(ids_at(target, "/slow")[2:]) == sorted(t["id"] for t in in_flight)
    for arrival in resent:
        assert arrival.at_ms - second.spawned_at < 5000  # leases of the dead process not waited
    fired = target.wait_for(3, "/cb", timeout=10)
    assert sorted(ids_at(target, "/cb")) == sorted(t["id"] for t in pending)
    for arrival in fired:
        assert arrival.at_ms - second.ready_at < 1500  # at once, not shifted by the downtime
    retried = target.wait_for(4, "/flaky", timeout=10)[2:]
    for arrival in retried:
        assert arrival.at_ms - second.ready_at < 1500
        assert arrival.header("X-Tasks-Retry-Count") == "1"

    everything = in_flight + retrying + pending
    for task in everything:
        done = second.wait(owner, task["id"], lambda t: t["state"] != "RUNNING", 10)
        assert done["state"] == "SUCCESS", done
        assert done["statusCode"] == 200
    for task in retrying:
        assert second.get(owner, task["id"])["retryCount"] == 1
    listed = second.http.get("/v1/queues?limit=100", headers=owner.headers).json()
    assert sorted(t["id"] for t in listed) == sorted(t["id"] for t in [*everything, paused])
    # a PAUSED task stays paused (its due time passed while down, it does not fire)
    assert second.get(owner, paused["id"])["state"] == "PAUSED"
    assert target.arrivals_at("/paused") == []
    view = second.http.get(f"/v1/owners/{owner.name}", headers=owner.headers).json()
    assert view["tasksInQueue"] == 1
    # nothing is sent again after completion
    counts = {path: len(target.arrivals_at(path)) for path in ("/slow", "/flaky", "/cb")}
    assert counts == {"/slow": 4, "/flaky": 4, "/cb": 3}
    print(
        "re-sent after restart (ms from spawn):",
        [round(a.at_ms - second.spawned_at) for a in resent],
        "overdue fired (ms from ready):",
        [round(a.at_ms - second.ready_at) for a in fired],
    )
    assert second.stop(signal.SIGTERM) == 0


def test_sigterm_and_sigint_stop_cleanly_and_keep_tasks(
    serve: Callable[[], Served], target: Target
) -> None:
    target.script("/slow", Reply(200, b"late", delay=3.0))
    first = serve()
    owner = first.owner("signal-owner")
    later = first.task(owner, target.url("/later"), executionDelay=3_600_000)
    hanging = first.task(owner, target.url("/slow"), executionDelay=1)
    target.wait_for(1, "/slow")
    asked = time.monotonic()
    assert first.stop(signal.SIGTERM) == 0
    assert time.monotonic() - asked < 8  # the in-flight request was given up after the grace
    assert "Tasks Server stopped" in first.log()

    second = serve()
    # the request cut off by the stop is sent again at once
    (_, again) = target.wait_for(2, "/slow", timeout=10)
    assert again.header("X-Tasks-Queue-Id") == hanging["id"]
    assert again.at_ms - second.spawned_at < 5000
    done = second.wait(owner, hanging["id"], lambda t: t["state"] != "RUNNING", 10)
    assert done["state"] == "SUCCESS"
    kept = second.get(owner, later["id"])
    assert kept["state"] == "RUNNING"
    assert kept["estimateExecutionAt"] == later["estimateExecutionAt"]
    assert second.stop(signal.SIGINT) == 0
    assert "Tasks Server stopped" in second.log()
    assert target.arrivals_at("/later") == []
