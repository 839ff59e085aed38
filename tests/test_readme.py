"""The README's walk-through, run as written, twice in one directory, against a real
`tasks-server serve` and the example receiver: what a newcomer types works, and works
again."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.served import Served, free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(
    shutil.which("jq") is None or shutil.which("curl") is None,
    reason="the walk-through needs curl and jq (apt-get install jq)",
)


def walk_through() -> str:
    """The one bash block of the Walk-through section that defines `api()`."""
    section = README.read_text().split("\n## Walk-through\n", 1)[1].split("\n## ", 1)[0]
    (script,) = [b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if "api()" in b]
    return script


def run(script: str, cwd: Path) -> str:
    done = subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_walk_through_delivers_a_task_and_can_be_run_again(tmp_path: Path) -> None:
    server_port, receiver_port = free_port(), free_port()
    server = Served(tmp_path, server_port, "server.log")
    received = tmp_path / "receiver.out"
    with received.open("wb") as out:
        receiver = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "receiver.py"), str(receiver_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while "Receiving on" not in received.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        script = (
            walk_through()
            .replace("127.0.0.1:9420", f"127.0.0.1:{server_port}")
            .replace("127.0.0.1:8000", f"127.0.0.1:{receiver_port}")
        )
        work = tmp_path / "clone"
        work.mkdir()
        first = run(script, work)
        second = run(script, work)  # owner.json kept: the same owner, a second task
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
        server.kill()
    owner_id = json.loads((work / "owner.json").read_text())["id"]
    for output in (first, second):
        assert f"owner {owner_id}" in output
        assert '"state":"SUCCESS"' in output
        assert '"statusCode":200' in output
        assert "the receiver answered: received" in output
        assert '"timings":' in output  # the attempts
        assert '"status":"Done"' in output  # pause and revoke
        assert "\nRUNNING\n" in output  # resumed
        assert '"REVOKED":' in output  # the counts
        assert "}{" not in output  # every answer on a line of its own
    # the receiver printed both deliveries, with the body the walk-through sent
    deliveries = [
        line for line in received.read_text().splitlines() if line.startswith("POST /hello")
    ]
    assert len(deliveries) == 2
    assert all('body={"hello":"world"}' in line for line in deliveries)
    assert '"REVOKED":2' in second
