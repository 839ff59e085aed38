"""The backup schedule inside `serve`: on time, one backup per tick across server
processes, never overlapping, failures counted and retried, and off when disabled."""

from __future__ import annotations

import re
import signal
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from tasks_server.backup.schedule import next_tick
from tasks_server.store import open_store
from tests.backup.conftest import make_database, settings_for
from tests.conftest import Api
from tests.served import Served
from tests.targets import Target, wait_until

EVERY_SECOND = "* * * * * *"


def runs(database: Path | str, state: str | None = None) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(database, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM backup_run ORDER BY tick").fetchall()
    return [dict(row) for row in rows if state is None or row["state"] == state]


def stamp(tick_ms: int) -> str:
    return datetime.fromtimestamp(tick_ms / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")


def archives(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.db.gz"))


def test_a_per_second_pattern_backs_up_every_second(start_server: Callable[..., Api]) -> None:
    api = start_server(backup_cron_pattern_sqlite=EVERY_SECOND, backup_retention=100)
    database = api.settings.path_sqlite
    done = wait_until(lambda: (found := runs(database, "DONE")) and len(found) >= 3 and found)
    for run in done:
        assert run["tick"] % 1000 == 0
        assert 0 <= run["started_at"] - run["tick"] < 1000  # started on its tick
        assert run["location"].endswith(f"tasks-{stamp(run['tick'])}.db.gz")
        assert Path(run["location"]).stat().st_size == run["size"]
    ticks = [run["tick"] for run in done]
    assert all(later - earlier == 1000 for earlier, later in pairwise(ticks))


def test_two_server_processes_take_one_backup_per_tick(
    tmp_path: Path, serve_process: Callable[..., Served]
) -> None:
    settings = settings_for(tmp_path)  # where the processes keep the database
    database = settings.path_sqlite
    env = {"BACKUP_CRON_PATTERN_SQLITE": EVERY_SECOND, "BACKUP_RETENTION": "100"}
    servers = [serve_process(**env), serve_process(**env)]
    both_up = time.time() * 1000
    wait_until(
        lambda: len([run for run in runs(database, "DONE") if run["tick"] > both_up]) >= 4,
        timeout=20,
    )
    stopping = time.time() * 1000
    for server in servers:
        server.stop(signal.SIGTERM)

    done = runs(database, "DONE")
    assert runs(database) == done  # none failed, none left running
    names = archives(settings.backup_dir)
    assert names == sorted(f"tasks-{stamp(run['tick'])}.db.gz" for run in done)
    assert not [name for name in names if re.search(r"Z-\d+\.db", name)]  # no second take
    logs = [server.log() for server in servers]
    for run in done:
        if both_up < run["tick"] < stopping - 1000:
            # each process saw the tick: one took it, the other was told it was taken
            tick = stamp(run["tick"])
            took = [
                log for log in logs if f"Backup done: {settings.backup_dir}/tasks-{tick}" in log
            ]
            told = [log for log in logs if f"tick {tick} skipped: claimed by another" in log]
            assert (len(took), len(told)) == (1, 1), tick


def test_a_failed_backup_is_counted_and_retried_at_the_next_tick(
    start_server: Callable[..., Api], target: Target, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the backup directory should be")
    api = start_server(
        backup_cron_pattern_sqlite=EVERY_SECOND,
        backup_path_dir_sqlite=str(blocker / "backups"),
    )
    database = api.settings.path_sqlite
    failed = wait_until(lambda: (found := runs(database, "FAILED")) and len(found) >= 2 and found)
    assert "Not a directory" in failed[0]["error"]

    # dispatch goes on meanwhile
    owner = api.owner()
    task = api.task(owner, {"httpRequest": {"url": target.url("/cb"), "method": "GET"}})
    api.wait_state(owner, task["id"], "SUCCESS")

    blocker.unlink()
    done = wait_until(lambda: runs(database, "DONE"))
    assert done[0]["tick"] > failed[-1]["tick"]
    assert Path(done[0]["location"]).parent == blocker / "backups"


def test_backup_enabled_0_takes_no_backup(start_server: Callable[..., Api]) -> None:
    api = start_server(backup_enabled=False, backup_cron_pattern_sqlite=EVERY_SECOND)
    deadline = next_tick(EVERY_SECOND, "UTC", time.time()) + 1.2  # past a whole tick
    while time.time() < deadline:
        time.sleep(0.1)
    assert runs(api.settings.path_sqlite) == []
    assert not api.settings.backup_dir.exists()


async def test_claims_are_exclusive_and_never_overlap(tmp_path: Path) -> None:
    settings, _ = make_database(tmp_path, tasks=1)
    database = Path(settings.path_sqlite)
    now = int(time.time() * 1000)
    store = open_store(settings)
    await store.open()
    try:
        await store.register_instance("alive", "h", 1, now)
        await store.register_instance("dead", "h", 2, now - 60_000)
        stale = 3000

        async def claim(tick: int, instance_id: str) -> str | None:
            return await store.claim_backup_tick(tick, instance_id, now, stale)

        async def fail(tick: int, instance_id: str, error: str) -> None:
            await store.finish_backup_tick(
                tick, instance_id, now, location=None, size=None, error=error
            )

        assert await claim(1000, "alive") is None
        assert await claim(1000, "other") == "claimed by another server"
        assert await claim(2000, "other") == "the backup of tick 1000 is still running in alive"
        await fail(1000, "alive", "it broke")
        assert await claim(2000, "other") is None
        await fail(2000, "other", "again")

        # a backup left RUNNING by an instance that stopped heart-beating blocks nobody
        assert await claim(3000, "dead") is None
        assert await claim(4000, "alive") is None
    finally:
        await store.close()
    assert [(run["tick"], run["state"], run["error"]) for run in runs(database)] == [
        (1000, "FAILED", "it broke"),
        (2000, "FAILED", "again"),
        (3000, "RUNNING", None),
        (4000, "RUNNING", None),
    ]


def test_next_tick_reads_seconds_first_and_time_zones() -> None:
    noon = datetime(2025, 1, 1, 12, 30, 15, tzinfo=UTC).timestamp()
    assert next_tick("0 0 * * *", "UTC", noon) == datetime(2025, 1, 2, tzinfo=UTC).timestamp()
    # midnight in Jakarta (UTC+7) is 17:00 UTC
    assert next_tick("0 0 * * *", "Asia/Jakarta", noon) == (
        datetime(2025, 1, 1, 17, tzinfo=UTC).timestamp()
    )
    assert next_tick("*/20 * * * * *", "UTC", noon) == noon + 5
    assert next_tick("30 0 * * * *", "UTC", noon) == (
        datetime(2025, 1, 1, 13, 0, 30, tzinfo=UTC).timestamp()
    )
