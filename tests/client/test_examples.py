"""examples/ keep working: schedule.py run as a user runs it, against a real server and
examples/receiver.py, ends with its task delivered."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Api
from tests.served import free_port
from tests.targets import wait_until

EXAMPLES = Path(__file__).parents[2] / "examples"


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def receiver() -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "receiver.py"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: listening(port), timeout=10, interval=0.02)
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_schedule_delivers_to_the_receiver(
    server: Api, receiver: tuple[int, subprocess.Popen[str]]
) -> None:
    port, process = receiver
    env = {k: v for k, v in os.environ.items() if k not in {"OWNER", "KEY"}}
    env |= {"TASKS_URL": server.base_url, "RECEIVER_URL": f"http://127.0.0.1:{port}/hook"}
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "schedule.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Outcome: SUCCESS, HTTP 200, response 'received'" in run.stdout
    assert "  attempt 1: HTTP 200" in run.stdout
    task = re.search(r"Registered task (\w{26})", run.stdout)
    assert task is not None, run.stdout
    process.terminate()
    received, _ = process.communicate(timeout=10)
    assert f'POST /hook task={task.group(1)} body={{"hello":"from schedule.py"}}' in received
