"""Large claims: built aside from the loop, each task sent once, none lost at a stop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from ulid import ULID

from tasks_server.api.queues import new_task_row
from tasks_server.api.validation import parse_task_spec
from tasks_server.codec import TaskCodec
from tasks_server.crypto import Cipher
from tasks_server.scheduler import PREPARE_ASIDE_FROM, Scheduler
from tasks_server.store.base import OwnerRow
from tasks_server.store.sqlite import SqliteStore
from tests.conftest import Api, Owner
from tests.targets import Target

COUNT = PREPARE_ASIDE_FROM * 3  # claimed together, so built on the scheduler's own thread


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_tasks_due_together_are_each_sent_once(api: Api, owner: Owner, target: Target) -> None:
    due = now_ms() + 1500  # after all are registered: one claim takes them together
    ids = [
        api.task(
            owner,
            {
                "httpRequest": {"url": target.url(f"/batch/{n}"), "method": "GET"},
                "config": {"executeAt": due},
            },
        )["id"]
        for n in range(COUNT)
    ]
    target.wait_for(COUNT, timeout=20)
    for task_id in ids:
        assert api.wait_state(owner, task_id, "SUCCESS")["attempts"] == 1
    paths = sorted(arrival.path for arrival in target.arrivals)
    assert paths == sorted(f"/batch/{n}" for n in range(COUNT))  # each exactly once


async def _fill(store: SqliteStore, codec: TaskCodec, url: str) -> None:
    owner = OwnerRow(str(ULID()), "batch-owner", b"digest", now_ms(), 0)
    await store.create_owner(owner)
    now = now_ms()
    spec = parse_task_spec({"httpRequest": {"url": url, "method": "GET"}}, now)
    rows = [new_task_row(str(ULID()), owner.id, spec, now, codec) for _ in range(COUNT)]
    await asyncio.gather(*(store.insert_task(row, 10**6) for row in rows))


def _scheduler(store: SqliteStore, codec: TaskCodec) -> Scheduler:
    return Scheduler(
        store,
        codec,
        max_in_flight=1000,
        max_response_bytes=1 << 20,
        stale_after_ms=60_000,
        shutdown_grace_ms=2000,
    )


def test_a_stop_while_a_batch_is_built_sends_none_and_releases_them(
    tmp_path: Path, target: Target
) -> None:
    db = tmp_path / "tasks.db"
    codec = TaskCodec(Cipher("batch-key"))

    async def scenario() -> None:
        store = SqliteStore(str(db))
        await store.open()
        try:
            await _fill(store, codec, target.url("/stopped"))
            first = _scheduler(store, codec)
            held = threading.Event()
            await first.start()
            assert first._preparer is not None
            # the building thread is busy: the claimed batch waits behind this
            first._preparer.submit(held.wait, 10)
            first.wake()
            while not first._preparing:
                await asyncio.sleep(0.005)
            stopping = asyncio.create_task(first.stop())
            await asyncio.sleep(0.05)
            held.set()
            await stopping
            assert target.arrivals_at("/stopped") == []
            # every lease was released: a new start sends each task once, at once
            second = _scheduler(store, codec)
            await second.start()
            try:
                deadline = time.monotonic() + 15
                while len(target.arrivals_at("/stopped")) < COUNT:
                    assert time.monotonic() < deadline, len(target.arrivals_at("/stopped"))
                    await asyncio.sleep(0.01)
            finally:
                await second.stop()
        finally:
            await store.close()

    asyncio.run(scenario())
    assert len(target.arrivals_at("/stopped")) == COUNT
    with sqlite3.connect(db) as conn:
        states = conn.execute("SELECT state, attempts, COUNT(*) FROM task GROUP BY 1, 2").fetchall()
    assert states == [("SUCCESS", 2, COUNT)]  # the first lease counted an attempt never made
