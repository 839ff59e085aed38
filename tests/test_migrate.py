"""`tasks-server migrate --to postgresql://...`: an SQLite install moved to PostgreSQL, as a
user would do it, then served from PostgreSQL with the same key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tasks_server.cli import main
from tests.conftest import Owner, make_settings, running
from tests.database import rows, table_names
from tests.pg import fresh_schema
from tests.targets import Reply, Target

KEY = "migrate-cipher-key"
LATER = 3_600_000


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


def migrate(directory: Path, url: str, **env: str) -> Result:
    values = {
        "PATH_SQLITE": str(directory / "data" / "tasks.db"),
        "CIPHER_KEY": KEY,
        "DATABASE_URL": "",
        **env,
    }
    return CliRunner().invoke(main, ["migrate", "--to", url], env=values)


def body(url: str, **config: Any) -> dict[str, Any]:
    return {
        "httpRequest": {"url": url, "method": "POST", "data": "sealed data"},
        "config": config,
        "metadata": {"tag": "moved"},
    }


def test_an_sqlite_install_moves_to_postgresql_and_runs_there(
    tmp_path: Path, empty_postgres: str, target: Target
) -> None:
    target.script("/done", Reply(200, b"first"))
    sqlite = make_settings(tmp_path, cipher_key=KEY)
    with running(sqlite) as api:
        owner = api.owner("moving-owner")
        done = api.task(owner, body(target.url("/done")))
        api.wait_state(owner, done["id"], "SUCCESS")
        pending = api.task(owner, body(target.url("/pending"), executionDelay=LATER))
        paused = api.task(owner, body(target.url("/paused"), executionDelay=LATER))
        assert api.http.patch(f"/v1/queues/{paused['id']}/pause", headers=owner.headers)
        before = {t["id"]: t for t in api.http.get("/v1/queues", headers=owner.headers).json()}

    result = migrate(tmp_path, empty_postgres)
    assert result.exit_code == 0, result.output
    assert "Copied 1 owners, 3 tasks" in result.output
    assert "payloads compared" in result.output

    on_postgres = make_settings(tmp_path, cipher_key=KEY, database_url=empty_postgres)
    with running(on_postgres) as api:
        moved = Owner(owner.id, owner.key, owner.name)  # the same key still works
        after = {t["id"]: t for t in api.http.get("/v1/queues", headers=moved.headers).json()}
        assert after == before
        view = api.http.get(f"/v1/owners/{owner.name}", headers=moved.headers).json()
        assert view["tasksInQueue"] == 2
        config = api.http.get(f"/v1/queues/{pending['id']}/config", headers=moved.headers)
        assert config.json()["httpRequest"]["data"] == "sealed data"
        assert api.http.post(f"/v1/queues/{pending['id']}/execute", headers=moved.headers)
        assert api.wait_state(moved, pending["id"], "SUCCESS")["statusCode"] == 200
    assert target.arrivals_at("/pending")[0].body == b"sealed data"


def test_migrate_refuses_a_database_that_is_not_empty(tmp_path: Path, empty_postgres: str) -> None:
    with running(make_settings(tmp_path, cipher_key=KEY)) as api:
        api.owner("first-owner")
    assert migrate(tmp_path, empty_postgres).exit_code == 0
    again = migrate(tmp_path, empty_postgres)
    assert again.exit_code == 1
    assert "is not empty (1 owners, 0 tasks): migrate into a new database" in again.output
    on_postgres = make_settings(tmp_path, cipher_key=KEY, database_url=empty_postgres)
    assert rows(on_postgres, "SELECT count(*) FROM owner") == [(1,)]


def test_migrate_refuses_while_a_server_uses_the_sqlite_database(
    tmp_path: Path, empty_postgres: str
) -> None:
    with running(make_settings(tmp_path, cipher_key=KEY)) as api:
        api.owner("busy-owner")
        refused = migrate(tmp_path, empty_postgres)
    assert refused.exit_code == 1
    assert "is in use by a running server" in refused.output
    on_postgres = make_settings(tmp_path, cipher_key=KEY, database_url=empty_postgres)
    assert table_names(on_postgres) == []  # not even the schema was made


def test_migrate_wants_a_postgresql_url_and_an_sqlite_source(tmp_path: Path) -> None:
    wrong = migrate(tmp_path, "mysql://u@h/db")
    assert wrong.exit_code == 2
    assert "--to: expected postgresql://" in wrong.output
    missing = migrate(tmp_path, "postgresql://postgres@127.0.0.1/tasks_server_test")
    assert missing.exit_code == 1
    assert "no SQLite database at" in missing.output
