"""`tasks-server rotate-key`: re-encrypt every sealed column with the current CIPHER_KEY.

Rows are read with CIPHER_KEY, then each of CIPHER_KEY_PREVIOUS, and written
back sealed with CIPHER_KEY, in batches in one pass over the task ids. Each
batch is one write transaction that first checks no live server uses the
database (as `restore` does), so a server started meanwhile stops the pass
between two batches. A value already sealed with CIPHER_KEY is left as it is:
running it again, or after an interruption, finishes the work.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec

from tasks_server.backup import known_secret, live_servers
from tasks_server.codec import SEALED_COLUMNS, TaskCodec
from tasks_server.config import Settings
from tasks_server.crypto import Cipher, DecryptionError
from tasks_server.store import queries

BATCH = 500
_Q = queries.load("sqlite_rotation", {})


class RotationError(Exception):
    """The rotation cannot start, or stopped; the message says why."""


class RotationResult(msgspec.Struct, frozen=True, kw_only=True):
    rows: int  # task rows read
    resealed: int  # rows written back with the current key
    unreadable: list[str]  # ids of rows no configured key opens (left as they are)


def rotate_key(settings: Settings, batch: int = BATCH) -> RotationResult:
    """Re-encrypt every task row with CIPHER_KEY; refuses while a server uses the database."""
    secret = known_secret(settings)
    if secret is None:
        raise RotationError("set CIPHER_KEY (the key to re-encrypt with)")
    database = Path(settings.path_sqlite)
    if not database.exists():
        raise RotationError(f"no database at {database}")
    codec = TaskCodec(Cipher(secret, settings.cipher_key_previous))
    rows = resealed = 0
    unreadable: list[str] = []
    after = ""
    with closing(sqlite3.connect(database, isolation_level=None)) as conn:
        conn.execute("PRAGMA busy_timeout = 5000")
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                servers = live_servers(conn, settings.instance_stale_ms)
                if servers:
                    raise RotationError(
                        f"{database} is in use by a running server ({', '.join(servers)}): "
                        f"stop it first ({resealed} rows were re-encrypted before it started)"
                    )
                found = conn.execute(_Q["sealed_batch"], {"after": after, "limit": batch})
                tasks = found.fetchall()
                for task in tasks:
                    changed = _resealed(codec, task, unreadable)
                    if changed is not None:
                        conn.execute(_Q["reseal_task"], changed)
                        resealed += 1
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            rows += len(tasks)
            if len(tasks) < batch:
                return RotationResult(rows=rows, resealed=resealed, unreadable=unreadable)
            after = tasks[-1][0]


def _resealed(
    codec: TaskCodec, task: tuple[Any, ...], unreadable: list[str]
) -> dict[str, object] | None:
    """The row's columns for reseal_task, or None when it needs no change (or cannot)."""
    task_id, *values = task
    try:
        fresh = [
            codec.reseal(task_id, column, value)
            for column, value in zip(SEALED_COLUMNS, values, strict=True)
        ]
    except DecryptionError:
        unreadable.append(task_id)
        return None
    if all(value is None for value in fresh):
        return None
    columns = {
        column: old if new is None else new
        for column, old, new in zip(SEALED_COLUMNS, values, fresh, strict=True)
    }
    return {"id": task_id, **columns}
