"""Fill a database with many tasks quickly, through the store (the rows the API writes)."""

from __future__ import annotations

import asyncio

import msgspec
from ulid import ULID

from bench.database import CIPHER_KEY, Database
from tasks_server.codec import TaskCodec
from tasks_server.crypto import Cipher
from tasks_server.model.canonical import parse_task_spec
from tasks_server.model.lifecycle import State
from tasks_server.model.owners import key_digest, new_key
from tasks_server.model.records import OwnerRow, TaskRow
from tasks_server.model.registration import new_task_row
from tasks_server.model.timing import now_ms
from tasks_server.store import open_store

CHUNK = 5000
UNLIMITED = 10**12


async def fill_database(
    database: Database,
    pending: int,
    overdue: int,
    target: str,
    due_at: int | None = None,
    finished: int = 0,
) -> dict[str, str]:
    """`pending` tasks due in a day and `overdue` tasks already due; returns the owner.

    With `due_at` (ms since the epoch) the `overdue` tasks are due at that instant instead.
    `finished` tasks ended (SUCCESS) a minute ago: the history beside the pending ones.
    """
    store = open_store(database.settings())
    await store.open()
    codec = TaskCodec(Cipher(CIPHER_KEY))
    key = new_key()
    owner = OwnerRow(str(ULID()), "bench-owner", key_digest(key), now_ms(), 0)
    await store.create_owner(owner)
    now = now_ms()
    later = parse_task_spec(
        {
            "httpRequest": {"url": f"{target}/t/0/0", "method": "POST", "data": "x" * 300},
            "config": {"executionDelay": 86_400_000},
        },
        now,
    )
    # registered two seconds ago with a one-second delay: overdue by one second
    past = now - 2000
    due = due_at or past + 1
    overdue_spec = parse_task_spec(
        {
            "httpRequest": {"url": f"{target}/t/{due}/0", "method": "GET"},
            "config": {"executeAt": due},
        },
        past,
    )
    plan = [(later, now, True)] * finished
    plan += [(later, now, False)] * pending + [(overdue_spec, past, False)] * overdue
    for start in range(0, len(plan), CHUNK):
        rows = [
            _finished(new_task_row(str(ULID()), owner.id, spec, at, codec), now)
            if done
            else new_task_row(str(ULID()), owner.id, spec, at, codec)
            for spec, at, done in plan[start : start + CHUNK]
        ]
        await asyncio.gather(*(store.insert_task(row, UNLIMITED) for row in rows))
    await store.close()
    return {"id": owner.id, "key": key}


def _finished(row: TaskRow, now: int) -> TaskRow:
    return msgspec.structs.replace(
        row, state=State.SUCCESS, status_code=200, due_at=None, estimate_end_at=now - 60_000
    )
