"""Restore: checks before anything is replaced, the database kept aside, and the
refusal while a server (or any program) has the database open."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import msgspec
import pytest

from tasks_server.backup.commands import create_backup, restore_backup
from tasks_server.backup.info import BackupError
from tasks_server.config import Settings
from tests.backup.conftest import (
    LATER,
    add_tasks,
    file_sha256,
    make_database,
    serving,
    settings_for,
    task_ids,
)
from tests.served import Served
from tests.targets import Reply, Target, wait_until


def backed_up(tmp_path: Path) -> tuple[Settings, Path, set[str]]:
    """A database with 3 tasks, its backup, then 2 more tasks added after the backup."""
    settings, first = make_database(tmp_path, tasks=3)
    archive = Path(create_backup(settings).location)
    with serving(settings) as api:
        add_tasks(api, api.owner("later-owner"), 2)
    return settings, archive, first


def test_restore_replaces_the_database_and_keeps_the_previous_one(tmp_path: Path) -> None:
    settings, archive, first = backed_up(tmp_path)
    database = Path(settings.path_sqlite)
    current = task_ids(database)
    assert len(current) == 5

    result = restore_backup(settings, str(archive))
    assert task_ids(database) == first
    previous = Path(f"{database}.before-restore")
    assert result.previous == str(previous)
    assert task_ids(previous) == current
    assert not Path(f"{database}-wal").exists()

    # the restored database serves: its tasks are there, and new ones can be added
    with serving(settings) as api:
        owner = api.owner("after-restore")
        api.task(owner, LATER)
    assert len(task_ids(database)) == 4


def test_restore_by_name_from_the_backup_directory(tmp_path: Path) -> None:
    settings, archive, first = backed_up(tmp_path)
    restore_backup(settings, archive.name)
    assert task_ids(settings.path_sqlite) == first


def test_restore_of_an_unknown_name_is_a_clear_error(tmp_path: Path) -> None:
    settings, _, _ = backed_up(tmp_path)
    with pytest.raises(BackupError, match=r"no backup file tasks-nope\.db\.gz"):
        restore_backup(settings, "tasks-nope.db.gz")


def corrupt(archive: Path) -> None:
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))


def truncate(archive: Path) -> None:
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])


def drop_sidecar(archive: Path) -> None:
    Path(f"{archive}.json").unlink()


def damage_pages(archive: Path) -> None:
    """A valid gzip of a database whose b-tree pages are scrambled (no sidecar to tell)."""
    data = bytearray(gzip.decompress(archive.read_bytes()))
    for offset in range(2 * 4096 + 8, 5 * 4096, 7):
        data[offset] ^= 0x5A
    archive.write_bytes(gzip.compress(bytes(data)))
    drop_sidecar(archive)


def damage_an_index(archive: Path) -> None:
    """A readable database whose index disagrees with its table: integrity_check says so."""
    data = bytearray(gzip.decompress(archive.read_bytes()))
    probe = archive.with_name("probe.db")
    probe.write_bytes(data)
    with closing(sqlite3.connect(probe)) as conn:
        root = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'task_owner_created'"
        ).fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    probe.unlink()
    data[root * page_size - 1] ^= 0x01  # the rowid at the end of the index's last cell
    archive.write_bytes(gzip.compress(bytes(data)))
    drop_sidecar(archive)


def append_garbage(archive: Path) -> None:
    archive.write_bytes(archive.read_bytes() + b"trailing bytes")
    drop_sidecar(archive)


def garble_sidecar(archive: Path) -> None:
    Path(f"{archive}.json").write_text("{not json")


def not_a_database(archive: Path) -> None:
    archive.write_bytes(gzip.compress(b"hello, this is not SQLite" * 1000))
    drop_sidecar(archive)


@pytest.mark.parametrize(
    ("damage", "skip_checksum", "message"),
    [
        (corrupt, False, "does not match its SHA-256 checksum"),
        (truncate, False, "is truncated or corrupt"),
        (lambda a: (corrupt(a), drop_sidecar(a)), True, "the archive is corrupt"),
        (lambda a: (truncate(a), drop_sidecar(a)), True, "the archive is truncated"),
        (drop_sidecar, False, "has no sidecar"),
        (damage_pages, True, r"not a readable SQLite database \(database disk image"),
        (damage_an_index, True, "fails PRAGMA integrity_check: row 1 missing from index"),
        (not_a_database, True, "not a readable SQLite database"),
        (append_garbage, True, "has data after its end"),
        (garble_sidecar, False, "sidecar .* is unreadable"),
    ],
    ids=[
        "corrupt",
        "truncated",
        "corrupt-no-sidecar",
        "truncated-no-sidecar",
        "no-sidecar",
        "damaged-pages",
        "damaged-index",
        "not-sqlite",
        "trailing-data",
        "garbled-sidecar",
    ],
)
def test_a_bad_archive_is_refused_and_the_database_left_untouched(
    tmp_path: Path,
    damage: Callable[[Path], object],
    skip_checksum: bool,
    message: str,
) -> None:
    settings, archive, _ = backed_up(tmp_path)
    database = Path(settings.path_sqlite)
    before = file_sha256(database)
    damage(archive)
    with pytest.raises(BackupError, match=message):
        restore_backup(settings, str(archive), skip_checksum=skip_checksum)
    assert file_sha256(database) == before
    assert len(task_ids(database)) == 5
    assert not Path(f"{database}.before-restore").exists()
    assert [p.name for p in database.parent.iterdir() if p.name.startswith(".restore-")] == []


def test_an_archive_without_sidecar_restores_with_skip_checksum(tmp_path: Path) -> None:
    settings, archive, first = backed_up(tmp_path)
    drop_sidecar(archive)
    restore_backup(settings, str(archive), skip_checksum=True)
    assert task_ids(settings.path_sqlite) == first


def test_a_backup_written_with_another_cipher_key_is_refused(tmp_path: Path) -> None:
    _, archive, _ = backed_up(tmp_path)
    target = settings_for(tmp_path / "other", cipher_key="not-the-key")
    with pytest.raises(BackupError, match="encrypted with another CIPHER_KEY"):
        restore_backup(target, str(archive))
    assert not Path(target.path_sqlite).exists()


def test_a_backup_from_before_a_key_rotation_restores_with_the_previous_key(
    tmp_path: Path,
) -> None:
    settings, archive, first = backed_up(tmp_path)
    target = settings_for(
        tmp_path / "other", cipher_key="the-new-key", cipher_key_previous=(settings.cipher_key,)
    )
    restore_backup(target, str(archive))
    assert task_ids(target.path_sqlite) == first


def test_restore_is_refused_while_a_server_runs_on_the_database(tmp_path: Path) -> None:
    settings, archive, _ = backed_up(tmp_path)
    database = Path(settings.path_sqlite)
    with serving(settings):
        before = len(task_ids(database))
        with pytest.raises(BackupError, match=r"in use by a running server \(pid \d+ on "):
            restore_backup(settings, str(archive))
        assert len(task_ids(database)) == before == 5


def test_restore_is_refused_while_any_program_has_the_database_open(tmp_path: Path) -> None:
    settings, archive, _ = backed_up(tmp_path)
    database = Path(settings.path_sqlite)
    with closing(sqlite3.connect(database)) as other:
        other.execute("SELECT count(*) FROM task").fetchone()
        with pytest.raises(BackupError, match="is in use"):
            restore_backup(settings, str(archive))
    assert len(task_ids(database)) == 5


def test_a_killed_server_does_not_block_restore(
    tmp_path: Path, serve_process: Callable[..., Served]
) -> None:
    settings, archive, first = backed_up(tmp_path)
    # its heartbeat stays "recent" for a minute: only its pid can tell it is gone
    server = serve_process(BACKUP_ENABLED="0", INSTANCE_STALE_MS="60000")
    assert settings.path_sqlite == str(tmp_path / "data" / "tasks.db")  # the one it serves
    with pytest.raises(BackupError, match=f"pid {server.proc.pid} on "):
        restore_backup(settings, str(archive))
    server.kill()
    restore_backup(settings, str(archive))
    assert task_ids(settings.path_sqlite) == first


def test_restore_onto_a_missing_database(tmp_path: Path) -> None:
    settings, archive, first = backed_up(tmp_path)
    kept = tmp_path / "kept.db.gz"
    shutil.copy(archive, kept)
    shutil.copy(f"{archive}.json", f"{kept}.json")
    database = Path(settings.path_sqlite)
    for path in database.parent.glob("tasks.db*"):
        path.unlink()
    result = restore_backup(settings, str(kept))
    assert result.previous is None
    assert task_ids(database) == first


def test_a_task_in_flight_at_backup_time_is_sent_again_after_restore(
    tmp_path: Path, target: Target
) -> None:
    target.script("/slow", Reply(delay=3), always=Reply())
    settings = settings_for(tmp_path)
    with serving(settings) as api:
        owner = api.owner()
        task = api.task(owner, {"httpRequest": {"url": target.url("/slow"), "method": "GET"}})
        wait_until(lambda: target.arrivals_at("/slow"))  # in flight now
        archive = create_backup(settings).location

    restored = settings_for(tmp_path / "restored", backup_path_dir_sqlite=str(settings.backup_dir))
    restore_backup(restored, archive)
    with serving(restored) as api:
        wait_until(lambda: len(target.arrivals_at("/slow")) == 2, timeout=10)
        assert api.wait_state(owner, task["id"], "SUCCESS")["statusCode"] == 200


def test_without_a_key_a_plain_backup_restores_unchecked_and_an_encrypted_one_is_refused(
    tmp_path: Path,
) -> None:
    settings, archive, first = backed_up(tmp_path)
    keyless = settings_for(tmp_path / "keyless", cipher_key="")
    assert restore_backup(keyless, str(archive)).key_checked is False
    assert task_ids(keyless.path_sqlite) == first

    encrypted = create_backup(msgspec.structs.replace(settings, backup_encrypt=True)).location
    again = settings_for(tmp_path / "keyless-again", cipher_key="")
    with pytest.raises(BackupError, match="the backup is encrypted: set the CIPHER_KEY"):
        restore_backup(again, encrypted)


def test_a_damaged_database_is_replaced_and_kept_aside(tmp_path: Path) -> None:
    settings, archive, first = backed_up(tmp_path)
    database = Path(settings.path_sqlite)
    database.write_bytes(b"this database was damaged" * 200)
    result = restore_backup(settings, str(archive))
    assert task_ids(database) == first
    assert Path(f"{result.previous}").read_bytes().startswith(b"this database was damaged")


def test_a_wal_left_without_its_database_is_moved_aside(tmp_path: Path) -> None:
    settings, archive, first = backed_up(tmp_path)
    database = Path(settings.path_sqlite)
    database.unlink()
    Path(f"{database}-wal").write_bytes(b"a write-ahead log of another database")
    restore_backup(settings, str(archive))
    assert not Path(f"{database}-wal").exists()
    assert Path(f"{database}.before-restore-wal").exists()
    assert task_ids(database) == first
