"""The scheduler alone: a real store on a SQLite file, and a sender that answers from
memory when the test says so (no network, no target), for the claim, retry, abort and
shutdown paths."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from ulid import ULID

from tasks_server.codec import TaskCodec
from tasks_server.config import Settings
from tasks_server.crypto import Cipher
from tasks_server.model import actions
from tasks_server.model.canonical import parse_task_spec
from tasks_server.model.lifecycle import State
from tasks_server.model.outcome import AttemptResult
from tasks_server.model.records import Claim, ClaimedTask, OwnerRow, TaskRow
from tasks_server.model.registration import new_task_row
from tasks_server.model.spec import TaskSpec
from tasks_server.model.timing import now_ms
from tasks_server.scheduler import Scheduler
from tasks_server.store.base import Store
from tests.store.helpers import STORES, fresh_settings, opened, owner_row

CODEC = TaskCodec(Cipher("scheduler-test-key"))
HOUR_MS = 3_600_000
OK = AttemptResult(200, b"fine")


class Attempt:
    """One attempt the scheduler handed over, and the means to answer it."""

    def __init__(self, spec: TaskSpec, claimed: ClaimedTask, future: asyncio.Future[Any]) -> None:
        self.spec = spec
        self.claimed = claimed
        self.future = future

    def answer(self, result: AttemptResult) -> None:
        self.future.set_result(result)


class FakeSender:
    """A Sender whose attempts stay in flight until the test answers them."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.events: list[tuple[str, Any]] = []  # ("sent", task id), shared with RecordingStore
        self.closed = False

    def perform(
        self, spec: TaskSpec, claimed: ClaimedTask, now: int
    ) -> asyncio.Future[AttemptResult]:
        future: asyncio.Future[AttemptResult] = asyncio.get_running_loop().create_future()
        self.attempts.append(Attempt(spec, claimed, future))
        self.events.append(("sent", claimed.id))
        return future

    def close(self) -> None:
        self.closed = True

    def of(self, task_id: str) -> list[Attempt]:
        return [attempt for attempt in self.attempts if attempt.claimed.id == task_id]

    @property
    def in_flight(self) -> list[Attempt]:
        return [attempt for attempt in self.attempts if not attempt.future.done()]


