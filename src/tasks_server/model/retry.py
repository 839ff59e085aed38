"""Retry policy: given attempt n, when is the next one? A pure value object."""

from __future__ import annotations

import msgspec


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
        A `retry_at` already in the past means "retry at once".
        """
        if retry_number > self.limit:
            return None
        if self.retry_at is not None:
            return max(self.retry_at, now)
        if self.exponential:
            return now + self.interval_ms * retry_number
        return now + self.interval_ms

    def stops_on(self, status_code: int) -> bool:
        """True when this status ends the task at once (ignoreStatusCode)."""
        return status_code in self.stop_on_status
