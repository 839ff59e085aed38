"""The command-line tools on PostgreSQL: rotate-key works there as on SQLite; backup,
backups and restore refuse and name PostgreSQL's own tools; the schedule stays off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tasks_server.cli import main
from tests.conftest import database_url_for, make_settings, running
from tests.targets import Reply, Target

OLD, NEW = "the-old-cipher-key", "the-new-cipher-key"


@pytest.fixture
def postgres() -> Iterator[str]:
    with database_url_for("postgres") as url:
        yield url


def run(*args: str, url: str, **env: str) -> Result:
    values = {"DATABASE_URL": url, "CIPHER_KEY_PREVIOUS": "", "BACKUP_ENABLED": "0", **env}
    return CliRunner().invoke(main, list(args), env=values)


def test_rotate_key_on_postgresql(tmp_path: Path, postgres: str, target: Target) -> None:
    with running(make_settings(tmp_path, database_url=postgres, cipher_key=OLD)) as api:
        owner = api.owner("rotating-on-pg")
        body = {
            "httpRequest": {"url": target.url("/rotated"), "method": "GET"},
            "config": {"executionDelay": 3_600_000},
            "metadata": {"tag": "kept"},
        }
        task = api.task(owner, body)
        target.script("/fails", always=Reply(503, b""))
        failed = api.task(owner, {"httpRequest": {"url": target.url("/fails"), "method": "GET"}})
        api.wait_state(owner, failed["id"], "ERROR")

        refused = run("rotate-key", url=postgres, CIPHER_KEY=NEW, CIPHER_KEY_PREVIOUS=OLD)
        assert refused.exit_code == 1
        assert "in use by a running server" in refused.output
        assert "***" in refused.output or "postgresql://postgres@" in refused.output

    rotated = run("rotate-key", url=postgres, CIPHER_KEY=NEW, CIPHER_KEY_PREVIOUS=OLD)
    assert rotated.exit_code == 0, rotated.output
    assert "Re-encrypted 2 of 2 tasks" in rotated.output

    with running(make_settings(tmp_path, database_url=postgres, cipher_key=NEW)) as api:
        assert api.get(owner, task["id"])["metadata"] == {"tag": "kept"}
        history = api.http.get(f"/v1/queues/{failed['id']}/attempts", headers=owner.headers)
        assert [a["error"] for a in history.json()] == ["HTTP 503"]
        assert api.http.post(f"/v1/queues/{task['id']}/execute", headers=owner.headers)
        assert api.wait_state(owner, task["id"], "SUCCESS")["statusCode"] == 200


@pytest.mark.parametrize("command", [["backup"], ["backups"], ["restore", "x.db.gz"]])
def test_backups_refuse_on_postgresql_and_name_what_to_use(
    postgres: str, command: list[str]
) -> None:
    result = run(*command, url=postgres, CIPHER_KEY=OLD)
    assert result.exit_code == 1
    assert "pg_dump --format=custom" in result.output
    assert "pg_restore" in result.output
    assert "Traceback" not in result.output


def test_a_server_on_postgresql_runs_without_the_backup_schedule(
    tmp_path: Path, postgres: str
) -> None:
    settings = make_settings(
        tmp_path,
        database_url=postgres,
        backup_enabled=True,
        backup_cron_pattern_sqlite="* * * * * *",
    )
    with running(settings) as api:
        assert api.http.get("/status").status_code == 200
        api.owner("no-backups-here")
    assert not settings.backup_dir.exists()
    assert not Path(settings.path_sqlite).exists()  # and no SQLite file was written
