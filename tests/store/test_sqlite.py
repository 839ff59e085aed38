"""The SQLite store: the file and its schema, migrations, encryption at rest, the
generated cipher key, and group commit (many writes, one transaction)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import struct
from pathlib import Path
from typing import Any

import msgspec
import pytest

import tests.conftest as conftest
from tasks_server.crypto import Cipher, load_or_create_secret
from tasks_server.model.lifecycle import State
from tasks_server.model.records import AttemptRecord, TaskRow
from tasks_server.store.sqlite.migrate import apply_migrations
from tests.conftest import running
from tests.store.helpers import FAR, store_with_owner, task_row
from tests.targets import Reply, Target

MARKER = "Zq7-MARKER-8xW"


def read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def far_task(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "httpRequest": {"url": url, "method": "GET"},
        "config": {"executionDelay": FAR},
        **extra,
    }


# ---- file, schema, migrations ----


def test_database_is_created_on_first_start_with_wal(tmp_path: Path) -> None:
    settings = conftest.make_settings(tmp_path)
    db = Path(settings.path_sqlite)
    assert not db.parent.exists()
    with running(settings) as api:
        assert db.is_file()
        with read_only(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"owner", "task", "instance", "schema_migration"} <= tables
        assert api.http.get("/status").status_code == 200
        api.owner()  # the schema takes writes


def test_migrations_are_recorded_and_applied_once(tmp_path: Path) -> None:
    settings = conftest.make_settings(tmp_path)
    db = Path(settings.path_sqlite)
    with running(settings) as api:
        owner = api.owner()
    with read_only(db) as conn:
        first = conn.execute("SELECT version, name, applied_at FROM schema_migration").fetchall()
    assert [(version, name) for version, name, _ in first] == [
        (1, "0001_initial.sql"),
        (2, "0002_backups.sql"),
        (3, "0003_queue_counter_on_insert.sql"),
        (4, "0004_finished_index.sql"),
        (5, "0005_attempts_and_counts.sql"),
    ]
    # a second start applies nothing and keeps the data
    with running(settings) as api:
        reply = api.http.get(f"/v1/owners/{owner.name}", headers=owner.headers)
        assert reply.status_code == 200
    with read_only(db) as conn:
        again = conn.execute("SELECT version, name, applied_at FROM schema_migration").fetchall()
    assert again == first
    # and so does applying them by hand
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert apply_migrations(conn) == []
        assert conn.execute("SELECT COUNT(*) FROM owner").fetchone()[0] == 1
    finally:
        conn.close()


def test_apply_migrations_on_an_empty_file(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "fresh.db", isolation_level=None)
    try:
        assert apply_migrations(conn) == [
            "0001_initial.sql",
            "0002_backups.sql",
            "0003_queue_counter_on_insert.sql",
            "0004_finished_index.sql",
            "0005_attempts_and_counts.sql",
        ]
        assert apply_migrations(conn) == []
        rows = conn.execute("SELECT version FROM schema_migration").fetchall()
        assert rows == [(1,), (2,), (3,), (4,), (5,)]
    finally:
        conn.close()


# ---- encryption at rest ----


def _files_of(db: Path) -> dict[str, bytes]:
    found = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            found[path.name] = path.read_bytes()
    return found


def test_task_data_is_encrypted_on_disk(tmp_path: Path, target: Target) -> None:
    settings = conftest.make_settings(tmp_path)
    db = Path(settings.path_sqlite)
    marker = MARKER.encode()
    target.script(f"/{MARKER}", Reply(200, b"response " + marker))
    with running(settings) as api:
        owner = api.owner()
        spec = {
            "httpRequest": {
                "url": target.url(f"/{MARKER}"),
                "method": "POST",
                "headers": {"X-Marker": MARKER},
                "data": f"body {MARKER}",
                "authBasic": {"username": "user", "password": MARKER},
            },
            "config": {"executionDelay": 1},
            "metadata": {"tag": MARKER},
        }
        task = api.task(owner, spec)
        pending = api.task(owner, {**spec, "config": {"executionDelay": FAR}})
        done = api.wait_state(owner, task["id"], "SUCCESS")
        (arrival,) = target.wait_for(1)
        assert arrival.body == f"body {MARKER}".encode()  # what was sent is what was stored
        assert MARKER in api.get(owner, done["id"])["metadata"]["tag"]
        files = _files_of(db)
        assert f"{db.name}-wal" in files  # the rows are in the WAL while it runs
        for name, content in files.items():
            assert marker not in content, f"{MARKER} in clear in {name}"
        # the scheduling columns are in clear
        with read_only(db) as conn:
            state = conn.execute("SELECT state FROM task WHERE id = ?", (pending["id"],))
            assert state.fetchone()[0] == "RUNNING"
    for name, content in _files_of(db).items():
        assert marker not in content, f"{MARKER} in clear in {name} after stop"


def test_transport_errors_are_encrypted_on_disk(tmp_path: Path) -> None:
    """libcurl's message names the host, which is part of the sealed request."""
    settings = conftest.make_settings(tmp_path)
    db = Path(settings.path_sqlite)
    host = f"{MARKER.lower()}.invalid"
    with running(settings) as api:
        owner = api.owner()
        task = api.task(owner, {"httpRequest": {"url": f"http://{host}/cb", "method": "GET"}})
        done = api.wait_state(owner, task["id"], "ERROR")
        assert host in done["error"]  # the owner reads it back in clear
        for name, content in _files_of(db).items():
            assert host.encode() not in content, f"{host} in clear in {name}"


