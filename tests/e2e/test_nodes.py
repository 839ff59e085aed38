"""Three `tasks-server serve` processes on one PostgreSQL database, as three nodes run:
each task delivered once, a node killed mid-burst costs nothing but its own in-flight
requests, a pause on one node aborts the request another node has in flight, and the
owner limit holds across nodes."""

from __future__ import annotations

import collections
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Owner
from tests.pg import fresh_schema
from tests.served import Served, free_port
from tests.targets import HoldingTarget, Reply, Target, wait_until

Nodes = Callable[..., list[Served]]


@pytest.fixture
def database_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


@pytest.fixture
def nodes(tmp_path: Path, database_url: str) -> Iterator[Nodes]:
    """Start `count` nodes on the database (each on its own port and data directory)."""
    started: list[Served] = []

    def start(count: int = 3, **env: str) -> list[Served]:
        new = []
        for _ in range(count):
            n = len(started)
            node = Served(
                tmp_path / f"node-{n}",
                free_port(),
                "server.log",
                {
                    "DATABASE_URL": database_url,
                    "BACKUP_ENABLED": "0",
                    "LOG": "0",
                    "MAX_TASKS_IN_QUEUE": "100000",
                    **env,
                },
            )
            started.append(node)
            new.append(node)
        return new

    for path in (tmp_path / f"node-{n}" for n in range(6)):
        path.mkdir()
    yield start
    for node in started:
        node.kill()


def register_all(nodes: list[Served], owner: Owner, bodies: list[dict[str, Any]]) -> list[str]:
    """Register `bodies` spread over the nodes, 24 at a time; the task ids."""

    def register(n: int) -> str:
        reply = nodes[n % len(nodes)].http.post(
            "/v1/queues/register", json=bodies[n], headers=owner.headers
        )
        assert reply.status_code == 201, reply.text
        task_id: str = reply.json()["id"]
        return task_id

    with ThreadPoolExecutor(24) as pool:
        return list(pool.map(register, range(len(bodies))))


def get(nodes: list[Served], owner: Owner, path: str) -> Any:
    return nodes[0].http.get(path, headers=owner.headers).json()


def test_three_nodes_deliver_each_task_once(nodes: Nodes, target: Target) -> None:
    three = nodes(3)
    owner = three[0].owner("three-nodes")
    # each due 3 s after its registration: thousands come due together while the three
    # nodes claim side by side (an absolute time for all would depend on how fast the
    # registrations go on a loaded machine)
    bodies = [
        {
            "httpRequest": {"url": target.url("/once"), "method": "GET"},
            "config": {"executionDelay": 3000},
        }
        for _ in range(5000)
    ]
    ids = register_all(three, owner, bodies)
    arrivals = target.wait_for(5000, "/once", timeout=90)
    time.sleep(0.5)  # a second delivery would arrive about now
    counts = collections.Counter(a.header("X-Tasks-Queue-Id") for a in target.arrivals_at("/once"))
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, [i for i, n in counts.items() if n > 1][:10]
    assert len(arrivals) == 5000


def test_a_node_killed_mid_burst_costs_only_its_own_requests_in_flight(
    nodes: Nodes, target: Target
) -> None:
    target.script("/burst", always=Reply(200, b"ok", delay=0.3))
    three = nodes(3, INSTANCE_STALE_MS="3000")
    owner = three[0].owner("kill-one-node")
    bodies = [
        {
            "httpRequest": {"url": target.url("/burst"), "method": "GET"},
            "config": {"executionDelay": 2000, "retry": 2, "retryInterval": 100},
        }
        for _ in range(1500)
    ]
    ids = register_all(three, owner, bodies)
    wait_until(lambda: len(target.arrivals_at("/burst")) >= 200, timeout=30, interval=0.01)
    killing = time.time() * 1000
    three[0].kill()
    killed = time.time() * 1000
    survivors = three[1:]

    def finished() -> bool:
        listed = (
            survivors[0]
            .http.get("/v1/queues?state=SUCCESS&limit=1000&offset=0", headers=owner.headers)
            .json()
        )
        more = (
            survivors[0]
            .http.get("/v1/queues?state=SUCCESS&limit=1000&offset=1000", headers=owner.headers)
            .json()
        )
        return len(listed) + len(more) == len(ids)

    wait_until(finished, timeout=90, interval=0.5)
    arrivals = target.arrivals_at("/burst")
    seen: dict[str, list[float]] = collections.defaultdict(list)
    for arrival in arrivals:
        seen[arrival.header("X-Tasks-Queue-Id") or ""].append(arrival.at_ms)
    assert set(seen) == set(ids)
    repeats = {task_id: times for task_id, times in seen.items() if len(times) > 1}
    # a repeat is a request the killed node had in flight: sent before the kill, again after
    # (the target notes a request when one of its threads reads it: up to ~1 s later when
    # its threads are all busy answering slowly)
    for times in repeats.values():
        assert len(times) == 2 and times[0] <= killed + 1000 and times[1] >= killing, times
    assert len(repeats) <= 1000  # at most the killed node's MAX_IN_FLIGHT
    print(f"{len(repeats)} of {len(ids)} tasks were delivered again after the kill")


def test_a_pause_on_one_node_aborts_the_request_in_flight_on_another(nodes: Nodes) -> None:
    holding = HoldingTarget()
    try:
        (sender,) = nodes(1)
        owner = sender.owner("cross-node-pause")
        ids = [sender.task(owner, holding.url(), executionDelay=1)["id"] for _ in range(6)]
        wait_until(lambda: len(holding.received) == 6, timeout=20)
        others = nodes(2)  # these never claimed the tasks: the sender holds them all
        latencies = []
        for n, task_id in enumerate(ids):
            node = others[n % 2]
            paused = node.http.patch(f"/v1/queues/{task_id}/pause", headers=owner.headers)
            answered = time.monotonic()
            assert paused.status_code == 200, paused.text
            wait_until(lambda task_id=task_id: task_id in holding.hung_up, timeout=5)
            latencies.append(max(0.0, holding.hung_up[task_id] - answered))
        print(f"aborted on the other node after {max(latencies) * 1000:.0f} ms at most")
        assert max(latencies) < 1.0
    finally:
        holding.close()


def test_the_owner_limit_holds_across_nodes(nodes: Nodes) -> None:
    three = nodes(3, MAX_TASKS_IN_QUEUE="10")
    owner = three[0].owner("limited-owner")
    body = {"httpRequest": {"url": "http://127.0.0.1:9/never", "method": "GET"}}
    body["config"] = {"executionDelay": 3_600_000}

    def register(n: int) -> int:
        node = three[n % 3]
        return httpx.post(
            f"{str(node.http.base_url).rstrip('/')}/v1/queues/register",
            json=body,
            headers=owner.headers,
            timeout=30,
        ).status_code

    with ThreadPoolExecutor(64) as pool:
        codes = collections.Counter(pool.map(register, range(64)))
    assert codes == {201: 10, 422: 54}
    view = three[1].http.get(f"/v1/owners/{owner.name}", headers=owner.headers).json()
    assert view["tasksInQueue"] == 10


def test_sigterm_on_every_node_stops_them_cleanly(nodes: Nodes) -> None:
    for node in nodes(3):
        assert node.stop(signal.SIGTERM) == 0
