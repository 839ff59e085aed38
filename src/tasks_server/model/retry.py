"""Retry policy: given attempt n, when is the next one? A pure value object."""

from __future__ import annotations

import msgspec

from tasks_server.model.spec import TaskSpec, ms
from tasks_server.model.timing import MAX_EPOCH_MS


class RetryPolicy(msgspec.Struct, frozen=True):
    """When to retry a failed attempt, as decided at registration."""

    limit: int
    interval_ms: int
    exponential: bool
    retry_at: int | None = None
    stop_on_status: frozenset[int] = frozenset()

    def next_retry_at(self, retry_number: int, now: int) -> int | None:
        """Planned time of retry `retry_number` (1-based), or None past the limit.

        "Exponential" keeps the original's documented rule: interval x n.
        A `retry_at` already in the past means "retry at once". The time is
        capped at the largest supported date, so it always fits a 64-bit column.
        """
        if retry_number > self.limit:
            return None
        if self.retry_at is not None:
            return max(self.retry_at, now)
        delay = self.interval_ms * retry_number if self.exponential else self.interval_ms
        return min(now + delay, MAX_EPOCH_MS)

    def stops_on(self, status_code: int) -> bool:
        """True when this status ends the task at once (ignoreStatusCode)."""
        return status_code in self.stop_on_status


def retry_policy(spec: TaskSpec) -> RetryPolicy:
    """The retry policy a canonical task spec implies."""
    config = spec.config
    return RetryPolicy(
        limit=config.retry,
        interval_ms=config.retry_interval,
        exponential=config.retry_exponential,
        retry_at=ms(config.retry_at),
        stop_on_status=frozenset(config.ignore_status_code),
    )
