"""What each lifecycle action changes on a task row, as pure functions of the row."""

from __future__ import annotations

from tasks_server.model.lifecycle import Action, State, target_state
from tasks_server.model.records import TaskChange, TaskRow


def next_attempt_at(row: TaskRow) -> int:
    """The planned time of the task's next attempt (first attempt or next retry)."""
    return row.estimate_next_retry_at if row.retry_count > 0 else row.estimate_execution_at


def pause(row: TaskRow, now: int) -> TaskChange:
    target_state(Action.PAUSE, row.state, row.in_flight)
    return TaskChange(state=State.PAUSED, estimate_end_at=now, due_at=None, drop_lease=True)


def resume(row: TaskRow, now: int) -> TaskChange:
    target_state(Action.RESUME, row.state, row.in_flight)
    # wall-clock: a time that passed while paused is simply due now
    return TaskChange(state=State.RUNNING, estimate_end_at=0, due_at=next_attempt_at(row))


def revoke(row: TaskRow, now: int) -> TaskChange:
    target_state(Action.REVOKE, row.state, row.in_flight)
    return TaskChange(
        state=State.REVOKED,
        estimate_end_at=now,
        estimate_next_retry_at=0,
        status_code=0,
        response=None,
        due_at=None,
        drop_lease=True,
    )


def execute(row: TaskRow, now: int) -> TaskChange:
    target_state(Action.EXECUTE, row.state, row.in_flight)
    if row.in_flight:
        # its request is on the wire now: making it due again would send it twice
        return TaskChange()
    if row.retry_count > 0:
        return TaskChange(estimate_next_retry_at=now, due_at=now)
    return TaskChange(estimate_execution_at=now, due_at=now)
