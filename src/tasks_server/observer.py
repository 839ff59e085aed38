"""What the scheduler, the sender and the stores tell about their work, as it happens.

They call an Observer and know nothing of what listens: metrics.py turns the calls
into Prometheus figures, and without it NO_OBSERVER discards them. Each call is cheap
and never raises.
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    def tasks_registered(self, count: int) -> None:
        """`count` tasks were stored by one commit."""

    def attempt_started(self, lateness_s: float) -> None:
        """An attempt was handed to the sender `lateness_s` after its due time."""

    def attempt_finished(self, succeeded: bool, status_code: int, duration_s: float) -> None:
        """An attempt ended (status 0: no HTTP answer)."""

    def attempts_in_flight(self, count: int) -> None:
        """This process has `count` attempts on the wire now."""

    def store_committed(self, seconds: float, group_size: int) -> None:
        """One durable commit of `group_size` writes took `seconds` (a write: one
        registration, change or delete, or one batch of outcomes)."""


class _NoObserver:
    def tasks_registered(self, count: int) -> None:
        pass

    def attempt_started(self, lateness_s: float) -> None:
        pass

    def attempt_finished(self, succeeded: bool, status_code: int, duration_s: float) -> None:
        pass

    def attempts_in_flight(self, count: int) -> None:
        pass

    def store_committed(self, seconds: float, group_size: int) -> None:
        pass


NO_OBSERVER: Observer = _NoObserver()
