"""Rows and open stores for the store tests (the contract suite and the SQLite-only tests)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import msgspec
from ulid import ULID

from tasks_server.config import Settings
from tasks_server.model.lifecycle import State
from tasks_server.model.records import OwnerRow, TaskRow
from tasks_server.store import open_store
from tasks_server.store.base import Store
from tests.pg import fresh_schema

FAR = 3_600_000
_names = itertools.count(1)


def task_row(owner_id: str, task_id: str | None = None, **changes: Any) -> TaskRow:
    """A RUNNING task of `owner_id` (not due unless `due_at` is given)."""
    row = TaskRow(
        id=task_id or str(ULID()),
        owner_id=owner_id,
        state=State.RUNNING,
        created_at=1,
        estimate_execution_at=FAR,
        estimate_end_at=0,
        estimate_next_retry_at=0,
        status_code=0,
        retry_count=0,
        retry_limit=0,
        attempts=0,
        error=None,
        response=None,
        metadata=None,
        payload=b"sealed",
        due_at=None,
        lease_token=None,
        lease_ms=1000,
    )
    return msgspec.structs.replace(row, **changes)


def owner_row() -> OwnerRow:
    return OwnerRow(
        str(ULID()), f"owner-{next(_names)}-{str(ULID())[-6:].lower()}", b"digest", 1, 0
    )


STORES = ("sqlite", "postgres")


def store_settings(directory: Path) -> Settings:
    """Settings naming a fresh SQLite database in `directory`."""
    return Settings(path_sqlite=str(directory / "tasks.db"))


@contextmanager
def fresh_settings(store: str, directory: Path) -> Iterator[Settings]:
    """Settings naming a fresh database of `store` (sqlite: in `directory`; postgres: a
    schema of its own, dropped afterwards)."""
    if store == "sqlite":
        yield store_settings(directory)
        return
    with fresh_schema() as url:
        yield Settings(database_url=url, cipher_key="store-test-key")


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Store]:
    """The store the settings name, open for one `with` block."""
    store = open_store(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def store_with_owner(db: Path) -> AsyncIterator[tuple[Store, OwnerRow]]:
    """An open store on the SQLite file `db` with one registered owner; closed afterwards."""
    async with opened(Settings(path_sqlite=str(db))) as store:
        owner = owner_row()
        await store.create_owner(owner)
        yield store, owner