# ---- the cipher key ----


def test_cipher_key_file_is_created_0600_and_reused(tmp_path: Path, target: Target) -> None:
    settings = conftest.make_settings(tmp_path, cipher_key="")
    key_file = Path(settings.path_sqlite).parent / "cipher.key"
    with running(settings) as api:
        assert key_file.is_file()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        secret = key_file.read_text().strip()
        assert len(secret) >= 32
        owner = api.owner()
        task = api.task(owner, {**far_task(target.url("/kept")), "metadata": {"a": "b"}})
    with running(settings) as api:
        assert key_file.read_text().strip() == secret
        found = api.get(owner, task["id"])
        assert found["metadata"] == {"a": "b"}
        config = api.http.get(f"/v1/queues/{task['id']}/config", headers=owner.headers)
        assert config.status_code == 200
        assert config.json()["httpRequest"]["url"] == target.url("/kept")
        # and it still runs as stored
        executed = api.http.post(f"/v1/queues/{task['id']}/execute", headers=owner.headers)
        assert executed.status_code == 200
        assert api.wait_state(owner, task["id"], "SUCCESS")["statusCode"] == 200
    assert target.arrivals_at("/kept")


def test_configured_cipher_key_writes_no_key_file(tmp_path: Path) -> None:
    settings = conftest.make_settings(tmp_path, cipher_key="a-configured-key")
    with running(settings) as api:
        api.owner()
    assert not (Path(settings.path_sqlite).parent / "cipher.key").exists()


def test_generated_key_is_complete_when_read_by_a_second_process(tmp_path: Path) -> None:
    first = load_or_create_secret("", tmp_path)
    second = load_or_create_secret("", tmp_path)
    assert first == second
    assert len(first) == 64
    sealed = Cipher(first).seal(b"x", "id")
    assert Cipher(second).open(sealed, "id") == b"x"
    assert [p.name for p in tmp_path.iterdir()] == ["cipher.key"]  # no temp file left


def test_empty_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cipher.key").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_or_create_secret("", tmp_path)


# ---- group commit, on the store itself ----


def wal_commits(db: Path) -> tuple[bytes, int]:
    """(salts, commit frames) of the current generation of the WAL file."""
    wal = Path(f"{db}-wal")
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return b"", 0
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    commits, offset = 0, 32
    while offset + 24 + page_size <= len(data):
        header = data[offset : offset + 24]
        if header[8:16] != salts:
            break
        if struct.unpack(">I", header[4:8])[0]:  # database size after commit: a commit frame
            commits += 1
        offset += 24 + page_size
    return salts, commits


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    db = tmp_path / "group.db"
    async with store_with_owner(db) as (store, owner):
        salts, before = wal_commits(db)
        # few enough writes that even one commit each would not fill the WAL
        # (1000 pages) and restart it, which would hide commits from the count
        count = 100
        await asyncio.gather(*(store.insert_task(task_row(owner.id), 1000) for _ in range(count)))
        salts_after, after = wal_commits(db)
        assert salts_after == salts, "the WAL was restarted: the count would be wrong"
        # one commit (one fsync) per writer group, not one per write
        assert 1 <= after - before <= count // 4, after - before
        found = await store.get_owner(owner.id)
        assert found is not None
        assert found.tasks_in_queue == count


