"""Retention: finished tasks deleted TASK_RETENTION_DAYS after they finished, on each store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tasks_server import retention
from tasks_server.model.lifecycle import State
from tasks_server.model.records import OwnerRow
from tasks_server.retention import DAY_MS, Retention
from tasks_server.store.base import Store
from tests.store.helpers import STORES, fresh_settings, opened, owner_row, task_row

NOW = 1_800_000_000_000


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    with fresh_settings(request.param, tmp_path) as settings:
        async with opened(settings) as found:
            yield found


async def fill(store: Store, owner: OwnerRow, count: int, ended: int, state: State) -> set[str]:
    rows = [task_row(owner.id, state=state, estimate_end_at=ended) for _ in range(count)]
    await asyncio.gather(*(store.insert_task(row, 10**6) for row in rows))
    return {row.id for row in rows}


async def test_tasks_finished_before_the_retention_go_in_batches_and_the_rest_stay(
    store: Store,
) -> None:
    owner = owner_row()
    await store.create_owner(owner)
    old = retention.BATCH * 2 + 7  # three transactions
    await fill(store, owner, old, NOW - 3 * DAY_MS, State.SUCCESS)
    kept = await fill(store, owner, 5, NOW - DAY_MS // 2, State.ERROR)
    kept |= await fill(store, owner, 3, NOW - 3 * DAY_MS, State.PAUSED)
    assert await Retention(store, days=1).purge(NOW) == old
    assert await Retention(store, days=1).purge(NOW) == 0
    for task_id in kept:
        assert await store.get_task(owner.id, task_id) is not None


async def test_zero_days_keeps_everything(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = owner_row()
    await store.create_owner(owner)
    ids = await fill(store, owner, 3, 1, State.REVOKED)
    monkeypatch.setattr(retention, "EVERY_S", 0.01)
    keeping = Retention(store, days=0)
    await keeping.start()
    await asyncio.sleep(0.05)
    await keeping.stop()
    for task_id in ids:
        assert await store.get_task(owner.id, task_id) is not None


async def test_a_server_purges_at_start_and_then_every_minute(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = owner_row()
    await store.create_owner(owner)
    ids = await fill(store, owner, 3, 1, State.SUCCESS)  # finished in 1970
    monkeypatch.setattr(retention, "EVERY_S", 0.01)
    purging = Retention(store, days=30)
    await purging.start()
    try:
        for _ in range(500):
            if all([await store.get_task(owner.id, task_id) is None for task_id in ids]):
                break
            await asyncio.sleep(0.01)
    finally:
        await purging.stop()
    assert [await store.get_task(owner.id, task_id) for task_id in ids] == [None] * 3
