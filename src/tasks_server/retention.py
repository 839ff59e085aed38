"""Finished tasks (SUCCESS, ERROR, REVOKED) are deleted TASK_RETENTION_DAYS after they
finished, a small batch per transaction, so the task table holds what is pending and
what is recent, not every task ever run. On PostgreSQL one node purges at a time."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from tasks_server.model.timing import now_ms
from tasks_server.store.base import Store

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
EVERY_S = 60.0  # how often a server looks for tasks past their retention
BATCH = 500  # tasks per transaction: short, so that nothing waits long behind a purge
BETWEEN_BATCHES_S = 0.05


class Retention:
    """The purge of one server: at start, then every minute; a no-op when `days` is 0."""

    def __init__(self, store: Store, days: int) -> None:
        self._store = store
        self._days = days
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._days:
            self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def purge(self, now: int) -> int:
        """Delete the tasks that finished more than `days` before `now`; how many."""
        before = now - self._days * DAY_MS
        total = 0
        while True:
            deleted = await self._store.purge_finished(before, BATCH)
            total += deleted
            if deleted < BATCH:
                return total
            await asyncio.sleep(BETWEEN_BATCHES_S)  # let the other writes through

    async def _run(self) -> None:
        while True:
            try:
                deleted = await self.purge(now_ms())
                if deleted:
                    log.info(
                        "Retention: deleted %d tasks finished over %d days ago", deleted, self._days
                    )
            except Exception as exc:
                log.error("Retention failed (tried again in a minute): %s", exc)
            await asyncio.sleep(EVERY_S)
