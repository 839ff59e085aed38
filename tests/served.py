"""Real `tasks-server serve` processes for tests: `Served`, the `serve` fixture, ports, times."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Owner
from tests.targets import Target, wait_until

EXECUTABLE = Path(sys.executable).parent / "tasks-server"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    """One `tasks-server serve` process on a fixed database and port."""

    def __init__(
        self, tmp: Path, port: int, log_name: str, extra_env: dict[str, str] | None = None
    ) -> None:
        self.spawned_at = now_ms()
        env = {
            **os.environ,
            "PATH_SQLITE": str(tmp / "data" / "tasks.db"),
            "CIPHER_KEY": "e2e-cipher-key",
            "PORT": str(port),
            "LOG": "1",
            "SHUTDOWN_GRACE_MS": "1000",
            **(extra_env or {}),
        }
        self.log_path = tmp / log_name
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(EXECUTABLE), "serve"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        wait_until(self._ready, timeout=20, interval=0.02)
        self.ready_at = now_ms()

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited {self.proc.returncode}: {self.log()}")
        try:
            return self.http.get("/status").status_code == 200
        except httpx.TransportError:
            return False

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int, timeout: float = 15) -> int:
        """Send `sig` and wait for the exit; returns the exit code."""
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.http.close()
            self._log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.http.close()
        self._log.close()

    # ---- API helpers ----

    def owner(self, name: str) -> Owner:
        reply = self.http.post("/v1/owners/register", json={"name": name})
        assert reply.status_code == 201, reply.text
        return Owner(reply.json()["id"], reply.json()["key"], name)

    def task(self, owner: Owner, url: str, **config: Any) -> dict[str, Any]:
        body = {"httpRequest": {"url": url, "method": "GET"}, "config": config}
        reply = self.http.post("/v1/queues/register", json=body, headers=owner.headers)
        assert reply.status_code == 201, reply.text
        task: dict[str, Any] = reply.json()
        return task

    def get(self, owner: Owner, task_id: str) -> dict[str, Any]:
        reply = self.http.get(f"/v1/queues/{task_id}", headers=owner.headers)
        assert reply.status_code == 200, reply.text
        task: dict[str, Any] = reply.json()
        return task

    def wait(
        self, owner: Owner, task_id: str, check: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            task = self.get(owner, task_id)
            return task if check(task) else None

        found: dict[str, Any] = wait_until(reached, timeout=timeout)
        return found


@pytest.fixture
def serve(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Served]]:
    """Start the server (again, on the same database and port), with extra environment
    variables as keyword arguments; killed at the end."""
    port = free_port()
    started: list[Served] = []
    database = {"DATABASE_URL": database_url} if database_url else {}

    def start(**extra_env: str) -> Served:
        env = {**database, **extra_env}
        served = Served(tmp_path, port, f"server-{len(started)}.log", env)
        started.append(served)
        return served

    yield start
    for served in started:
        served.kill()


def ids_at(target: Target, path: str) -> list[str]:
    return [a.header("X-Tasks-Queue-Id") or "" for a in target.arrivals_at(path)]
