"""Fixtures for the backup tests: databases written by a real server, a real S3 API
server (moto, with IAM authentication on) on 127.0.0.1, and `tasks-server serve`
processes."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tasks_server.config import Settings
from tests.conftest import Api, Owner, make_settings
from tests.conftest import running as serving
from tests.served import Served, free_port
from tests.targets import wait_until

# a task that stays RUNNING (due in an hour) to a port where nothing listens
LATER: dict[str, Any] = {
    "httpRequest": {"url": "http://127.0.0.1:9/later", "method": "GET"},
    "config": {"executionDelay": 3_600_000},
}


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    """Test settings with the schedule off unless a test turns it on."""
    values: dict[str, Any] = {"backup_enabled": False}
    values.update(overrides)
    return make_settings(tmp_path, **values)


def add_tasks(api: Api, owner: Owner, count: int) -> list[str]:
    return [api.task(owner, LATER)["id"] for _ in range(count)]


# databases written by a real server, once per task count; each test gets a copy
_TEMPLATES = tempfile.TemporaryDirectory(prefix="backup-test-databases-")
_TEMPLATE_IDS: dict[int, set[str]] = {}


def make_database(tmp_path: Path, tasks: int = 5, **overrides: Any) -> tuple[Settings, set[str]]:
    """A database written by a real server (stopped again) holding `tasks` tasks, at
    tmp_path/data/tasks.db; settings with `overrides` for it."""
    template = settings_for(Path(_TEMPLATES.name) / str(tasks))
    if tasks not in _TEMPLATE_IDS:
        with serving(template) as api:
            _TEMPLATE_IDS[tasks] = set(add_tasks(api, api.owner(), tasks))
    settings = settings_for(tmp_path, **overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template.path_sqlite, settings.path_sqlite)
    return settings, set(_TEMPLATE_IDS[tasks])


def task_ids(database: Path | str) -> set[str]:
    with closing(sqlite3.connect(database)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM task")}


def add_filler(database: Path | str, size: int) -> None:
    """Grow the database by `size` incompressible bytes (to exercise chunks and parts)."""
    with closing(sqlite3.connect(database)) as conn:
        conn.execute("CREATE TABLE filler (data BLOB)")
        for _ in range(0, size, 1 << 20):
            conn.execute("INSERT INTO filler VALUES (?)", (os.urandom(1 << 20),))
        conn.commit()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- a real S3 API server ----


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def new_bucket(self) -> str:
        name = f"backups-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, tmp_path: Path, bucket: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "backup_method_sqlite": "OBJECT_STORAGE",
            "backup_object_storage_endpoint": self.endpoint,
            "backup_object_storage_access_key": self.access_key,
            "backup_object_storage_secret_key": self.secret_key,
            "backup_object_storage_bucket_name": bucket,
            "backup_object_storage_path": "nightly/tasks",
            "backup_object_storage_path_style": True,
            "s3_region": "us-east-1",
        }
        values.update(overrides)
        return settings_for(tmp_path, **values)


# IAM calls made before authentication is enforced: user, policy, attach, access key
_SETUP_CALLS = 4
_PR_SET_PDEATHSIG = 1


def _end_with_pytest() -> None:
    """In the child, before exec: SIGTERM when pytest ends, even if it is killed."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 that checks signatures against its own IAM users."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_CALLS)},
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_end_with_pytest,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"moto server exited with {proc.returncode}")
        try:
            return httpx.get(f"{endpoint}/moto-api/", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=30, interval=0.05)
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="backup")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        arn = iam.create_policy(PolicyName="s3-all", PolicyDocument=json.dumps(policy))
        iam.attach_user_policy(UserName="backup", PolicyArn=arn["Policy"]["Arn"])
        key = iam.create_access_key(UserName="backup")["AccessKey"]
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


# ---- `tasks-server serve` processes ----


@pytest.fixture
def serve_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Served]]:
    """Start `tasks-server serve` processes on tmp_path/data/tasks.db (CIPHER_KEY
    `e2e-cipher-key`, LOG=1) with more environment; killed after the test."""
    started: list[Served] = []

    def start(**env: str) -> Served:
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        served = Served(tmp_path, free_port(), f"serve-{len(started)}.log")
        started.append(served)
        return served

    yield start
    for served in started:
        served.kill()
