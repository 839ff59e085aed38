"""The behaviour every store must have, run against each implementation of store.base.Store.

Only the Store protocol is used here (no SQL, no files): a new store passes
this suite before anything else runs on it. What is particular to one store
(SQLite's WAL, flock, group commit, files) is tested beside it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from tasks_server.config import Settings
from tasks_server.model.lifecycle import State
from tasks_server.model.records import (
    AttemptRecord,
    ClaimedTask,
    ListParams,
    OwnerRow,
    SealedColumns,
    TaskChange,
    TaskRow,
)
from tasks_server.store import open_store
from tasks_server.store.base import (
    Conflict,
    InUse,
    LimitReached,
    NotFound,
    Store,
    StoreMissing,
    TaskSignal,
)
from tasks_server.store.instances import HOST
from tests.store.helpers import STORES, fresh_settings, owner_row, task_row

NOW = 1_000_000
STALE_MS = 3000
ELSEWHERE = "another-host"  # an instance there is judged by its heartbeat alone


@pytest.fixture(params=STORES)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    with fresh_settings(request.param, tmp_path) as found:
        yield found


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    opened = open_store(settings)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def owner(store: Store) -> OwnerRow:
    row = owner_row()
    await store.create_owner(row)
    return row


def due(owner: OwnerRow, at: int = NOW, **changes: object) -> TaskRow:
    return task_row(owner.id, due_at=at, estimate_execution_at=at, **changes)


def outcome(
    claimed: ClaimedTask, state: State = State.SUCCESS, due_at: int | None = None, **changes: object
) -> AttemptRecord:
    record = AttemptRecord(
        id=claimed.id,
        lease_token=claimed.lease_token,
        state=state,
        status_code=200,
        response=b"body",
        error=None,
        retry_count=claimed.retry_count,
        estimate_next_retry_at=0,
        estimate_end_at=NOW,
        due_at=due_at,
    )
    return msgspec.structs.replace(record, **changes)


async def queued(store: Store, owner: OwnerRow) -> int:
    found = await store.get_owner(owner.id)
    assert found is not None
    return found.tasks_in_queue


# ---- opening ----


async def test_open_without_create_refuses_a_missing_database(settings: Settings) -> None:
    missing = open_store(settings)
    with pytest.raises(StoreMissing):
        await missing.open(create=False)
    created = open_store(settings)
    await created.open()
    await created.close()
    again = open_store(settings)
    await again.open(create=False)
    await again.close()


# ---- owners ----


async def test_an_owner_reads_back_as_created(store: Store) -> None:
    row = owner_row()
    await store.create_owner(row)
    assert await store.get_owner(row.id) == row
    assert await store.get_owner(owner_row().id) is None


async def test_owner_names_are_unique(store: Store, owner: OwnerRow) -> None:
    with pytest.raises(Conflict):
        await store.create_owner(msgspec.structs.replace(owner_row(), name=owner.name))


async def test_an_owner_is_deleted_by_its_own_name_once_nothing_is_queued(
    store: Store, owner: OwnerRow
) -> None:
    with pytest.raises(NotFound):
        await store.delete_owner(owner.id, "some-other-name")
    task = task_row(owner.id)
    await store.insert_task(task, 10)
    with pytest.raises(Conflict):
        await store.delete_owner(owner.id, owner.name)
    await store.change_task(owner.id, task.id, lambda row: TaskChange(state=State.REVOKED))
    await store.delete_owner(owner.id, owner.name)
    assert await store.get_owner(owner.id) is None
    assert await store.get_task(owner.id, task.id) is None  # its finished tasks go with it


async def test_an_owner_key_is_replaced_only_from_the_digest_it_had(
    store: Store, owner: OwnerRow
) -> None:
    assert await store.replace_owner_key(owner.id, owner.key_digest, b"second")
    assert not await store.replace_owner_key(owner.id, owner.key_digest, b"third")
    found = await store.get_owner(owner.id)
    assert found is not None and found.key_digest == b"second"


# ---- the queue limit ----


async def test_limit_is_atomic_under_concurrent_registrations(
    store: Store, owner: OwnerRow
) -> None:
    results = await asyncio.gather(
        *(store.insert_task(task_row(owner.id), 10) for _ in range(64)),
        return_exceptions=True,
    )
    assert results.count(None) == 10
    assert sum(isinstance(r, LimitReached) for r in results) == 54
    assert await queued(store, owner) == 10


async def test_a_limit_beyond_32_bits_is_taken(store: Store, owner: OwnerRow) -> None:
    await store.insert_task(task_row(owner.id), 10**12)
    assert await queued(store, owner) == 1


async def test_the_queue_count_follows_every_way_a_task_leaves_the_queue(
    store: Store, owner: OwnerRow
) -> None:
    tasks = [due(owner) for _ in range(4)]
    await asyncio.gather(*(store.insert_task(task, 100) for task in tasks))
    assert await queued(store, owner) == 4
    pause = TaskChange(state=State.PAUSED, due_at=None)
    await store.change_task(owner.id, tasks[0].id, lambda row: pause)
    assert await queued(store, owner) == 4  # PAUSED is still in the queue
    await store.change_task(owner.id, tasks[0].id, lambda row: TaskChange(state=State.REVOKED))
    await store.delete_task(owner.id, tasks[1].id)
    claim = await store.claim_due_tasks(NOW, 10, "instance", 7)
    assert await store.record_attempts([outcome(c) for c in claim.tasks]) == 2
    assert await queued(store, owner) == 0
    # a finished task deleted gives back nothing it does not hold
    await store.delete_task(owner.id, tasks[0].id)
    assert await queued(store, owner) == 0


async def test_a_registration_for_a_deleted_owner_is_not_found_and_creates_nothing(
    store: Store, owner: OwnerRow
) -> None:
    await store.delete_owner(owner.id, owner.name)
    task = task_row(owner.id)
    with pytest.raises(NotFound):
        await store.insert_task(task, 1000)
    assert await store.get_task(owner.id, task.id) is None


async def test_registrations_racing_the_owner_delete_never_reach_the_limit(store: Store) -> None:
    """The delete wins (each registration: NotFound) or some registrations do (the delete:
    Conflict); on an empty queue nobody is told its limit was reached."""
    for _ in range(40):
        owner = owner_row()
        await store.create_owner(owner)
        tasks = [task_row(owner.id) for _ in range(8)]
        results = await asyncio.gather(
            *(store.insert_task(task, 1000) for task in tasks),
            store.delete_owner(owner.id, owner.name),
            return_exceptions=True,
        )
        *registrations, deleted = results
        assert all(r is None or isinstance(r, NotFound) for r in registrations), results
        created = [task for task, r in zip(tasks, registrations, strict=True) if r is None]
        if deleted is None:
            assert created == []
            assert await store.get_owner(owner.id) is None
        else:
            assert isinstance(deleted, Conflict) and created
            assert await queued(store, owner) == len(created)
        for task in tasks:
            assert (await store.get_task(owner.id, task.id) is not None) == (task in created)


# ---- claims and leases ----


async def test_claims_take_due_tasks_oldest_first_up_to_the_limit(
    store: Store, owner: OwnerRow
) -> None:
    late, early, later = due(owner, NOW - 10), due(owner, NOW - 20), due(owner, NOW)
    future = due(owner, NOW + 500)  # before the leases of the claimed end (lease_ms 1000)
    paused = task_row(owner.id, state=State.PAUSED)
    for task in (late, early, later, future, paused):
        await store.insert_task(task, 100)
    first = await store.claim_due_tasks(NOW, 2, "instance", 7)
    assert [c.id for c in first.tasks] == [early.id, late.id]
    assert all(c.lease_token == 7 and c.attempts == 1 for c in first.tasks)
    assert first.tasks[0].payload == early.payload
    second = await store.claim_due_tasks(NOW, 10, "instance", 8)
    assert [c.id for c in second.tasks] == [later.id]
    assert second.next_due_at == future.due_at  # the earliest left, leases end later
    found = await store.get_task(owner.id, early.id)
    assert found is not None and found.in_flight and found.attempts == 1


async def test_a_claimed_task_is_claimed_again_only_when_its_lease_ends(
    store: Store, owner: OwnerRow
) -> None:
    task = due(owner, lease_ms=1000)
    await store.insert_task(task, 100)
    (claimed,) = (await store.claim_due_tasks(NOW, 10, "a", 1)).tasks
    assert (await store.claim_due_tasks(NOW + 999, 10, "b", 2)).tasks == []
    (again,) = (await store.claim_due_tasks(NOW + 1000, 10, "b", 2)).tasks
    assert (again.id, again.attempts, again.lease_token) == (claimed.id, 2, 2)
    # the first lease lost: its late outcome counts for nothing
    assert await store.record_attempts([outcome(claimed)]) == 0
    assert await store.record_attempts([outcome(again)]) == 1


async def test_concurrent_claims_never_share_a_task(store: Store, owner: OwnerRow) -> None:
    tasks = [due(owner) for _ in range(60)]
    await asyncio.gather(*(store.insert_task(task, 100) for task in tasks))
    claims = await asyncio.gather(
        *(store.claim_due_tasks(NOW, 7, f"instance-{n}", n) for n in range(12))
    )
    ids = [c.id for claim in claims for c in claim.tasks]
    assert sorted(ids) == sorted(task.id for task in tasks)  # each exactly once


async def test_a_graceful_stop_gives_its_leases_back(store: Store, owner: OwnerRow) -> None:
    await store.register_instance("leaving", HOST, os.getpid(), NOW)
    task = due(owner)
    await store.insert_task(task, 100)
    await store.claim_due_tasks(NOW, 10, "leaving", 3)
    assert await store.release_leases("leaving", NOW + 50) == 1
    found = await store.get_task(owner.id, task.id)
    assert found is not None and not found.in_flight and found.due_at == NOW + 50
    assert await store.live_instances(NOW + 50, STALE_MS) == []


async def test_the_leases_of_an_instance_that_stopped_heart_beating_are_released(
    store: Store, owner: OwnerRow
) -> None:
    await store.register_instance("alive", ELSEWHERE, 1, NOW)
    await store.register_instance("silent", ELSEWHERE, 2, NOW)
    mine, theirs = due(owner, lease_ms=60_000), due(owner, lease_ms=60_000)
    await store.insert_task(mine, 100)
    await store.insert_task(theirs, 100)
    await store.claim_due_tasks(NOW, 1, "alive", 1)
    await store.claim_due_tasks(NOW, 1, "silent", 2)
    later = NOW + STALE_MS + 1
    await store.heartbeat("alive", later)
    assert await store.release_dead_leases("alive", later, STALE_MS) == 1
    assert [i.id for i in await store.live_instances(later, STALE_MS)] == ["alive"]
    released = [c.lease_token for c in (await store.claim_due_tasks(later, 10, "alive", 9)).tasks]
    assert released == [9]  # only the silent one's task was due again


async def test_an_instance_on_this_host_whose_process_is_gone_is_dead(store: Store) -> None:
    gone = await _finished_pid()
    await store.register_instance("gone", HOST, gone, NOW)
    await store.register_instance("here", HOST, os.getpid(), NOW)
    await store.register_instance("remote", ELSEWHERE, gone, NOW)
    live = {i.id for i in await store.live_instances(NOW, STALE_MS)}
    assert live == {"here", "remote"}


async def _finished_pid() -> int:
    process = await asyncio.create_subprocess_exec("true")
    await process.wait()
    return process.pid


# ---- outcomes ----


async def test_outcomes_are_written_only_where_the_lease_holds(
    store: Store, owner: OwnerRow
) -> None:
    tasks = [due(owner) for _ in range(342)]
    await asyncio.gather(*(store.insert_task(task, 1000) for task in tasks))
    claim = await store.claim_due_tasks(NOW, 1000, "instance", 77)
    assert len(claim.tasks) == len(tasks)
    records = [
        outcome(
            c,
            State.SUCCESS if n % 2 else State.RUNNING,
            due_at=None if n % 2 else 5000 + n,
            status_code=200 + n % 2,
            response=f"body {n}".encode(),
            retry_count=n % 2,
            estimate_next_retry_at=n,
            estimate_end_at=n * 10,
        )
        for n, c in enumerate(claim.tasks)
    ]
    stale = msgspec.structs.replace(records[0], lease_token=78, state=State.ERROR)
    assert await store.record_attempts([*records, stale]) == len(records)
    for n, record in enumerate(records):
        found = await store.get_task(owner.id, record.id)
        assert found is not None
        assert (
            found.state,
            found.status_code,
            found.response,
            found.retry_count,
            found.estimate_next_retry_at,
            found.estimate_end_at,
            found.due_at,
            found.in_flight,
        ) == (record.state, 200 + n % 2, record.response, n % 2, n, n * 10, record.due_at, False)
    assert await queued(store, owner) == len(records) - len(records) // 2
    assert await store.record_attempts([]) == 0


# ---- reading, changing, deleting ----


async def test_lists_are_ordered_with_ids_breaking_ties_and_scoped_to_the_owner(
    store: Store, owner: OwnerRow
) -> None:
    other = owner_row()
    await store.create_owner(other)
    tasks = [task_row(owner.id, created_at=at) for at in (3, 1, 2, 2)]
    await store.insert_task(task_row(other.id), 100)
    for task in tasks:
        await store.insert_task(task, 100)
    await store.change_task(owner.id, tasks[0].id, lambda row: TaskChange(state=State.PAUSED))

    async def listed(
        *, limit: int = 10, offset: int = 0, descending: bool = False, state: State | None = None
    ) -> list[str]:
        params = ListParams(owner.id, limit, offset, "created_at", descending, state)
        return [row.id for row in await store.list_tasks(params)]

    ties = sorted([tasks[2].id, tasks[3].id])
    ascending = [tasks[1].id, *ties, tasks[0].id]
    assert await listed() == ascending
    assert await listed(descending=True) == ascending[::-1]
    assert await listed(offset=1, limit=2) == ascending[1:3]
    assert await listed(state=State.PAUSED) == [tasks[0].id]
    assert await listed(state=State.RUNNING, descending=True) == ascending[:3][::-1]


async def test_a_change_is_decided_on_the_row_as_it_is_and_returns_it_after(
    store: Store, owner: OwnerRow
) -> None:
    task = due(owner)
    await store.insert_task(task, 100)
    await store.claim_due_tasks(NOW, 10, "instance", 5)

    def refuse(row: TaskRow) -> TaskChange:
        assert row.in_flight
        raise Conflict("no")

    with pytest.raises(Conflict):
        await store.change_task(owner.id, task.id, refuse)
    assert (await store.get_task(owner.id, task.id)) is not None
    after = await store.change_task(
        owner.id,
        task.id,
        lambda row: TaskChange(state=State.PAUSED, due_at=None, drop_lease=True),
    )
    assert (after.state, after.due_at, after.in_flight) == (State.PAUSED, None, False)
    assert await store.change_task(owner.id, task.id, lambda row: TaskChange()) == after
    stranger = owner_row()
    await store.create_owner(stranger)
    with pytest.raises(NotFound):
        await store.change_task(stranger.id, task.id, lambda row: TaskChange())


async def test_a_delete_returns_the_row_as_it_was(store: Store, owner: OwnerRow) -> None:
    task = task_row(owner.id, metadata=b"sealed metadata")
    await store.insert_task(task, 100)
    stranger = owner_row()
    await store.create_owner(stranger)
    with pytest.raises(NotFound):
        await store.delete_task(stranger.id, task.id)
    assert await store.delete_task(owner.id, task.id) == task
    assert await store.get_task(owner.id, task.id) is None
    with pytest.raises(NotFound):
        await store.delete_task(owner.id, task.id)


async def test_subscribers_hear_what_a_committed_change_means(
    store: Store, owner: OwnerRow
) -> None:
    heard: list[TaskSignal] = []
    unsubscribe = store.subscribe(heard.append)
    task = due(owner)
    await store.insert_task(task, 100)
    await store.change_task(
        owner.id, task.id, lambda row: TaskChange(state=State.PAUSED, due_at=None, drop_lease=True)
    )
    await store.change_task(owner.id, task.id, lambda row: TaskChange(metadata=b"x"))
    await store.change_task(
        owner.id, task.id, lambda row: TaskChange(state=State.RUNNING, due_at=NOW)
    )
    with pytest.raises(NotFound):
        await store.change_task(owner.id, "01ARZ3NDEKTSV4RRFFQ69G5FAV", lambda row: TaskChange())
    await store.delete_task(owner.id, task.id)
    assert heard == [
        TaskSignal(task.id, due_at=NOW),
        TaskSignal(task.id, abort=True),
        TaskSignal(task.id, due_at=NOW),
        TaskSignal(task.id, abort=True),
    ]
    unsubscribe()
    await store.insert_task(task_row(owner.id, due_at=NOW), 100)
    assert len(heard) == 4


# ---- key rotation ----


async def test_sealed_columns_are_resealed_in_batches_in_id_order(
    store: Store, owner: OwnerRow
) -> None:
    tasks = sorted((task_row(owner.id, response=b"r") for _ in range(5)), key=lambda t: t.id)
    for task in tasks:
        await store.insert_task(task, 100)
    seen: list[SealedColumns] = []

    def reseal(columns: SealedColumns) -> SealedColumns | None:
        seen.append(columns)
        return msgspec.structs.replace(columns, payload=b"new " + columns.id.encode())

    first = await store.reseal_tasks("", 3, reseal, now=NOW, stale_ms=STALE_MS)
    assert first == [task.id for task in tasks[:3]]
    rest = await store.reseal_tasks(first[-1], 3, lambda columns: None, now=NOW, stale_ms=STALE_MS)
    assert rest == [task.id for task in tasks[3:]]
    assert seen[0] == SealedColumns(tasks[0].id, b"sealed", None, b"r", None)
    for n, task in enumerate(tasks):
        found = await store.get_task(owner.id, task.id)
        assert found is not None
        assert found.payload == (b"new " + task.id.encode() if n < 3 else b"sealed")


async def test_resealing_is_refused_while_a_live_server_uses_the_database(
    store: Store, owner: OwnerRow
) -> None:
    await store.insert_task(task_row(owner.id), 100)
    await store.register_instance("serving", ELSEWHERE, 1, NOW)
    with pytest.raises(InUse) as refused:
        await store.reseal_tasks("", 10, lambda columns: None, now=NOW, stale_ms=STALE_MS)
    assert refused.value.servers == [f"pid 1 on {ELSEWHERE}"]
    # once it stopped heart-beating, the work goes on
    later = NOW + STALE_MS + 1
    assert len(await store.reseal_tasks("", 10, lambda c: None, now=later, stale_ms=STALE_MS)) == 1


# ---- backup ticks ----


async def test_backup_ticks_are_claimed_once_and_never_overlap(store: Store) -> None:
    await store.register_instance("alive", ELSEWHERE, 1, NOW)
    await store.register_instance("dead", ELSEWHERE, 2, NOW - 60_000)

    async def claim(tick: int, instance_id: str) -> str | None:
        return await store.claim_backup_tick(tick, instance_id, NOW, STALE_MS)

    async def finish(tick: int, instance_id: str, error: str | None) -> None:
        await store.finish_backup_tick(
            tick, instance_id, NOW, location=None if error else "here", size=1, error=error
        )

    assert await claim(1000, "alive") is None
    assert await claim(1000, "other") == "claimed by another server"
    assert await claim(2000, "other") == "the backup of tick 1000 is still running in alive"
    await finish(1000, "alive", "it broke")
    assert await claim(2000, "other") is None
    await finish(2000, "other", None)
    # a backup left RUNNING by an instance that stopped heart-beating blocks nobody
    assert await claim(3000, "dead") is None
    assert await claim(4000, "alive") is None


# ---- retention ----


async def test_finished_tasks_are_purged_oldest_first_in_batches(
    store: Store, owner: OwnerRow
) -> None:
    finished = [
        task_row(owner.id, state=state, estimate_end_at=NOW - n)
        for n, state in enumerate([State.SUCCESS, State.ERROR, State.REVOKED] * 3, start=1)
    ]
    recent = task_row(owner.id, state=State.SUCCESS, estimate_end_at=NOW + 1)
    pending = due(owner, NOW - 100_000)
    paused = task_row(owner.id, state=State.PAUSED, estimate_end_at=NOW - 100_000)
    for task in (*finished, recent, pending, paused):
        await store.insert_task(task, 100)
    assert await store.purge_finished(NOW, 4) == 4
    oldest = sorted(finished, key=lambda task: task.estimate_end_at)
    assert [await store.get_task(owner.id, t.id) for t in oldest[:4]] == [None] * 4
    assert await store.purge_finished(NOW, 100) == 5
    left = await store.list_tasks(ListParams(owner.id, 100, 0, "created_at", False, None))
    assert {t.id for t in left} == {recent.id, pending.id, paused.id}
    assert await queued(store, owner) == 2  # the pending and the paused one


# ---- signals between processes and nodes ----


async def test_another_store_on_the_database_hears_each_change(
    store: Store, owner: OwnerRow, settings: Settings
) -> None:
    """Another process (SQLite) or node (PostgreSQL) on the same database is told too."""
    other = open_store(settings)
    await other.open()
    heard: list[TaskSignal] = []
    other.subscribe(heard.append)
    try:
        task = due(owner)
        await store.insert_task(task, 100)
        pause = TaskChange(state=State.PAUSED, due_at=None, drop_lease=True)
        await store.change_task(owner.id, task.id, lambda row: pause)
        await store.delete_task(owner.id, task.id)
        for _ in range(500):
            if len(heard) >= 3:
                break
            await asyncio.sleep(0.01)
        assert heard == [
            TaskSignal(task.id, due_at=NOW),
            TaskSignal(task.id, abort=True),
            TaskSignal(task.id, abort=True),
        ]
    finally:
        await other.close()
