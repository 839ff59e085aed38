"""`tasks-server backup`, `backups` and `restore`, with the settings `serve` reads."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from click.testing import CliRunner, Result

from tasks_server.cli import main
from tasks_server.config import Settings
from tasks_server.store.sqlite.migrate import latest_schema_version
from tests.backup.conftest import (
    S3Server,
    add_filler,
    add_tasks,
    make_database,
    serving,
    task_ids,
)
from tests.served import EXECUTABLE

SCHEMA = latest_schema_version()  # the latest migration


def env_of(settings: Settings, **more: str) -> dict[str, str]:
    return {
        "PATH_SQLITE": settings.path_sqlite,
        "CIPHER_KEY": settings.cipher_key,
        "BACKUP_METHOD_SQLITE": settings.backup_method_sqlite,
        "BACKUP_PATH_DIR_SQLITE": "",
        "LOG": "0",
        **more,
    }


def run(*args: str, env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_backup_list_and_restore(tmp_path: Path) -> None:
    settings, first = make_database(tmp_path, tasks=3)
    env = env_of(settings)

    made = run("backup", env=env)
    assert made.exit_code == 0, made.output
    written = re.fullmatch(
        r"Backup written to (\S+) \(\d+\.\d KiB, 3 tasks, schema \d+, \d+\.\d\d s\)\n",
        made.stdout,
    )
    assert written, made.stdout
    archive = Path(written.group(1))
    assert archive.parent == settings.backup_dir and archive.exists()

    listed = run("backups", env=env)
    assert listed.exit_code == 0, listed.output
    assert (
        listed.stdout.splitlines()[0] == f"Backups in {settings.backup_dir} (LOCAL), newest first:"
    )
    assert re.search(rf"{archive.name}\s+\d+\.\d KiB\s+\S+ \S+ UTC\s+3 tasks", listed.stdout)

    with serving(settings) as api:
        add_tasks(api, api.owner("after-backup"), 2)
    restored = run("restore", archive.name, env=env)
    assert restored.exit_code == 0, restored.output
    assert restored.stdout == (
        f"Restored {archive} into {settings.path_sqlite} (3 tasks, schema {SCHEMA})\n"
        f"The database it replaced is kept as {settings.path_sqlite}.before-restore\n"
    )
    assert task_ids(settings.path_sqlite) == first


def test_commands_read_an_env_file(tmp_path: Path) -> None:
    settings, _ = make_database(tmp_path, tasks=1)
    directory = tmp_path / "elsewhere"
    env_file = tmp_path / "tasks.env"
    env_file.write_text(
        f"PATH_SQLITE={settings.path_sqlite}\nCIPHER_KEY={settings.cipher_key}\n"
        f"BACKUP_PATH_DIR_SQLITE={directory}\n"
    )
    clean = {"PATH_SQLITE": "", "CIPHER_KEY": "", "BACKUP_PATH_DIR_SQLITE": ""}
    made = run("backup", "--env-file", str(env_file), env=clean)
    assert made.exit_code == 0, made.output
    assert f"Backup written to {directory}/tasks-" in made.stdout
    listed = run("backups", "--env-file", str(env_file), env=clean)
    assert f"Backups in {directory} (LOCAL)" in listed.stdout


def test_restore_while_a_server_runs_exits_with_the_reason(tmp_path: Path) -> None:
    settings, _ = make_database(tmp_path, tasks=1)
    env = env_of(settings)
    assert run("backup", env=env).exit_code == 0
    name = next(settings.backup_dir.glob("*.db.gz")).name
    with serving(settings):
        refused = run("restore", name, env=env)
    assert refused.exit_code == 1
    assert re.fullmatch(
        r"Error: restore refused: \S+ is in use by a running server \(pid \d+ on .+\): "
        r"stop it first\n",
        refused.stderr,
    ), refused.stderr


def test_restore_shows_progress_for_a_large_archive(tmp_path: Path) -> None:
    settings, _ = make_database(tmp_path, tasks=1)
    add_filler(settings.path_sqlite, 2 << 20)
    env = env_of(settings)
    assert run("backup", env=env).exit_code == 0
    name = next(settings.backup_dir.glob("*.db.gz")).name
    restored = run("restore", name, env=env)
    assert restored.exit_code == 0, restored.output
    for label in ("Verifying checksum", "Unpacking", "Checking integrity"):
        assert label in restored.stderr


def test_bad_settings_are_a_usage_error(tmp_path: Path) -> None:
    for variable, value, message in [
        ("BACKUP_METHOD_SQLITE", "FTP", "expected LOCAL or OBJECT_STORAGE"),
        ("BACKUP_CRON_PATTERN_SQLITE", "every day", "expected a cron pattern"),
        ("BACKUP_CRON_TZ_SQLITE", "Mars/Olympus", "expected an IANA time zone"),
        ("BACKUP_RETENTION", "0", "expected an integer >= 1"),
    ]:
        result = run("backup", env={variable: value})
        assert result.exit_code == 2
        assert f"{variable}={value!r}: {message}" in result.stderr


def test_no_backups_yet(tmp_path: Path) -> None:
    settings, _ = make_database(tmp_path, tasks=1)
    listed = run("backups", env=env_of(settings))
    assert listed.stdout == f"No backups in {settings.backup_dir} (LOCAL)\n"


def test_object_storage_commands(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    settings, first = make_database(tmp_path, tasks=2)
    env = env_of(
        settings,
        BACKUP_METHOD_SQLITE="OBJECT_STORAGE",
        BACKUP_OBJECT_STORAGE_ENDPOINT=s3_server.endpoint,
        BACKUP_OBJECT_STORAGE_ACCESS_KEY=s3_server.access_key,
        BACKUP_OBJECT_STORAGE_SECRET_KEY=s3_server.secret_key,
        BACKUP_OBJECT_STORAGE_BUCKET_NAME=bucket,
        BACKUP_OBJECT_STORAGE_PATH="prod",
        BACKUP_OBJECT_STORAGE_PATH_STYLE="1",
        AWS_REGION="eu-west-1",
        S3_REGION="us-east-1",
    )
    made = run("backup", env=env)
    assert made.exit_code == 0, made.output
    assert f"Backup written to s3://{bucket}/prod/tasks-" in made.stdout
    listed = run("backups", env=env)
    assert listed.stdout.startswith(f"Backups in s3://{bucket}/prod (OBJECT_STORAGE)")
    key = "prod/" + listed.stdout.splitlines()[1].split()[0]

    Path(settings.path_sqlite).unlink()
    restored = run("restore", key, env=env)
    assert restored.exit_code == 0, restored.output
    assert restored.stdout.startswith(f"Restored s3://{bucket}/{key} into {settings.path_sqlite}")
    assert task_ids(settings.path_sqlite) == first

    wrong = run("backups", env={**env, "BACKUP_OBJECT_STORAGE_SECRET_KEY": "nope"})
    assert wrong.exit_code == 1
    assert "refused the secret key (BACKUP_OBJECT_STORAGE_SECRET_KEY)" in wrong.stderr


def test_the_installed_command(tmp_path: Path) -> None:
    settings, _ = make_database(tmp_path, tasks=1)
    done = subprocess.run(
        [str(EXECUTABLE), "backup"],
        env={**env_of(settings), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Backup written to {settings.backup_dir}/tasks-")
