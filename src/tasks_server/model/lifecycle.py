"""Task states and which action may move a task from which state: one table."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    REVOKED = "REVOKED"


class Action(StrEnum):
    EXECUTE = "execute"
    PAUSE = "pause"
    RESUME = "resume"
    REVOKE = "revoke"
    EDIT = "edit"


# action -> {state it may start from: state it leads to}
TRANSITIONS: dict[Action, dict[State, State]] = {
    Action.EXECUTE: {State.RUNNING: State.RUNNING},
    Action.PAUSE: {State.RUNNING: State.PAUSED},
    Action.RESUME: {State.PAUSED: State.RUNNING},
    Action.REVOKE: {State.RUNNING: State.REVOKED, State.PAUSED: State.REVOKED},
    Action.EDIT: {State.RUNNING: State.RUNNING, State.PAUSED: State.PAUSED},
}

# Actions that cannot act on a request already on the wire. (Execute of a task
# in flight is allowed and changes nothing: the task is being run now, once.)
REFUSED_IN_FLIGHT = frozenset({Action.EDIT})

IN_QUEUE = frozenset({State.RUNNING, State.PAUSED})
FINISHED = frozenset({State.SUCCESS, State.ERROR, State.REVOKED})


class TransitionRefused(Exception):
    """The action is not allowed for the task in its current state."""


def target_state(action: Action, state: State, in_flight: bool) -> State:
    """The state `action` leads to from `state`, or raise TransitionRefused."""
    allowed = TRANSITIONS[action]
    if state not in allowed:
        starts = " or ".join(s.value for s in allowed)
        raise TransitionRefused(f"Cannot {action.value} a {state.value} task (needs {starts})")
    if in_flight and action in REFUSED_IN_FLIGHT:
        raise TransitionRefused(f"Cannot {action.value} a task whose request is in flight")
    return allowed[state]
