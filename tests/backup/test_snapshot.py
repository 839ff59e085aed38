"""Snapshots taken while the server works, LOCAL archives and sidecars, retention,
and encryption of the archive."""

from __future__ import annotations

import gzip
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tasks_server.backup.archive import CHUNK, sha256_file
from tasks_server.backup.commands import create_backup, restore_backup
from tasks_server.backup.info import BackupError
from tasks_server.store.sqlite.migrate import latest_schema_version
from tests.backup.conftest import add_filler, make_database, settings_for, task_ids
from tests.conftest import Api
from tests.targets import Target, wait_until

REGISTRATIONS = 500
WORKERS = 8


def test_backup_under_load_holds_every_task_acknowledged_before_it(
    start_server: Callable[..., Api], target: Target, tmp_path: Path
) -> None:
    api = start_server(backup_enabled=False)
    owner = api.owner()
    now_payload = {"httpRequest": {"url": target.url("/now"), "method": "POST", "data": {"a": 1}}}
    later_payload = {
        "httpRequest": {"url": target.url("/later"), "method": "GET"},
        "config": {"executionDelay": 3_600_000},
    }
    acknowledged: list[tuple[float, str]] = []
    lock = threading.Lock()
    counter = iter(range(REGISTRATIONS))

    def register() -> None:
        with httpx.Client(base_url=api.base_url, timeout=30) as http:
            for n in counter:
                payload = now_payload if n % 2 else later_payload  # half are sent at once
                reply = http.post("/v1/queues/register", json=payload, headers=owner.headers)
                assert reply.status_code == 201, reply.text
                with lock:
                    acknowledged.append((time.monotonic(), reply.json()["id"]))

    workers = [threading.Thread(target=register) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    wait_until(lambda: len(acknowledged) >= REGISTRATIONS // 3, timeout=30)
    wait_until(lambda: len(target.arrivals_at("/now")) >= 10, timeout=30)  # dispatching too
    started = time.monotonic()
    result = create_backup(api.settings)
    finished = time.monotonic()
    for worker in workers:
        worker.join(timeout=60)
    assert len(acknowledged) == REGISTRATIONS
    assert any(at > finished for at, _ in acknowledged), "the load ended before the backup"

    restored = settings_for(
        tmp_path / "elsewhere", backup_path_dir_sqlite=str(api.settings.backup_dir)
    )
    outcome = restore_backup(restored, result.location)
    with closing(sqlite3.connect(restored.path_sqlite)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        states = dict(conn.execute("SELECT state, count(*) FROM task GROUP BY state").fetchall())
    ids = task_ids(restored.path_sqlite)
    before = {task_id for at, task_id in acknowledged if at < started}
    assert before <= ids, f"{len(before - ids)} acknowledged tasks missing from the backup"
    assert len(ids) == result.info.task_count == outcome.task_count
    assert states.get("SUCCESS", 0) > 0  # tasks had been dispatched when it was taken
    assert outcome.key_checked


def test_local_archive_name_sidecar_and_content(tmp_path: Path) -> None:
    settings, ids = make_database(tmp_path, tasks=3)
    at_ms = 1_737_778_072_123  # 2025-01-25T04:07:52.123Z
    result = create_backup(settings, at_ms=at_ms)

    archive = Path(result.location)
    assert archive.parent == tmp_path / "data" / "backups"  # created beside the database
    assert archive.name == "tasks-20250125T040752Z.db.gz"
    sidecar = msgspec.json.decode(Path(f"{archive}.json").read_bytes())
    assert sidecar == {
        "name": archive.name,
        "created_at": at_ms,
        "size": archive.stat().st_size,
        "sha256": sha256_file(archive),
        "database_sha256": sidecar["database_sha256"],
        "schema_version": latest_schema_version(),
        "task_count": 3,
        "encrypted": False,
    }
    plain = tmp_path / "plain.db"
    plain.write_bytes(gzip.decompress(archive.read_bytes()))  # a plain gzip of a database
    assert sha256_file(plain) == sidecar["database_sha256"]
    assert task_ids(plain) == ids


def test_same_second_gets_a_new_name_and_retention_keeps_the_newest(tmp_path: Path) -> None:
    settings, _ = make_database(tmp_path, tasks=1, backup_retention=3)
    base = 1_737_778_072_000
    names = [Path(create_backup(settings, at_ms=base + n * 1000).location).name for n in range(4)]
    again = create_backup(settings, at_ms=base + 3000)
    assert Path(again.location).name == "tasks-20250125T040755Z-1.db.gz"
    assert again.removed == [names[1]]  # the oldest two are gone, one per backup
    kept = sorted(path.name for path in settings.backup_dir.iterdir())
    assert kept == sorted(
        [f"{name}{suffix}" for name in (*names[2:], again.info.name) for suffix in ("", ".json")]
    )


def test_backup_dir_is_created_and_other_files_are_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "backup" / "dir"
    settings, _ = make_database(
        tmp_path, tasks=1, backup_path_dir_sqlite=str(directory), backup_retention=1
    )
    directory.mkdir(parents=True)
    (directory / "notes.txt").write_text("mine")
    (directory / "other-20200101T000000Z.db.gz").write_bytes(b"another database's backup")
    for n in range(2):
        create_backup(settings, at_ms=1_737_778_072_000 + n * 1000)
    assert sorted(path.name for path in directory.iterdir()) == [
        "notes.txt",
        "other-20200101T000000Z.db.gz",
        "tasks-20250125T040753Z.db.gz",
        "tasks-20250125T040753Z.db.gz.json",
    ]


def test_no_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no database at"):
        create_backup(settings_for(tmp_path))


# ---- encryption ----


def test_encrypted_round_trip_across_chunks(tmp_path: Path) -> None:
    settings, ids = make_database(tmp_path, tasks=4, backup_encrypt=True)
    add_filler(settings.path_sqlite, 3 * CHUNK)  # several sealed chunks
    result = create_backup(settings)
    archive = Path(result.location)
    assert archive.name.endswith(".db.gz.enc") and result.info.encrypted
    content = archive.read_bytes()
    assert content.startswith(b"TSBKENC1")
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(content)

    target = settings_for(tmp_path / "restored", cipher_key=settings.cipher_key)
    outcome = restore_backup(target, str(archive))
    assert task_ids(target.path_sqlite) == ids
    assert outcome.key_checked


def test_encrypted_archive_needs_its_key(tmp_path: Path) -> None:
    settings, _ = make_database(tmp_path, tasks=1, backup_encrypt=True)
    archive = create_backup(settings).location
    other = settings_for(tmp_path / "restored", cipher_key="another-key")
    with pytest.raises(BackupError, match="does not verify"):
        restore_backup(other, archive)
    assert not Path(other.path_sqlite).exists()


@pytest.mark.parametrize("cut", ["in-a-chunk", "at-a-chunk-boundary", "header-only"])
def test_truncated_encrypted_archive_is_refused(tmp_path: Path, cut: str) -> None:
    settings, _ = make_database(tmp_path, tasks=1, backup_encrypt=True)
    add_filler(settings.path_sqlite, 2 * CHUNK)
    archive = Path(create_backup(settings).location)
    Path(f"{archive}.json").unlink()  # so that only the stream itself can tell
    header = 8 + 16 + 7
    length = {
        "in-a-chunk": archive.stat().st_size - 100,
        "at-a-chunk-boundary": header + CHUNK + 16,  # one whole chunk, unflagged
        "header-only": header,
    }[cut]
    archive.write_bytes(archive.read_bytes()[:length])
    target = settings_for(tmp_path / "restored", cipher_key=settings.cipher_key)
    with pytest.raises(BackupError, match="truncated or corrupt"):
        restore_backup(target, str(archive), skip_checksum=True)


def test_encryption_needs_a_key(tmp_path: Path) -> None:
    settings, _ = make_database(tmp_path, tasks=1)
    keyless: Any = msgspec.structs.replace(settings, cipher_key="", backup_encrypt=True)
    (tmp_path / "data" / "cipher.key").unlink(missing_ok=True)
    with pytest.raises(BackupError, match="BACKUP_ENCRYPT=1 needs CIPHER_KEY"):
        create_backup(keyless)
