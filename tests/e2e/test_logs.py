"""What a real `tasks-server serve` writes: the start and stop lines whatever LOG says, a
line per attempt with LOG=1 (ISO 8601 UTC time, method, target host), uvicorn's access
log with LOG_ACCESS=1, every line one JSON object with LOG_FORMAT=json; and --version."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tests.served import EXECUTABLE, Served, free_port
from tests.targets import Reply, Target, wait_until

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def one_task_logged(
    tmp_path: Path, target: Target, final_state: str, **env: str
) -> tuple[dict[str, Any], Served]:
    """Run one task to `final_state` on a server with `env`, then stop it: (the task, the
    stopped server, whose log is kept)."""
    served = Served(tmp_path, free_port(), "server.log", env)
    try:
        owner = served.owner("log-owner")
        task = served.task(owner, target.url("/hook"))
        served.wait(owner, task["id"], lambda t: t["state"] == final_state, timeout=15)
        wait_until(lambda: final_state in served.log(), timeout=5)
    finally:
        served.stop(signal.SIGTERM)
    return task, served


def test_the_start_and_stop_lines_print_with_the_default_settings(tmp_path: Path) -> None:
    port = free_port()
    served = Served(tmp_path, port, "server.log", {"LOG": ""})
    assert served.stop(signal.SIGTERM) == 0
    lines = served.log().splitlines()
    database = re.escape(str((tmp_path / "data" / "tasks.db").resolve()))
    assert re.fullmatch(
        rf"{ISO} INFO Tasks Server {re.escape(version('tasks-server'))} listening on "
        rf"http://127\.0\.0\.1:{port} \(pid {served.proc.pid}, database {database}\)",
        lines[0],
    ), lines
    assert re.fullmatch(rf"{ISO} INFO Tasks Server stopped \(pid {served.proc.pid}\)", lines[-1])


def test_log_adds_a_line_per_attempt_and_access_a_line_per_request(
    tmp_path: Path, target: Target
) -> None:
    target.script("/hook", always=Reply(503, b""))
    task, served = one_task_logged(tmp_path, target, "ERROR", LOG="1", LOG_ACCESS="1")
    log = served.log()
    assert re.search(
        rf"^{ISO} INFO Task {task['id']} attempt 1 ERROR: GET 127\.0\.0\.1 -> 503$", log, re.M
    ), log
    assert re.search(rf'^{ISO} INFO .*"POST /v1/queues/register HTTP/1\.1" 201', log, re.M), log


def test_json_makes_every_line_one_object(tmp_path: Path, target: Target) -> None:
    target.script("/hook", always=Reply(200, b""))
    task, served = one_task_logged(
        tmp_path, target, "SUCCESS", LOG="1", LOG_ACCESS="1", LOG_FORMAT="json"
    )
    entries = [json.loads(line) for line in served.log().splitlines()]
    for entry in entries:
        assert re.fullmatch(ISO, entry["time"]) and entry["level"] and entry["message"]
    (start,) = [e for e in entries if " listening on " in e["message"]]
    assert start["pid"] == served.proc.pid and start["logger"] == "tasks_server.lifecycle"
    (attempt,) = [e for e in entries if e.get("task_id") == task["id"]]
    assert attempt["method"] == "GET"
    assert attempt["host"] == "127.0.0.1"
    assert attempt["status_code"] == 200
    assert attempt["state"] == "SUCCESS"
    assert any("POST /v1/queues/register" in e["message"] for e in entries)  # uvicorn's too
    assert entries[-1]["message"].startswith("Tasks Server stopped")


def test_version() -> None:
    done = subprocess.run([str(EXECUTABLE), "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip() == f"Tasks Server, version {version('tasks-server')}"
