"""What a backup is: its description, where it is kept, how its steps report progress,
and the error a person reads when one cannot be done."""

from __future__ import annotations

from typing import Protocol

import msgspec


class BackupError(Exception):
    """A backup, listing or restore cannot be done; the message says why, for a person."""


class BackupInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a backup holds: its sidecar JSON (LOCAL) or its object metadata."""

    name: str
    created_at: int  # ms since the epoch, UTC
    size: int  # bytes of the archive as stored
    sha256: str  # of the archive as stored
    database_sha256: str  # of the database inside
    schema_version: int
    task_count: int
    encrypted: bool


class StoredBackup(msgspec.Struct, frozen=True, kw_only=True):
    """A backup found in a target; `info` is None when its sidecar is missing."""

    name: str
    location: str
    size: int
    info: BackupInfo | None


class Progress(Protocol):
    """Told how far a long step is: `done` of `total` bytes of the step `phase`."""

    def __call__(self, phase: str, done: int, total: int) -> None: ...


def no_progress(phase: str, done: int, total: int) -> None:
    pass
