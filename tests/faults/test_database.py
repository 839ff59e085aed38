"""The database refuses writes (locked by another connection, or its disk full):
registrations answer 503 with a clear message, nothing is half-written, and
service resumes by itself when the fault ends."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Owner
from tests.served import Served
from tests.targets import Reply, Target, wait_until


def register(served: Served, owner: Owner, url: str, **config: Any) -> httpx.Response:
    body = {"httpRequest": {"url": url, "method": "POST", "data": "x" * 4000}, "config": config}
    with httpx.Client(base_url=str(served.http.base_url), timeout=15) as client:
        return client.post("/v1/queues/register", json=body, headers=owner.headers)


def listed(served: Served, owner: Owner) -> list[dict[str, Any]]:
    reply = served.http.get("/v1/queues?limit=1000", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    tasks: list[dict[str, Any]] = reply.json()
    return tasks


def in_queue(served: Served, owner: Owner) -> int:
    view = served.http.get(f"/v1/owners/{owner.name}", headers=owner.headers).json()
    count: int = view["tasksInQueue"]
    return count


def test_locked_database_answers_503_then_resumes(
    serve: Callable[..., Served], target: Target, tmp_path: Path
) -> None:
    served = serve()
    owner = served.owner("locked-owner")
    before = served.task(owner, target.url("/before"), executionDelay=0)
    target.wait_for(1, "/before")
    # its answer arrives while the database is locked: the outcome must not be lost
    target.script("/answered-during-lock", Reply(200, b"late", delay=0.5))
    during = served.task(owner, target.url("/answered-during-lock"), executionDelay=0)
    target.wait_for(1, "/answered-during-lock")

    holder = sqlite3.connect(tmp_path / "data" / "tasks.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # every other writer gets SQLITE_BUSY (after busy_timeout)
    locked_at = time.monotonic()
    try:
        with ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(lambda _: register(served, owner, target.url("/x")), range(3)))
        # reads go on meanwhile (WAL)
        assert served.get(owner, before["id"])["state"] == "SUCCESS"
        assert time.monotonic() - locked_at < 10  # each 503 within a few busy timeouts
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for reply in replies:
        assert reply.status_code == 503, reply.text
        assert reply.headers["retry-after"] == "1"
        assert reply.json()["message"] == (
            "The database cannot take this change now: database is locked"
        )
    # nothing half-written: no task row, no queue slot taken
    assert sorted(t["id"] for t in listed(served, owner)) == sorted([before["id"], during["id"]])

    # resumes by itself: a registration succeeds and the task runs
    def accepted() -> httpx.Response | None:
        reply = register(served, owner, target.url("/after"), executionDelay=0)
        return reply if reply.status_code == 201 else None

    after = wait_until(accepted, timeout=10, interval=0.1).json()
    served.wait(owner, after["id"], lambda t: t["state"] == "SUCCESS", 10)
    done = served.wait(owner, during["id"], lambda t: t["state"] != "RUNNING", 10)
    assert done["state"] == "SUCCESS", done
    assert len(target.arrivals_at("/answered-during-lock")) == 1
    assert in_queue(served, owner) == 0
    assert served.stop(signal.SIGTERM) == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for this test (needs root; skipped where mount is refused)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the disk is full."""
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        while True:  # the last partial chunk
            try:
                out.write(b"\0" * 512)
            except OSError:
                return


def test_full_disk_answers_503_then_resumes(
    serve: Callable[..., Served], target: Target, small_disk: Path
) -> None:
    served = serve(PATH_SQLITE=str(small_disk / "tasks.db"))
    owner = served.owner("full-disk-owner")
    first = served.task(owner, target.url("/first"), executionDelay=0)
    served.wait(owner, first["id"], lambda t: t["state"] == "SUCCESS", 10)

    filler = small_disk / "filler"
    fill(filler)
    accepted: list[str] = []
    refused: list[httpx.Response] = []
    for _ in range(300):  # the WAL reuses its space for a while; it must grow at last
        reply = register(served, owner, target.url("/later"), executionDelay=3_600_000)
        if reply.status_code == 201:
            accepted.append(reply.json()["id"])
            continue
        refused.append(reply)
        if len(refused) == 3:
            break
    assert refused, "the disk never filled"
    for reply in refused:
        assert reply.status_code == 503, reply.text
        assert "database or disk is full" in reply.json()["message"], reply.text
    assert served.http.get("/status").status_code == 200
    # nothing half-written: exactly the accepted tasks exist, and their queue slots
    assert sorted(t["id"] for t in listed(served, owner)) == sorted([first["id"], *accepted])
    assert in_queue(served, owner) == len(accepted)

    os.remove(filler)

    def resumed() -> httpx.Response | None:
        reply = register(served, owner, target.url("/after"), executionDelay=0)
        return reply if reply.status_code == 201 else None

    after = wait_until(resumed, timeout=10, interval=0.1).json()
    served.wait(owner, after["id"], lambda t: t["state"] == "SUCCESS", 10)
    assert len(listed(served, owner)) == len(accepted) + 2
    print(f"full disk: {len(accepted)} registrations accepted after the fill, then 503")
    assert served.stop(signal.SIGTERM) == 0
