"""A `tasks-server serve` process under test, and ways to load it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.database import Database
from bench.target import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / ".venv" / "bin" / "tasks-server"
WRK_SCRIPT = Path(__file__).resolve().parent / "register.lua"


class Server:
    """A server on `database` (SQLite with synchronous=FULL, or PostgreSQL), LOG=0."""

    def __init__(self, database: Database, **env: str) -> None:
        self.database = database
        self.port = free_port()
        self.env = {
            **os.environ,
            **database.env(),
            "LOG": "0",
            "PORT": str(self.port),
            "MAX_TASKS_IN_QUEUE": "100000000",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.started_at = time.time()
        self.process = subprocess.Popen(
            [str(SERVER), "serve"], env=self.env, stdout=subprocess.DEVNULL, stderr=sys.stderr
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/status", timeout=1) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)

    def rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())

    def owner(self, name: str = "bench-owner") -> dict[str, str]:
        created = self.call("POST", "/v1/owners/register", {"name": name})
        return {"id": created["id"], "key": created["key"]}


def wrk_register(
    server: Server,
    owner: dict[str, str],
    total: int,
    *,
    target: str,
    mode: str,
    due_base: int = 0,
    spread_ms: int = 0,
    body_bytes: int = 300,
    connections: int = 64,
    threads: int = 2,
) -> dict[str, Any]:
    """Register `total` tasks through the HTTP API with wrk; wrk's latency summary.

    wrk runs by duration, so it is interrupted (it then prints its summary)
    once the database holds `total` tasks.
    """
    threads = min(threads, connections)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        "-d3600s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        f"{server.base}/v1/queues/register",
        "--",
        str(total),
        owner["id"],
        owner["key"],
        target,
        mode,
        str(due_base),
        str(spread_ms),
        str(body_bytes),
        str(threads),
    ]
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + total / 200 + 60
    while server.database.task_count() < total and time.monotonic() < deadline:
        time.sleep(0.05)
    wrk.send_signal(signal.SIGINT)
    output, _ = wrk.communicate(timeout=60)
    line = next(row for row in output.splitlines() if row.startswith("{"))
    summary: dict[str, Any] = json.loads(line)
    summary["registered"] = server.database.task_count()
    summary["seconds"] = server.database.created_span_s()
    return summary


def wrk_get(
    server: Server, owner: dict[str, str], path: str, seconds: int, connections: int = 8
) -> dict[str, Any]:
    """GET `path` for `seconds`; wrk's latency percentiles."""
    script = Path(tempfile.mkdtemp()) / "get.lua"
    script.write_text(
        f'wrk.headers["Authorization"] = "Bearer {owner["key"]}"\n'
        f'wrk.headers["X-Tasks-Owner-Id"] = "{owner["id"]}"\n'
        "function done(summary, latency, requests)\n"
        '  io.write(string.format(\'{"requests": %d, "status_errors": %d, "p50_us": %d, '
        '"p99_us": %d, "max_us": %d}\\n\', summary.requests, summary.errors.status, '
        "latency:percentile(50), latency:percentile(99), latency.max))\nend\n"
    )
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "-s",
        str(script),
        f"{server.base}{path}",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(row for row in output.splitlines() if row.startswith("{"))
    result: dict[str, Any] = json.loads(line)
    return result
