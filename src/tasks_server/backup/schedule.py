"""Backups on BACKUP_CRON_PATTERN_SQLITE inside `serve`: one per cron tick across every
server on the database (each tick claimed in the store), never two at once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from functools import partial
from typing import TypeVar
from zoneinfo import ZoneInfo

from croniter import croniter

from tasks_server.backup.commands import BackupResult, create_backup
from tasks_server.backup.info import BackupError
from tasks_server.backup.names import stamp
from tasks_server.backup.targets import target_for
from tasks_server.config import Settings
from tasks_server.model.timing import now_ms
from tasks_server.store import POSTGRES_BACKUPS
from tasks_server.store.base import Store

log = logging.getLogger(__name__)

MAX_SLEEP_S = 60.0  # the schedule looks at the wall clock at least this often
T = TypeVar("T")


def next_tick(pattern: str, time_zone: str, after: float) -> float:
    """The first time (epoch seconds) after `after` that the cron pattern names."""
    start = datetime.fromtimestamp(after, ZoneInfo(time_zone))
    found: float = croniter(pattern, start, second_at_beginning=True).get_next(float)
    return found


class BackupSchedule:
    """The schedule of one server: claim each tick, back up in a thread off the loop,
    record how it ended. Failures are logged and recorded, and tried at the next tick."""

    def __init__(self, settings: Settings, store: Store, instance_id: str) -> None:
        self._settings = settings
        self._store = store
        self._instance_id = instance_id
        self._task: asyncio.Task[None] | None = None
        self._current: asyncio.Task[None] | None = None
        self.succeeded = 0
        self.failed = 0
        self.skipped = 0
        self.last_error: str | None = None
        self._enabled = settings.backup_enabled and not settings.database_url
        if self._enabled:
            target_for(settings)  # bad settings fail the start-up, not the first tick

    async def start(self) -> None:
        """Begin the schedule (a no-op with BACKUP_ENABLED=0, and on PostgreSQL)."""
        if self._settings.backup_enabled and self._settings.database_url:
            log.info("No scheduled backups on PostgreSQL: %s", POSTGRES_BACKUPS)
        if not self._enabled:
            return
        self._task = asyncio.create_task(self._run(), name="backup-schedule")
        log.info(
            "Backups on %r (%s) to %s, keeping %d",
            self._settings.backup_cron_pattern_sqlite,
            self._settings.backup_time_zone,
            self._settings.backup_method_sqlite,
            self._settings.backup_retention,
        )

    async def stop(self) -> None:
        """Stop ticking; a backup in progress gets SHUTDOWN_GRACE_MS to finish (past it, its
        thread is left to end by itself and its tick stays unrecorded)."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._current is not None and not self._current.done():
            await asyncio.wait([self._current], timeout=self._settings.shutdown_grace_ms / 1000)
            self._current.cancel()
            with suppress(asyncio.CancelledError):
                await self._current

    async def _run(self) -> None:
        settings = self._settings
        while True:
            tick = next_tick(
                settings.backup_cron_pattern_sqlite, settings.backup_time_zone, time.time()
            )
            while (remaining := tick - time.time()) > 0:
                await asyncio.sleep(min(remaining, MAX_SLEEP_S))  # follows wall-clock changes
            self._current = asyncio.create_task(self._run_tick(round(tick * 1000)))
            await asyncio.shield(self._current)

    async def _run_tick(self, tick_ms: int) -> None:
        """One tick: claim it, back up, record; never raises."""
        stale_ms = self._settings.instance_stale_ms
        try:
            reason = await self._store.claim_backup_tick(
                tick_ms, self._instance_id, now_ms(), stale_ms
            )
        except Exception as exc:
            self._fail(f"could not claim the tick: {exc}")
            return
        if reason is not None:
            self.skipped += 1
            log.info("Backup tick %s skipped: %s", stamp(tick_ms), reason)
            return
        result: BackupResult | None = None
        error: str | None = None
        try:
            result = await _in_daemon_thread(partial(create_backup, self._settings, tick_ms))
        except Exception as exc:
            error = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
            self._fail(error)
        else:
            self.succeeded += 1
            log.info(
                "Backup done: %s (%d bytes, %d tasks, %.2f s)",
                result.location,
                result.info.size,
                result.info.task_count,
                result.seconds,
            )
        with suppress(Exception):
            await self._store.finish_backup_tick(
                tick_ms,
                self._instance_id,
                now_ms(),
                location=result.location if result else None,
                size=result.info.size if result else None,
                error=error,
            )

    def _fail(self, error: str) -> None:
        self.failed += 1
        self.last_error = error
        log.error("Backup failed (%d so far; next try at the next tick): %s", self.failed, error)


def _in_daemon_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run `fn` in a daemon thread (a stop never waits on it past its grace); the future
    gives what it returns or raises."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            value = fn()
        except BaseException as exc:
            outcome = partial(_settle_error, future, exc)
        else:
            outcome = partial(_settle_value, future, value)
        with suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(outcome)

    threading.Thread(target=run, name="backup", daemon=True).start()
    return future


def _settle_value(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _settle_error(future: asyncio.Future[T], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
