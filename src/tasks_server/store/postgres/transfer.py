"""`tasks-server migrate --to postgresql://...`: an SQLite database copied into an empty
PostgreSQL one, in one transaction, then checked.

Owners (with their key digests and queue counters), tasks with their sealed payloads
(the same key opens them: every node must run with that CIPHER_KEY) and the backup runs
are copied as they are. A task that was in flight when the copy was taken is due again
at once (its lease belonged to a server of the SQLite file). Refused while a server uses
the SQLite database, and into a database that already holds tasks or owners.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from tasks_server.config import redact_url
from tasks_server.model.records import TaskRow
from tasks_server.model.timing import now_ms
from tasks_server.store.base import InUse
from tasks_server.store.postgres.migrate import apply_migrations
from tasks_server.store.sqlite.snapshot import SqliteSnapshots

CHUNK = 5000  # rows per COPY
SAMPLE = 200  # payloads compared byte for byte after the copy
TASK_COLUMNS = [f.name for f in msgspec.structs.fields(TaskRow)]
OWNER_COLUMNS = ["id", "name", "key_digest", "created_at", "tasks_in_queue"]
BACKUP_COLUMNS = [
    "tick",
    "instance_id",
    "state",
    "started_at",
    "finished_at",
    "location",
    "size",
    "error",
]


class TransferError(Exception):
    """The copy cannot be made, or did not check out; the message says why."""


class TransferResult(msgspec.Struct, frozen=True, kw_only=True):
    owners: int
    tasks: int
    backup_runs: int
    in_flight: int  # tasks whose lease was dropped (due again at once)
    sampled: int  # payloads compared after the copy


async def copy_sqlite_to_postgres(sqlite_path: str, url: str, stale_ms: int) -> TransferResult:
    """Copy the SQLite database at `sqlite_path` into the empty PostgreSQL database `url`."""
    if not Path(sqlite_path).is_file():
        raise TransferError(f"no SQLite database at {sqlite_path}")
    try:
        SqliteSnapshots(sqlite_path).refuse_if_served(stale_ms)
    except InUse as exc:
        raise TransferError(f"{exc}: stop it first") from None
    try:
        target = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise TransferError(f"cannot connect to {redact_url(url)}: {exc}") from None
    try:
        await apply_migrations(target)
        return await _copy(sqlite_path, target, url)
    finally:
        await target.close()


async def _copy(sqlite_path: str, target: asyncpg.Connection, url: str) -> TransferResult:
    counts = await target.fetchrow(
        "SELECT (SELECT count(*) FROM owner), (SELECT count(*) FROM task)"
    )
    if counts is not None and (counts[0] or counts[1]):
        raise TransferError(
            f"{redact_url(url)} is not empty ({counts[0]} owners, {counts[1]} tasks): "
            "migrate into a new database"
        )
    now = now_ms()
    with closing(sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)) as source:
        source.execute("BEGIN")  # one read transaction: a consistent copy
        try:
            async with target.transaction():
                owners = await _rows(target, "owner", OWNER_COLUMNS, _select(source, "owner"))
                in_flight = 0

                def tasks() -> Iterator[tuple[Any, ...]]:
                    nonlocal in_flight
                    for row in _select(source, "task", [*TASK_COLUMNS, "lease_owner"]):
                        *values, lease_owner = row
                        if lease_owner is not None:
                            in_flight += 1
                            values[TASK_COLUMNS.index("due_at")] = now
                            values[TASK_COLUMNS.index("lease_token")] = None
                        yield tuple(values)

                copied = await _rows(target, "task", TASK_COLUMNS, tasks())
                runs = await _rows(
                    target, "backup_run", BACKUP_COLUMNS, _select(source, "backup_run")
                )
                sampled = await _check(source, target, owners, copied)
        finally:
            source.execute("ROLLBACK")
    return TransferResult(
        owners=owners, tasks=copied, backup_runs=runs, in_flight=in_flight, sampled=sampled
    )


def _select(
    source: sqlite3.Connection, table: str, columns: list[str] | None = None
) -> Iterator[tuple[Any, ...]]:
    names = ", ".join(columns or {"owner": OWNER_COLUMNS, "backup_run": BACKUP_COLUMNS}[table])
    yield from source.execute(f"SELECT {names} FROM {table}")


async def _rows(
    target: asyncpg.Connection, table: str, columns: list[str], rows: Iterator[tuple[Any, ...]]
) -> int:
    """COPY `rows` into `table`, CHUNK at a time; how many."""
    count = 0
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            await target.copy_records_to_table(table, records=chunk, columns=columns)
            count += len(chunk)
            chunk = []
    if chunk:
        await target.copy_records_to_table(table, records=chunk, columns=columns)
        count += len(chunk)
    return count


async def _check(
    source: sqlite3.Connection, target: asyncpg.Connection, owners: int, tasks: int
) -> int:
    """Counts as in the source, and a sample of payloads the same byte for byte."""
    found = await target.fetchrow(
        "SELECT (SELECT count(*) FROM owner), (SELECT count(*) FROM task)"
    )
    if found is None or (found[0], found[1]) != (owners, tasks):
        raise TransferError(f"after the copy PostgreSQL holds {found}, not ({owners}, {tasks})")
    ids = [row[0] for row in source.execute("SELECT id FROM task")]
    sample = random.sample(ids, min(SAMPLE, len(ids)))
    if not sample:
        return 0
    expected = dict(
        source.execute(
            f"SELECT id, payload FROM task WHERE id IN ({', '.join('?' * len(sample))})",
            sample,
        ).fetchall()
    )
    rows = await target.fetch("SELECT id, payload FROM task WHERE id = ANY($1::text[])", sample)
    copied: dict[str, bytes] = {row[0]: row[1] for row in rows}
    wrong = sorted(task_id for task_id in sample if copied.get(task_id) != expected[task_id])
    if wrong:
        raise TransferError(f"{len(wrong)} payloads differ after the copy: {wrong[:5]}")
    return len(sample)
