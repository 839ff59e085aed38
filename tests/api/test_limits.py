"""The per-owner limit of RUNNING + PAUSED tasks: 422 at the limit, atomic under
concurrency, and no path that leaks (or double-frees) a slot."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import BOTH_STORES, Api, Owner
from tests.targets import Reply, Target, wait_until

pytestmark = BOTH_STORES

FAR = 3_600_000


def payload(url: str, delay: int = FAR, **config: Any) -> dict[str, Any]:
    return {
        "httpRequest": {"url": url, "method": "GET"},
        "config": {"executionDelay": delay, **config},
    }


def in_queue(api: Api, owner: Owner) -> int:
    reply = api.http.get(f"/v1/owners/{owner.name}", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    count: int = reply.json()["tasksInQueue"]
    return count


def patch(api: Api, owner: Owner, task_id: str, action: str) -> None:
    reply = api.http.patch(f"/v1/queues/{task_id}/{action}", headers=owner.headers)
    assert reply.status_code == 200, reply.text


def delete(api: Api, owner: Owner, task_id: str) -> None:
    reply = api.http.delete(f"/v1/queues/{task_id}", headers=owner.headers)
    assert reply.status_code == 200, reply.text


def assert_limit_reached(reply: httpx.Response) -> None:
    assert reply.status_code == 422, reply.text
    body = reply.json()
    assert isinstance(body["action"], str)
    assert "limit" in body["message"]


@pytest.fixture
def small(start_server: Callable[..., Api]) -> Api:
    return start_server(max_tasks_in_queue=3)


def test_register_at_the_limit_is_422(small: Api, target: Target) -> None:
    owner = small.owner()
    tasks = [small.task(owner, payload(target.url())) for _ in range(3)]
    assert in_queue(small, owner) == 3
    assert_limit_reached(small.register(owner, payload(target.url())))
    assert_limit_reached(small.register(owner, payload(target.url())))
    assert in_queue(small, owner) == 3  # a refusal takes no slot
    view = small.http.get(f"/v1/owners/{owner.name}", headers=owner.headers).json()
    assert view["tasksInQueueLimit"] == 3
    # the limit is per owner
    other = small.owner()
    assert small.register(other, payload(target.url())).status_code == 201
    # a PAUSED task still holds its slot
    patch(small, owner, tasks[0]["id"], "pause")
    assert_limit_reached(small.register(owner, payload(target.url())))
    # a finished one does not
    patch(small, owner, tasks[0]["id"], "revoke")
    assert small.register(owner, payload(target.url())).status_code == 201
    assert_limit_reached(small.register(owner, payload(target.url())))
    # listing shows exactly the queued ones
    listed = small.http.get("/v1/queues?state=running", headers=owner.headers).json()
    assert len(listed) == 3


def test_invalid_registration_takes_no_slot(small: Api, target: Target) -> None:
    owner = small.owner()
    for _ in range(5):
        bad = small.register(owner, {"httpRequest": {"url": "nope", "method": "GET"}})
        assert bad.status_code == 400
    assert in_queue(small, owner) == 0
    for _ in range(3):
        small.task(owner, payload(target.url()))
    assert in_queue(small, owner) == 3


def test_slot_is_freed_by_success_and_error(small: Api, target: Target) -> None:
    owner = small.owner()
    for _ in range(3):
        small.task(owner, payload(target.url()))
    assert_limit_reached(small.register(owner, payload(target.url())))
    # make room: the one that succeeds and the one that fails each give their slot back
    delete(small, owner, small.http.get("/v1/queues", headers=owner.headers).json()[0]["id"])
    ok = small.task(owner, payload(target.url("/cb"), delay=1))
    small.wait_state(owner, ok["id"], "SUCCESS")
    assert in_queue(small, owner) == 2
    failing = small.task(owner, payload(target.url("/cb/error"), delay=1))
    small.wait_state(owner, failing["id"], "ERROR")
    assert in_queue(small, owner) == 2
    assert small.register(owner, payload(target.url())).status_code == 201
    assert_limit_reached(small.register(owner, payload(target.url())))


def test_no_path_leaks_a_slot(start_server: Callable[..., Api], target: Target) -> None:
    api = start_server(max_tasks_in_queue=20)
    owner = api.owner()
    expected = 0

    def check() -> None:
        assert in_queue(api, owner) == expected

    # SUCCESS after a failed first attempt (one retry): freed once
    target.script("/flaky", Reply(500, b"no"), always=Reply(200, b"yes"))
    flaky = api.task(owner, payload(target.url("/flaky"), delay=1, retry=2, retryInterval=50))
    assert api.wait_state(owner, flaky["id"], "SUCCESS", "ERROR")["state"] == "SUCCESS"
    check()
    # ERROR after retries are exhausted
    error = api.task(owner, payload(target.url("/cb/error"), delay=1, retry=1, retryInterval=50))
    assert api.wait_state(owner, error["id"], "SUCCESS", "ERROR")["state"] == "ERROR"
    check()
    # ERROR at once through ignoreStatusCode
    stop = api.task(owner, payload(target.url("/cb/error"), delay=1, ignoreStatusCode=[404]))
    api.wait_state(owner, stop["id"], "ERROR")
    check()
    # revoke RUNNING
    running = api.task(owner, payload(target.url()))
    expected += 1
    check()
    patch(api, owner, running["id"], "revoke")
    expected -= 1
    check()
    # revoke PAUSED (the original leaks here)
    paused = api.task(owner, payload(target.url()))
    patch(api, owner, paused["id"], "pause")
    expected += 1
    check()
    patch(api, owner, paused["id"], "revoke")
    expected -= 1
    check()
    # pause, resume and edit move nothing
    kept = api.task(owner, payload(target.url()))
    expected += 1
    patch(api, owner, kept["id"], "pause")
    check()
    patch(api, owner, kept["id"], "resume")
    check()
    edited = api.http.patch(
        f"/v1/queues/{kept['id']}", json={"config": {"retry": 2}}, headers=owner.headers
    )
    assert edited.status_code == 200, edited.text
    check()
    # delete RUNNING, PAUSED
    delete(api, owner, kept["id"])
    expected -= 1
    check()
    paused = api.task(owner, payload(target.url()))
    patch(api, owner, paused["id"], "pause")
    delete(api, owner, paused["id"])
    check()
    # refused actions on finished tasks do not move the counter
    for action in ("pause", "resume", "revoke"):
        refused = api.http.patch(f"/v1/queues/{flaky['id']}/{action}", headers=owner.headers)
        assert refused.status_code == 409
    check()
    # delete finished ones: nothing to free, nothing freed twice
    for task in (flaky, error, stop, running):
        delete(api, owner, task["id"])
    check()
    assert expected == 0
    # the owner can go: nothing is held
    reply = api.http.delete(f"/v1/owners/{owner.name}", headers=owner.headers)
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("action", ["pause", "revoke", "delete"])
def test_abort_in_flight_frees_exactly_once(
    start_server: Callable[..., Api], target: Target, action: str
) -> None:
    api = start_server(max_tasks_in_queue=5)
    owner = api.owner()
    target.script("/slow", Reply(200, b"late", delay=0.8))
    task = api.task(owner, payload(target.url("/slow"), delay=1))
    (first,) = target.wait_for(1, "/slow")
    if action == "delete":
        delete(api, owner, task["id"])
    else:
        patch(api, owner, task["id"], action)
    held = 1 if action == "pause" else 0
    assert in_queue(api, owner) == held
    # after the target's late answer the count is the same (not freed again)
    wait_until(lambda: time.time() * 1000 > first.at_ms + 1300)
    assert in_queue(api, owner) == held
    other = api.task(owner, payload(target.url("/cb"), delay=1))
    api.wait_state(owner, other["id"], "SUCCESS")
    assert in_queue(api, owner) == held


def test_limit_is_atomic_under_concurrency(
    start_server: Callable[..., Api], target: Target
) -> None:
    api = start_server(max_tasks_in_queue=5)
    owner = api.owner()
    results = _concurrent_registrations(api, owner, target.url(), 40)
    assert results.count(201) == 5
    assert results.count(422) == 35
    assert in_queue(api, owner) == 5


def _concurrent_registrations(api: Api, owner: Owner, url: str, count: int) -> list[int]:
    """Fire `count` registrations at once from `count` threads; their status codes."""
    barrier = threading.Barrier(count)
    body = payload(url)

    def register(_: int) -> int:
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            client.get("/status")  # connect before the barrier
            barrier.wait(timeout=30)
            reply = client.post("/v1/queues/register", json=body, headers=owner.headers)
            return reply.status_code

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(register, range(count)))


@pytest.fixture
def clients(api: Api) -> Iterator[Callable[[], httpx.Client]]:
    """One HTTP client per worker thread."""
    local = threading.local()
    made: list[httpx.Client] = []
    lock = threading.Lock()

    def client() -> httpx.Client:
        found: httpx.Client | None = getattr(local, "client", None)
        if found is None:
            found = httpx.Client(base_url=api.base_url, timeout=30)
            local.client = found
            with lock:
                made.append(found)
        return found

    yield client
    for each in made:
        each.close()


def test_64_concurrent_registrations_at_999_admit_exactly_one(
    api: Api, owner: Owner, target: Target, clients: Callable[[], httpx.Client]
) -> None:
    assert api.settings.max_tasks_in_queue == 1000
    body = payload(target.url())

    def register(_: int) -> int:
        return clients().post("/v1/queues/register", json=body, headers=owner.headers).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(register, range(999)))
    assert codes == [201] * 999
    assert in_queue(api, owner) == 999
    results = _concurrent_registrations(api, owner, target.url(), 64)
    assert results.count(201) == 1, results
    assert results.count(422) == 63, results
    assert in_queue(api, owner) == 1000
    listed = api.http.get("/v1/queues?limit=1000&state=RUNNING", headers=owner.headers)
    assert len(listed.json()) == 1000
    listed = api.http.get("/v1/queues?limit=10&offset=1000", headers=owner.headers)
    assert listed.json() == []
    # one finished frees exactly one slot
    first = api.http.get("/v1/queues?limit=1", headers=owner.headers).json()[0]
    patch(api, owner, first["id"], "revoke")
    assert in_queue(api, owner) == 999
    assert api.register(owner, body).status_code == 201
    assert_limit_reached(api.register(owner, body))
