"""CIPHER_KEY rotation: CIPHER_KEY_PREVIOUS reads old rows; `tasks-server rotate-key` rewrites them.

Real servers on one SQLite file, started one after another with different keys.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tasks_server.cli import main
from tasks_server.codec import SEALED_COLUMNS
from tasks_server.config import Settings
from tasks_server.crypto import Cipher, DecryptionError
from tasks_server.key_rotation import rotate_key
from tests.conftest import Api, Owner, running_api
from tests.targets import Reply, Target, wait_until

OLD, NEW = "old-cipher-key-A", "new-cipher-key-B"
FINAL = ("SUCCESS", "ERROR")
LATER_MS = 3_600_000  # queued for an hour: only `execute` runs it


def payload(target: Target, path: str, delay: int = 1) -> dict[str, Any]:
    return {
        "httpRequest": {"url": target.url(path), "method": "GET"},
        "config": {"executionDelay": delay},
        "metadata": {"team": "ops"},
    }


def rotate(directory: Path, **env: str) -> Result:
    values = {
        "PATH_SQLITE": str(directory / "data" / "tasks.db"),
        "CIPHER_KEY_PREVIOUS": "",
        "BACKUP_ENABLED": "0",
        **env,
    }
    return CliRunner().invoke(main, ["rotate-key"], env=values)


def sealed_rows(directory: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(directory / "data" / "tasks.db")) as conn:
        columns = ", ".join(SEALED_COLUMNS)
        return conn.execute(f"SELECT id, {columns} FROM task ORDER BY id").fetchall()


def task_state(directory: Path, task_id: str) -> str:
    with closing(sqlite3.connect(directory / "data" / "tasks.db")) as conn:
        state: str = conn.execute("SELECT state FROM task WHERE id = ?", (task_id,)).fetchone()[0]
        return state


def written_with_old_key(directory: Path, target: Target) -> tuple[Owner, str, str]:
    """An owner, a finished task (its response stored) and a queued one, all sealed with OLD."""
    with running_api(directory, cipher_key=OLD) as api:
        owner = api.owner()
        done = api.task(owner, payload(target, "/done"))
        api.wait_state(owner, done["id"], *FINAL)
        queued = api.task(owner, payload(target, "/queued", delay=LATER_MS))
    return owner, done["id"], queued["id"]


def assert_readable_and_dispatched(
    api: Api, owner: Owner, target: Target, done_id: str, queued_id: str
) -> None:
    done = api.get(owner, done_id)
    assert done["state"] == "SUCCESS", done
    assert done["metadata"] == {"team": "ops"}
    assert done["response"] == "b2s=", done  # base64 of the stored body "ok"
    assert api.get(owner, queued_id)["metadata"] == {"team": "ops"}
    reply = api.http.post(f"/v1/queues/{queued_id}/execute", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    assert api.wait_state(owner, queued_id, *FINAL)["state"] == "SUCCESS"
    assert len(target.wait_for(1, "/queued")) == 1


def test_cipher_opens_with_a_previous_key_and_seals_with_the_current() -> None:
    sealed = Cipher(OLD).seal(b"x", "id")
    rotated = Cipher(NEW, (OLD,))
    assert rotated.open(sealed, "id") == b"x"
    resealed = rotated.reseal(sealed, "id")
    assert resealed is not None
    assert Cipher(NEW).open(resealed, "id") == b"x"
    assert rotated.reseal(resealed, "id") is None  # already on the current key
    with pytest.raises(DecryptionError, match="CIPHER_KEY"):
        Cipher(NEW).open(sealed, "id")


def test_a_comma_separated_previous_list() -> None:
    settings = Settings.from_env({"CIPHER_KEY_PREVIOUS": "first, second,"})
    assert settings.cipher_key_previous == ("first", "second")


def test_previous_key_reads_and_dispatches_old_rows(tmp_path: Path, target: Target) -> None:
    owner, done_id, queued_id = written_with_old_key(tmp_path, target)
    with running_api(tmp_path, cipher_key=NEW, cipher_key_previous=(OLD,)) as api:
        assert_readable_and_dispatched(api, owner, target, done_id, queued_id)


def test_rotate_key_then_the_new_key_alone_reads_and_dispatches(
    tmp_path: Path, target: Target
) -> None:
    owner, done_id, queued_id = written_with_old_key(tmp_path, target)
    before = sealed_rows(tmp_path)
    result = rotate(tmp_path, CIPHER_KEY=NEW, CIPHER_KEY_PREVIOUS=OLD)
    assert result.exit_code == 0, result.output
    assert "Re-encrypted 2 of 2 tasks" in result.output
    after = sealed_rows(tmp_path)
    cipher = Cipher(NEW)
    for old_row, new_row in zip(before, after, strict=True):
        task_id = new_row[0]
        assert new_row[1] != old_row[1]  # the payload was rewritten
        cipher.open(new_row[1], task_id)  # and the new key alone opens it
    again = rotate(tmp_path, CIPHER_KEY=NEW, CIPHER_KEY_PREVIOUS=OLD)
    assert again.exit_code == 0, again.output
    assert "Re-encrypted 0 of 2 tasks" in again.output
    assert sealed_rows(tmp_path) == after
    with running_api(tmp_path, cipher_key=NEW) as api:
        assert_readable_and_dispatched(api, owner, target, done_id, queued_id)


def test_without_the_previous_key_reading_fails_clearly_and_the_task_stays_queued(
    tmp_path: Path, target: Target
) -> None:
    with running_api(tmp_path, cipher_key=OLD) as api:
        owner = api.owner()
        due = api.task(owner, payload(target, "/queued", delay=4000))
    with running_api(tmp_path, cipher_key=NEW) as api:
        reply = api.http.get(f"/v1/queues/{due['id']}", headers=owner.headers)
        assert reply.status_code == 500, reply.text
        assert "CIPHER_KEY_PREVIOUS" in reply.json()["message"]
        # past its due time the scheduler claimed it, could not read it and kept it
        wait_until(lambda: due["estimateExecutionAt"] / 1000 + 1 < time.time())
        assert target.arrivals == []
        assert task_state(tmp_path, due["id"]) == "RUNNING"
    with running_api(tmp_path, cipher_key=NEW, cipher_key_previous=(OLD,)) as api:
        assert api.wait_state(owner, due["id"], *FINAL)["state"] == "SUCCESS"
        assert len(target.wait_for(1, "/queued")) == 1


def test_rotate_key_without_the_old_key_leaves_the_rows_and_fails(
    tmp_path: Path, target: Target
) -> None:
    _, done_id, queued_id = written_with_old_key(tmp_path, target)
    before = sealed_rows(tmp_path)
    result = rotate(tmp_path, CIPHER_KEY=NEW)
    assert result.exit_code == 1, result.output
    assert "2 tasks open with neither CIPHER_KEY nor CIPHER_KEY_PREVIOUS" in result.output
    assert done_id in result.output and queued_id in result.output
    assert sealed_rows(tmp_path) == before


def test_rotate_key_refuses_while_a_server_uses_the_database(
    tmp_path: Path, target: Target
) -> None:
    with running_api(tmp_path, cipher_key=OLD) as api:
        api.task(api.owner(), payload(target, "/queued", delay=LATER_MS))
        before = sealed_rows(tmp_path)
        result = rotate(tmp_path, CIPHER_KEY=NEW, CIPHER_KEY_PREVIOUS=OLD)
        assert result.exit_code == 1, result.output
        assert "in use by a running server" in result.output
        assert sealed_rows(tmp_path) == before


def test_rotate_key_in_several_batches(tmp_path: Path, target: Target) -> None:
    with running_api(tmp_path, cipher_key=OLD) as api:
        owner = api.owner()
        for _ in range(7):
            api.task(owner, payload(target, "/queued", delay=LATER_MS))
    settings = Settings(
        path_sqlite=str(tmp_path / "data" / "tasks.db"),
        cipher_key=NEW,
        cipher_key_previous=(OLD,),
    )
    result = rotate_key(settings, batch=3)
    assert (result.rows, result.resealed, result.unreadable) == (7, 7, [])
    cipher = Cipher(NEW)
    for row in sealed_rows(tmp_path):
        cipher.open(row[1], row[0])


def test_rotate_key_reseals_the_errors_of_every_attempt(tmp_path: Path, target: Target) -> None:
    target.script("/fails", always=Reply(500, b""))
    with running_api(tmp_path, cipher_key=OLD) as api:
        owner = api.owner()
        body = payload(target, "/fails")
        body["config"] |= {"retry": 1, "retryInterval": 10}
        failed = api.task(owner, body)
        api.wait_state(owner, failed["id"], "ERROR")
    result = rotate(tmp_path, CIPHER_KEY=NEW, CIPHER_KEY_PREVIOUS=OLD)
    assert result.exit_code == 0, result.output
    with running_api(tmp_path, cipher_key=NEW) as api:  # the new key alone
        reply = api.http.get(f"/v1/queues/{failed['id']}/attempts", headers=owner.headers)
        assert reply.status_code == 200, reply.text
        assert [a["error"] for a in reply.json()] == ["HTTP 500", "HTTP 500"]


def test_the_host_filter_finds_rows_of_a_previous_key_and_after_a_rotation(
    tmp_path: Path, target: Target
) -> None:
    owner, done_id, queued_id = written_with_old_key(tmp_path, target)

    def by_host(api: Api) -> set[str]:
        reply = api.http.get("/v1/queues?host=127.0.0.1&limit=100", headers=owner.headers)
        assert reply.status_code == 200, reply.text
        return {task["id"] for task in reply.json()}

    # digests made with OLD: found through CIPHER_KEY_PREVIOUS
    with running_api(tmp_path, cipher_key=NEW, cipher_key_previous=(OLD,)) as api:
        assert by_host(api) == {done_id, queued_id}
    assert rotate(tmp_path, CIPHER_KEY=NEW, CIPHER_KEY_PREVIOUS=OLD).exit_code == 0
    # rotated rows lose their digest; the next server makes it again with the new key
    with running_api(tmp_path, cipher_key=NEW) as api:
        wait_until(lambda: by_host(api) == {done_id, queued_id}, timeout=10)


def test_a_host_digest_is_keyed_and_reads_nothing_back() -> None:
    old, new = Cipher(OLD), Cipher(NEW, (OLD,))
    assert old.index("hooks.example.com") == old.index("hooks.example.com")
    assert old.index("hooks.example.com") != old.index("other.example.com")
    assert new.index("hooks.example.com") != old.index("hooks.example.com")
    assert new.indexes("hooks.example.com") == [
        new.index("hooks.example.com"),
        old.index("hooks.example.com"),
    ]
    assert "example" not in new.index("hooks.example.com")