async def test_each_write_is_answered_after_its_commit(tmp_path: Path) -> None:
    db = tmp_path / "visible.db"
    async with store_with_owner(db) as (store, owner):
        rows = [task_row(owner.id) for _ in range(50)]

        async def insert_then_look(row: TaskRow) -> bool:
            await store.insert_task(row, 1000)
            # another connection sees the row as soon as the caller is answered
            with read_only(db) as conn:
                found = conn.execute("SELECT 1 FROM task WHERE id = ?", (row.id,)).fetchone()
            return found is not None

        assert all(await asyncio.gather(*(insert_then_look(row) for row in rows)))


async def test_a_failing_write_does_not_undo_the_rest_of_its_group(tmp_path: Path) -> None:
    db = tmp_path / "savepoint.db"
    async with store_with_owner(db) as (store, owner):
        rows = [task_row(owner.id) for _ in range(20)]
        duplicates = [task_row(owner.id, row.id) for row in rows[:5]]
        results = await asyncio.gather(
            *(store.insert_task(row, 1000) for row in rows + duplicates),
            return_exceptions=True,
        )
        assert results[:20] == [None] * 20
        assert all(isinstance(r, sqlite3.IntegrityError) for r in results[20:])
        found = await store.get_owner(owner.id)
        assert found is not None
        assert found.tasks_in_queue == 20  # the failed ones gave their slot back
        with read_only(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM task").fetchone()[0] == 20


def test_key_file_is_not_readable_by_others_even_with_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_secret("", tmp_path / "data")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "data" / "cipher.key").stat().st_mode) == 0o600


async def test_outcomes_of_any_batch_size_are_written_where_the_lease_holds(tmp_path: Path) -> None:
    db = tmp_path / "outcomes.db"
    async with store_with_owner(db) as (store, owner):
        # with the stale record, 343 = 256 + 64 + 16 + 4 + 3 x 1: every statement shape
        count = 342
        rows = [msgspec.structs.replace(task_row(owner.id), due_at=1) for _ in range(count)]
        await asyncio.gather(*(store.insert_task(row, 1000) for row in rows))
        claim = await store.claim_due_tasks(2, 1000, "instance", 77)
        assert len(claim.tasks) == count
        records = [
            AttemptRecord(
                id=task.id,
                lease_token=task.lease_token,
                state=State.SUCCESS if n % 2 else State.RUNNING,
                status_code=200 + n % 2,
                response=f"body {n}".encode(),
                error=None,
                retry_count=n % 2,
                estimate_next_retry_at=n,
                estimate_end_at=n * 10,
                due_at=None if n % 2 else 5000 + n,
            )
            for n, task in enumerate(claim.tasks)
        ]
        stale = msgspec.structs.replace(records[0], lease_token=78, state=State.ERROR)
        assert await store.record_attempts([*records, stale]) == count
        with read_only(db) as conn:
            stored = {
                row[0]: row[1:]
                for row in conn.execute(
                    "SELECT id, state, status_code, response, retry_count, estimate_next_retry_at,"
                    " estimate_end_at, due_at, lease_token, lease_owner FROM task"
                )
            }
        for n, record in enumerate(records):
            assert stored[record.id] == (
                record.state,
                record.status_code,
                record.response,
                record.retry_count,
                n,
                n * 10,
                record.due_at,
                None,
                None,
            )
        found = await store.get_owner(owner.id)
        assert found is not None
        assert found.tasks_in_queue == count - count // 2  # the trigger ran for each one done
        assert await store.record_attempts([]) == 0
