"""`tasks-server rotate-key`: re-encrypt every sealed column with the current CIPHER_KEY.

Rows are read with CIPHER_KEY, then each of CIPHER_KEY_PREVIOUS, and written
back sealed with CIPHER_KEY, in batches in one pass over the task ids. Each
batch is one write transaction of the store that first checks no live server
uses the database (as `restore` does), so a server started meanwhile stops
the pass between two batches. A value already sealed with CIPHER_KEY is left
as it is: running it again, or after an interruption, finishes the work.
"""

from __future__ import annotations

import asyncio

import msgspec

from tasks_server.codec import SEALED_COLUMNS, TaskCodec
from tasks_server.config import Settings
from tasks_server.crypto import Cipher, DecryptionError, find_secret
from tasks_server.model.records import SealedColumns
from tasks_server.model.timing import now_ms
from tasks_server.store import open_store
from tasks_server.store.base import InUse, StoreMissing

BATCH = 500


class RotationError(Exception):
    """The rotation cannot start, or stopped; the message says why."""


class RotationResult(msgspec.Struct, frozen=True, kw_only=True):
    rows: int  # task rows read
    resealed: int  # rows written back with the current key
    unreadable: list[str]  # ids of rows no configured key opens (left as they are)


def rotate_key(settings: Settings, batch: int = BATCH) -> RotationResult:
    """Re-encrypt every task row with CIPHER_KEY; refuses while a server uses the database."""
    secret = find_secret(settings.cipher_key, settings.data_dir)
    if secret is None:
        raise RotationError("set CIPHER_KEY (the key to re-encrypt with)")
    codec = TaskCodec(Cipher(secret, settings.cipher_key_previous))
    return asyncio.run(_rotate(settings, codec, batch))


async def _rotate(settings: Settings, codec: TaskCodec, batch: int) -> RotationResult:
    store = open_store(settings)
    try:
        await store.open(create=False)
    except StoreMissing as exc:
        raise RotationError(str(exc)) from None
    rows = resealed = 0
    unreadable: list[str] = []

    def reseal(task: SealedColumns) -> SealedColumns | None:
        nonlocal resealed
        fresh = _resealed(codec, task, unreadable)
        if fresh is not None:
            resealed += 1
        return fresh

    after = ""
    try:
        while True:
            try:
                ids = await store.reseal_tasks(
                    after, batch, reseal, now=now_ms(), stale_ms=settings.instance_stale_ms
                )
            except InUse as exc:
                raise RotationError(
                    f"{exc}: stop it first ({resealed} rows were re-encrypted before it started)"
                ) from None
            rows += len(ids)
            if len(ids) < batch:
                return RotationResult(rows=rows, resealed=resealed, unreadable=unreadable)
            after = ids[-1]
    finally:
        await store.close()


def _resealed(codec: TaskCodec, task: SealedColumns, unreadable: list[str]) -> SealedColumns | None:
    """The row sealed with the current key, or None when it needs no change (or cannot)."""
    values = [getattr(task, column) for column in SEALED_COLUMNS]
    try:
        fresh = [
            codec.reseal(task.id, column, value)
            for column, value in zip(SEALED_COLUMNS, values, strict=True)
        ]
        # an attempt's error is sealed as the task's error is
        attempts = [
            (number, codec.reseal(task.id, "error", error)) for number, error in task.attempt_errors
        ]
    except DecryptionError:
        unreadable.append(task.id)
        return None
    if all(value is None for value in fresh) and all(new is None for _, new in attempts):
        return None
    columns = {
        column: old if new is None else new
        for column, old, new in zip(SEALED_COLUMNS, values, fresh, strict=True)
    }
    resealed = tuple((number, new) for number, new in attempts if new is not None)
    return SealedColumns(id=task.id, **columns, attempt_errors=resealed)