async def until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `condition` on the loop until it is truthy; fail past `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.002)
    return value


async def until_stored(
    store: Store, owner: OwnerRow, task_id: str, check: Callable[[TaskRow], bool]
) -> TaskRow:
    deadline = time.monotonic() + 10
    while True:
        row = await store.get_task(owner.id, task_id)
        if row is not None and check(row):
            return row
        assert time.monotonic() < deadline, f"task {task_id} stays {row}"
        await asyncio.sleep(0.005)


class RecordingStore:
    """The real store, every call passed through; each claim's return is noted in `events`."""

    def __init__(self, store: Store, events: list[tuple[str, Any]]) -> None:
        self._store = store
        self._events = events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_due_tasks(self, now: int, limit: int, instance_id: str, token: int) -> Claim:
        claim = await self._store.claim_due_tasks(now, limit, instance_id, token)
        if claim.tasks:
            self._events.append(("claimed", len(claim.tasks)))
        return claim


class World:
    """A store with one owner, a fake sender and a scheduler to start and stop."""

    def __init__(self, store: Store, owner: OwnerRow) -> None:
        self.store = store
        self.owner = owner
        self.sender = FakeSender()
        self.running: list[Scheduler] = []

    async def register(self, **config: Any) -> TaskRow:
        now = now_ms()
        spec = parse_task_spec(
            {"httpRequest": {"url": "http://target.invalid/cb", "method": "GET"}, "config": config},
            now,
        )
        row = new_task_row(str(ULID()), self.owner.id, spec, now, CODEC)
        await self.store.insert_task(row, 10_000)
        return row

    async def start(
        self, max_in_flight: int = 1000, grace_ms: int = 5000, store: Any = None
    ) -> Scheduler:
        scheduler = Scheduler(
            store or self.store,
            CODEC,
            self.sender,
            max_in_flight=max_in_flight,
            stale_after_ms=3000,
            shutdown_grace_ms=grace_ms,
        )
        await scheduler.start()
        self.running.append(scheduler)
        return scheduler

    async def stop(self, scheduler: Scheduler) -> None:
        self.running.remove(scheduler)
        await scheduler.stop()

    async def stored(self, task_id: str, check: Callable[[TaskRow], bool]) -> TaskRow:
        return await until_stored(self.store, self.owner, task_id, check)

    async def change(self, task_id: str, action: Callable[[TaskRow, int], Any]) -> TaskRow:
        return await self.store.change_task(
            self.owner.id, task_id, lambda row: action(row, now_ms())
        )


@pytest.fixture(params=STORES)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    with fresh_settings(request.param, tmp_path) as found:
        yield found


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    async with opened(settings) as store:
        owner = owner_row()
        await store.create_owner(owner)
        found = World(store, owner)
        yield found
        for scheduler in list(found.running):
            await found.stop(scheduler)


def finished(row: TaskRow) -> bool:
    return row.state != State.RUNNING


async def test_due_tasks_are_handed_over_once_each_and_later_ones_wait(world: World) -> None:
    due = [await world.register(executionDelay=0) for _ in range(50)]
    later = [await world.register(executionDelay=HOUR_MS) for _ in range(5)]
    await world.start()
    await until(lambda: len(world.sender.attempts) == 50)
    for attempt in world.sender.attempts:
        attempt.answer(OK)
    for row in due:
        stored = await world.stored(row.id, finished)
        assert (stored.state, stored.status_code, stored.attempts) == (State.SUCCESS, 200, 1)
        assert CODEC.open_response(row.id, stored.response) == b"fine"
    assert sorted(a.claimed.id for a in world.sender.attempts) == sorted(r.id for r in due)
    assert not any(world.sender.of(row.id) for row in later)
    assert world.sender.attempts[0].spec.http_request.url == "http://target.invalid/cb"


async def test_failures_are_retried_with_the_count_each_attempt_carries(world: World) -> None:
    task = await world.register(retry=2, retryInterval=1)
    await world.start()
    for n, result in enumerate([AttemptResult(500), AttemptResult(0, error="reset"), OK]):
        await until(lambda n=n: len(world.sender.of(task.id)) > n)
        attempt = world.sender.of(task.id)[n]
        assert (attempt.claimed.retry_count, attempt.claimed.attempts) == (n, n + 1)
        attempt.answer(result)
    stored = await world.stored(task.id, finished)
    assert (stored.state, stored.retry_count, stored.attempts) == (State.SUCCESS, 2, 3)


async def test_the_last_failure_ends_in_error_and_its_reason_is_kept(world: World) -> None:
    task = await world.register(retry=1, retryInterval=1)
    await world.start()
    (await until(lambda: world.sender.of(task.id)))[0].answer(AttemptResult(503))
    (await until(lambda: world.sender.of(task.id)[1:]))[0].answer(
        AttemptResult(0, error="connection refused")
    )
    stored = await world.stored(task.id, finished)
    assert (stored.state, stored.status_code, stored.retry_count) == (State.ERROR, 0, 1)
    assert CODEC.open_error(task.id, stored.error) == "connection refused"


async def test_an_ignored_status_ends_the_task_at_once(world: World) -> None:
    task = await world.register(retry=5, retryInterval=1, ignoreStatusCode=[410])
    await world.start()
    (await until(lambda: world.sender.of(task.id)))[0].answer(AttemptResult(410))
    stored = await world.stored(task.id, finished)
    assert (stored.state, stored.status_code, stored.attempts) == (State.ERROR, 410, 1)
    assert len(world.sender.of(task.id)) == 1


async def test_a_pause_aborts_the_attempt_in_flight_and_a_resume_sends_it_again(
    world: World,
) -> None:
    task = await world.register()
    await world.start()
    (first,) = await until(lambda: world.sender.of(task.id))
    await world.change(task.id, actions.pause)
    await until(lambda: first.future.cancelled())
    await asyncio.sleep(0.05)  # were the aborted attempt recorded, it would be by now
    paused = await world.stored(task.id, lambda row: True)
    assert (paused.state, paused.status_code, paused.in_flight) == (State.PAUSED, 0, False)
    await world.change(task.id, actions.resume)
    second = (await until(lambda: world.sender.of(task.id)[1:]))[0]
    second.answer(OK)
    stored = await world.stored(task.id, finished)
    assert (stored.state, stored.attempts) == (State.SUCCESS, 2)


async def test_a_delete_aborts_the_attempt_in_flight(world: World) -> None:
    task = await world.register()
    await world.start()
    (attempt,) = await until(lambda: world.sender.of(task.id))
    await world.store.delete_task(world.owner.id, task.id)
    await until(lambda: attempt.future.cancelled())


async def test_at_most_max_in_flight_are_handed_over_at_once(world: World) -> None:
    tasks = [await world.register() for _ in range(30)]
    await world.start(max_in_flight=8)
    answered = 0
    while answered < len(tasks):
        await until(lambda: world.sender.in_flight)
        assert len(world.sender.in_flight) <= 8
        for attempt in world.sender.in_flight:
            attempt.answer(OK)
            answered += 1
    for row in tasks:
        assert (await world.stored(row.id, finished)).state == State.SUCCESS
    assert len(world.sender.attempts) == 30


async def test_a_stop_waits_for_the_attempts_that_end_within_the_grace(world: World) -> None:
    task = await world.register()
    scheduler = await world.start(grace_ms=10_000)
    (attempt,) = await until(lambda: world.sender.of(task.id))
    stopping = asyncio.create_task(world.stop(scheduler))
    await asyncio.sleep(0.02)
    assert not stopping.done()
    attempt.answer(OK)
    await stopping
    stored = await world.stored(task.id, lambda row: True)
    assert (stored.state, stored.in_flight) == (State.SUCCESS, False)


async def test_a_stop_aborts_what_outlives_the_grace_and_the_next_start_sends_it(
    world: World,
) -> None:
    task = await world.register()
    scheduler = await world.start(grace_ms=50)
    (attempt,) = await until(lambda: world.sender.of(task.id))
    await world.stop(scheduler)
    assert attempt.future.cancelled()
    released = await world.stored(task.id, lambda row: True)
    assert (released.state, released.in_flight) == (State.RUNNING, False)
    assert released.due_at is not None and released.due_at <= now_ms()
    await world.start()
    (await until(lambda: world.sender.of(task.id)[1:]))[0].answer(OK)
    assert (await world.stored(task.id, finished)).state == State.SUCCESS


async def test_a_task_no_key_opens_is_not_sent_and_stays_queued(world: World) -> None:
    now = now_ms()
    spec = parse_task_spec({"httpRequest": {"url": "http://t.invalid/", "method": "GET"}}, now)
    other_key = TaskCodec(Cipher("another-key"))
    unreadable = new_task_row(str(ULID()), world.owner.id, spec, now, other_key)
    await world.store.insert_task(unreadable, 100)
    readable = await world.register()
    await world.start()
    (await until(lambda: world.sender.of(readable.id)))[0].answer(OK)
    await world.stored(readable.id, finished)
    assert world.sender.of(unreadable.id) == []
    stored = await world.stored(unreadable.id, lambda row: True)
    assert (stored.state, stored.attempts) == (State.RUNNING, 1)  # claimed once, kept


async def test_the_first_request_of_a_burst_leaves_before_the_rest_is_claimed(
    world: World,
) -> None:
    now = now_ms()
    spec = parse_task_spec(
        {"httpRequest": {"url": "http://target.invalid/cb", "method": "GET"}}, now
    )
    rows = [
        msgspec.structs.replace(
            new_task_row(str(ULID()), world.owner.id, spec, now, CODEC), due_at=now
        )
        for _ in range(5000)
    ]
    await asyncio.gather(*(world.store.insert_task(row, 10_000) for row in rows))
    events = world.sender.events
    await world.start(store=RecordingStore(world.store, events))
    while len(world.sender.attempts) < len(rows):
        for attempt in await until(lambda: world.sender.in_flight):
            attempt.answer(OK)
    first_sent = events.index(("sent", world.sender.attempts[0].claimed.id))
    claims = [n for n, (kind, _) in enumerate(events) if kind == "claimed"]
    # handed over before the second claim returned, with fewer than 100 of 5,000 claimed
    assert first_sent < claims[1], events[: claims[1] + 1]
    assert sum(n for kind, n in events[:first_sent] if kind == "claimed") < 100
    assert sum(events[n][1] for n in claims) == len(rows)
    assert len({a.claimed.id for a in world.sender.attempts}) == len(rows)  # each once
    deadline = time.monotonic() + 10
    while (owner := await world.store.get_owner(world.owner.id)) and owner.tasks_in_queue:
        assert time.monotonic() < deadline, f"{owner.tasks_in_queue} tasks not recorded"
        await asyncio.sleep(0.01)


async def test_a_change_wakes_the_claim_loop_only_when_due_before_it_looks_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tasks_server.scheduler.IDLE_POLL_S", 60.0)  # no poll in this test
    claims: list[int] = []

    class CountingStore(RecordingStore):
        async def claim_due_tasks(
            self, now: int, limit: int, instance_id: str, token: int
        ) -> Claim:
            claims.append(now)
            return await super().claim_due_tasks(now, limit, instance_id, token)

    await world.start(store=CountingStore(world.store, world.sender.events))
    await until(lambda: claims)
    await asyncio.sleep(0.05)  # the loop sleeps now, until its next poll in a minute
    looked = len(claims)
    for _ in range(20):
        await world.register(executionDelay=HOUR_MS)
    await asyncio.sleep(0.05)
    assert len(claims) == looked  # due after the next look: no claim for them
    task = await world.register(executionDelay=0)
    (attempt,) = await until(lambda: world.sender.of(task.id))
    assert len(claims) > looked
    attempt.answer(OK)
