"""The signals a store gives its subscribers after a client's change to a task commits.

In one process they are plain calls on the loop. A store shared by several
processes or nodes carries them further (SQLite: a datagram to each process on
the file; PostgreSQL: LISTEN/NOTIFY); the schedulers' poll of due times remains
the safety net.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from tasks_server.model.records import TaskChange
from tasks_server.store.base import Listener, TaskSignal


def encode_signal(signal: TaskSignal) -> str:
    """`task id|due at|1 if abort`: what travels between processes and nodes."""
    due = "" if signal.due_at is None else str(signal.due_at)
    return f"{signal.task_id}|{due}|{int(signal.abort)}"


def decode_signal(text: str) -> TaskSignal:
    task_id, due, abort = text.split("|")
    return TaskSignal(task_id, due_at=int(due) if due else None, abort=abort == "1")


def signal_of_change(task_id: str, change: TaskChange) -> TaskSignal | None:
    """What a committed change means: a due time set wakes, a dropped lease aborts."""
    due_at = None if change.due_at is msgspec.UNSET else change.due_at
    if due_at is None and not change.drop_lease:
        return None
    return TaskSignal(task_id, due_at=due_at, abort=change.drop_lease)


class Signals:
    """The listeners of one store, called in the order they subscribed."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, signal: TaskSignal | None) -> None:
        if signal is None:
            return
        for listener in list(self._listeners):
            listener(signal)
