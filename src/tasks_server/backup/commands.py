"""What `tasks-server backup`, `backups` and `restore` do (and the schedule's backups)."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from tasks_server.backup.archive import pack, sha256_file, unpack
from tasks_server.backup.info import (
    BackupError,
    BackupInfo,
    Progress,
    StoredBackup,
    no_progress,
)
from tasks_server.backup.names import backup_name
from tasks_server.backup.targets import LocalTarget, Target, target_for
from tasks_server.config import Settings
from tasks_server.crypto import Cipher, DecryptionError, find_secret
from tasks_server.store import open_snapshots
from tasks_server.store.base import InUse, SnapshotError

log = logging.getLogger(__name__)


class BackupResult(msgspec.Struct, frozen=True, kw_only=True):
    info: BackupInfo
    location: str
    removed: list[str]  # names deleted by retention
    seconds: float


class RestoreResult(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    database: str
    previous: str | None  # where the replaced database was kept
    schema_version: int
    task_count: int
    key_checked: bool  # a task payload was opened with the configured CIPHER_KEY


@contextmanager
def _refusals() -> Iterator[None]:
    """What the database says against a snapshot or a swap, as a BackupError."""
    try:
        yield
    except InUse as exc:
        raise BackupError(f"{exc}: stop it first") from None
    except SnapshotError as exc:
        raise BackupError(str(exc)) from None


def create_backup(settings: Settings, at_ms: int | None = None) -> BackupResult:
    """Take one backup now (named after `at_ms`, default now), store it, apply retention."""
    started = time.monotonic()
    with _refusals():
        snapshots = open_snapshots(settings)
    target = target_for(settings)
    secret = (
        find_secret(settings.cipher_key, settings.data_dir) if settings.backup_encrypt else None
    )
    if settings.backup_encrypt and secret is None:
        raise BackupError("BACKUP_ENCRYPT=1 needs CIPHER_KEY (or the key file beside the database)")
    created_at = at_ms if at_ms is not None else time.time_ns() // 1_000_000
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=snapshots.scratch_dir()) as workdir:
        snapshot = Path(workdir) / "snapshot.db"
        with _refusals():
            facts = snapshots.take(snapshot)
        database_sha256 = sha256_file(snapshot)
        archive = Path(workdir) / "archive"
        size, sha256 = pack(snapshot, archive, secret)
        snapshot.unlink()
        info = BackupInfo(
            name=backup_name(snapshots.stem, created_at, secret is not None),
            created_at=created_at,
            size=size,
            sha256=sha256,
            database_sha256=database_sha256,
            schema_version=facts.schema_version,
            task_count=facts.task_count,
            encrypted=secret is not None,
        )
        location, info = target.publish(archive, info)
    try:
        removed = apply_retention(target, settings.backup_retention)
    except (BackupError, OSError) as exc:
        # the backup itself is safe; the old ones go at the next success
        log.warning("Backup retention failed: %s", exc)
        removed = []
    return BackupResult(
        info=info, location=location, removed=removed, seconds=time.monotonic() - started
    )


def apply_retention(target: Target, keep: int) -> list[str]:
    """Delete all but the `keep` newest backups; the names deleted."""
    old = [found.name for found in target.entries()[keep:]]
    target.delete(old)
    return old


def list_backups(settings: Settings) -> tuple[str, list[StoredBackup]]:
    """(where, backups newest first) for the configured method."""
    with _refusals():
        open_snapshots(settings)
    target = target_for(settings)
    return target.describe(), target.entries()


def restore_backup(
    settings: Settings,
    source: str,
    *,
    skip_checksum: bool = False,
    progress: Progress = no_progress,
) -> RestoreResult:
    """Replace the database with the backup `source` (a local file, a name in the backup
    directory, or an object key), after every check passed; the database in place is
    kept as `<name>.before-restore`. Refuses while a server uses the database."""
    with _refusals():
        snapshots = open_snapshots(settings)
        snapshots.refuse_if_served(settings.instance_stale_ms)
    target: Target = LocalTarget(settings)
    if not Path(source).is_file() and settings.backup_method_sqlite == "OBJECT_STORAGE":
        target = target_for(settings)
    secret = find_secret(settings.cipher_key, settings.data_dir)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=snapshots.scratch_dir()) as workdir:
        archive, location, info = target.fetch(source, Path(workdir), progress)
        _verify_archive(archive, info, skip_checksum, progress)
        restored = Path(workdir) / "restored.db"
        database_sha256 = unpack(archive, restored, secret, progress)
        if info is not None and database_sha256 != info.database_sha256:
            raise BackupError("the database inside the archive does not match its checksum")
        restored_size = restored.stat().st_size
        progress("check", 0, restored_size)
        with _refusals():
            facts = snapshots.check(restored)
        sample = snapshots.sealed_sample(restored)
        key_checked = _check_key(sample, secret, settings.cipher_key_previous)
        progress("check", restored_size, restored_size)
        with _refusals():
            previous = snapshots.swap_in(restored, settings.instance_stale_ms)
    return RestoreResult(
        source=location,
        database=snapshots.database,
        previous=str(previous) if previous else None,
        schema_version=facts.schema_version,
        task_count=facts.task_count,
        key_checked=key_checked,
    )


def _check_key(
    sample: tuple[str, bytes] | None, secret: str | None, previous: tuple[str, ...]
) -> bool:
    """Open one task payload with the configured keys; False when there is none to try."""
    if sample is None or secret is None:
        return False
    task_id, payload = sample
    try:
        Cipher(secret, previous).open(payload, task_id)
    except DecryptionError:
        raise BackupError(
            "the backup's tasks were encrypted with another CIPHER_KEY: set the key they "
            "were written with (in CIPHER_KEY or CIPHER_KEY_PREVIOUS, or put back its "
            "cipher.key file) and restore again"
        ) from None
    return True


def _verify_archive(
    archive: Path, info: BackupInfo | None, skip_checksum: bool, progress: Progress
) -> None:
    if info is None:
        if not skip_checksum:
            raise BackupError(
                f"{archive.name} has no sidecar (or object metadata) with its checksum: "
                "restore it with --skip-checksum to rely on the gzip CRC and integrity_check"
            )
        return
    size = archive.stat().st_size
    if size != info.size:
        raise BackupError(
            f"{archive.name} is {size} bytes but was written as {info.size}: "
            "it is truncated or corrupt"
        )
    if sha256_file(archive, progress) != info.sha256:
        raise BackupError(f"{archive.name} does not match its SHA-256 checksum: it is corrupt")
