"""SIGKILL the server at random moments while tasks are pending, in flight and
between retries; every task still ends SUCCESS with the right retry count."""

from __future__ import annotations

import itertools
import random
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.served import Served, now_ms
from tests.targets import Arrival, Reply, Target, wait_until

TASKS_PER_ROUND = 200
KILLS = 10
FAILURES = 2  # a third of the tasks fail this many times, then succeed


def flaky(arrival: Arrival) -> Reply:
    """Fail until the server says this is retry FAILURES, then succeed (no header: first try)."""
    retry = int(arrival.header("X-Tasks-Retry-Count") or 0)
    return Reply(500, b"not yet") if retry < FAILURES else Reply(200, b"done")


def slow(arrival: Arrival) -> Reply:
    # a request in flight at a kill is cut off and sent again after the restart
    return Reply(200, b"done", delay=random.uniform(0, 0.4))


def register_round(
    served: Served, owner: Any, target: Target, rng: random.Random
) -> list[dict[str, Any]]:
    def one(index: int) -> dict[str, Any]:
        path = "/flaky" if index % 3 == 0 else "/slow"
        body = {
            "httpRequest": {"url": target.url(path), "method": "POST"},
            "config": {
                "executionDelay": rng.randint(0, 3000),
                "retry": 4,
                "retryInterval": 300,
            },
        }
        with httpx.Client(base_url=str(served.http.base_url), timeout=10) as client:
            reply = client.post("/v1/queues/register", json=body, headers=owner.headers)
        assert reply.status_code == 201, reply.text
        task: dict[str, Any] = reply.json()
        task["path"] = path
        return task

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(TASKS_PER_ROUND)))


def list_all(served: Served, owner: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        page = served.http.get(
            f"/v1/queues?limit=1000&offset={len(found)}", headers=owner.headers
        ).json()
        found += page
        if len(page) < 1000:
            return found


def test_crash_loop_loses_nothing(serve: Callable[..., Served], target: Target) -> None:
    target._server.socket.listen(1024)  # bursts of connections after each restart
    target.respond("/flaky", flaky)
    target.respond("/slow", slow)
    rng = random.Random(5)
    started = time.monotonic()
    served = serve(MAX_IN_FLIGHT="200")
    owner = served.owner("crash-owner")
    tasks: list[dict[str, Any]] = []
    kills: list[float] = []
    for _ in range(KILLS):
        tasks += register_round(served, owner, target, rng)
        # kill at a random moment: tasks pending, in flight and between retries
        deadline = time.monotonic() + rng.uniform(0.2, 2.5)
        while time.monotonic() < deadline:
            time.sleep(0.02)
        kills.append(now_ms())
        served.kill()
        assert served.proc.returncode == -signal.SIGKILL
        served = serve(MAX_IN_FLIGHT="200")
    killed_in = time.monotonic() - started

    by_id = {task["id"]: task for task in tasks}

    def all_done() -> bool:
        listed = served.http.get("/v1/queues?state=RUNNING&limit=1", headers=owner.headers).json()
        return bool(listed == [])

    wait_until(all_done, timeout=60, interval=0.2)
    finals = list_all(served, owner)
    assert sorted(t["id"] for t in finals) == sorted(by_id)
    wrong = [
        (t["id"], t["state"], t["retryCount"])
        for t in finals
        if t["state"] != "SUCCESS"
        or t["retryCount"] != (FAILURES if by_id[t["id"]]["path"] == "/flaky" else 0)
    ]
    assert wrong == [], f"{len(wrong)} tasks wrong, e.g. {wrong[:5]}"

    seen: dict[tuple[str, str], list[float]] = defaultdict(list)
    for arrival in target.arrivals_at("/flaky") + target.arrivals_at("/slow"):
        key = (
            arrival.header("X-Tasks-Queue-Id") or "",
            arrival.header("X-Tasks-Retry-Count") or "0",
        )
        seen[key].append(arrival.at_ms)
    missing = [task_id for task_id in by_id if (task_id, "0") not in seen]
    assert missing == [], f"{len(missing)} tasks never reached the target"
    for task_id, task in by_id.items():
        if task["path"] == "/flaky":  # each of its attempts arrived, with its retry count
            assert all((task_id, str(retry)) in seen for retry in range(FAILURES + 1)), task_id
    duplicates = 0
    for key, times in seen.items():
        times.sort()
        for first, again in itertools.pairwise(times):
            duplicates += 1
            # a repeat is allowed only when a kill came between the two deliveries
            assert any(first - 50 <= kill <= again for kill in kills), (key, times, kills)
    total = len(target.arrivals_at("/flaky")) + len(target.arrivals_at("/slow"))
    print(
        f"crash loop: {len(tasks)} tasks, {KILLS} SIGKILLs in {killed_in:.1f} s, "
        f"{total} deliveries, {duplicates} duplicates (after a kill mid-request), "
        f"all done {time.monotonic() - started:.1f} s after the first start"
    )
    assert served.stop(signal.SIGTERM) == 0
