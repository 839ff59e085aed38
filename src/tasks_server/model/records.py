"""The rows the store reads and writes: owners, tasks, claims, outcomes, instances.

Stored task data (payload, response, metadata, error) is held here already
sealed (encrypted): the store never sees a secret in clear. Scheduling
columns (state, due times, counters) stay in clear so they can be indexed.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from tasks_server.model.lifecycle import State


class OwnerRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    key_digest: bytes
    created_at: int
    tasks_in_queue: int


class TaskRow(msgspec.Struct, frozen=True):
    id: str
    owner_id: str
    state: State
    created_at: int
    estimate_execution_at: int
    estimate_end_at: int
    estimate_next_retry_at: int
    status_code: int
    retry_count: int
    retry_limit: int
    attempts: int
    error: bytes | None
    response: bytes | None
    metadata: bytes | None
    payload: bytes
    due_at: int | None
    lease_token: int | None
    lease_ms: int
    # a keyed digest of the URL's host (TaskSealer.index_host): lists filter on it, and the
    # host, part of the sealed request, cannot be read back; "" until the server fills it in
    # (a row written before the column existed, or resealed by rotate-key)
    target_host: str = ""

    @property
    def in_flight(self) -> bool:
        return self.lease_token is not None


class TaskChange(msgspec.Struct, frozen=True, omit_defaults=True):
    """Columns an action sets on a task; UNSET fields are left as they are."""

    state: State | msgspec.UnsetType = msgspec.UNSET
    estimate_execution_at: int | msgspec.UnsetType = msgspec.UNSET
    estimate_end_at: int | msgspec.UnsetType = msgspec.UNSET
    estimate_next_retry_at: int | msgspec.UnsetType = msgspec.UNSET
    status_code: int | msgspec.UnsetType = msgspec.UNSET
    retry_count: int | msgspec.UnsetType = msgspec.UNSET
    retry_limit: int | msgspec.UnsetType = msgspec.UNSET
    error: bytes | msgspec.UnsetType | None = msgspec.UNSET
    response: bytes | msgspec.UnsetType | None = msgspec.UNSET
    metadata: bytes | msgspec.UnsetType | None = msgspec.UNSET
    payload: bytes | msgspec.UnsetType = msgspec.UNSET
    due_at: int | msgspec.UnsetType | None = msgspec.UNSET
    lease_ms: int | msgspec.UnsetType = msgspec.UNSET
    target_host: str | msgspec.UnsetType = msgspec.UNSET
    # dropping the lease makes a late result of an aborted attempt count for nothing
    drop_lease: bool = False


class ClaimedTask(msgspec.Struct, frozen=True):
    """A task leased to this scheduler for one attempt."""

    id: str
    payload: bytes
    retry_count: int
    retry_limit: int
    attempts: int
    estimate_execution_at: int
    estimate_next_retry_at: int
    lease_token: int
    due_at: int  # when this attempt was due (before the claim moved due_at to the lease end)


class Claim(msgspec.Struct, frozen=True):
    """Tasks leased by one claim, and the earliest due time left after it."""

    tasks: list[ClaimedTask]
    next_due_at: int | None


class AttemptRecord(msgspec.Struct, frozen=True):
    """The outcome of one attempt, as it is written back (only if the lease still holds)."""

    id: str
    lease_token: int
    state: State
    status_code: int
    response: bytes | None
    error: bytes | None
    retry_count: int
    estimate_next_retry_at: int
    estimate_end_at: int
    due_at: int | None


# attempts kept per task unless ATTEMPT_HISTORY says otherwise
ATTEMPT_HISTORY = 20


class AttemptLog(msgspec.Struct, frozen=True):
    """One attempt as a task's history keeps it (kept with the task, the newest ones).

    Times are ms since the epoch; the phases are ms (model.outcome.AttemptTimings).
    `error` is sealed like the task's; "aborted" for an attempt stopped by a pause,
    revoke or delete.
    """

    task_id: str
    number: int
    due_at: int
    started_at: int
    ended_at: int
    status_code: int
    error: bytes | None
    response_bytes: int
    http_version: str | None
    remote_address: str | None
    dns_ms: float
    connect_ms: float
    tls_ms: float
    first_byte_ms: float
    total_ms: float


class ListParams(msgspec.Struct, frozen=True):
    owner_id: str
    limit: int
    offset: int
    order: str  # a column name from ORDER_COLUMNS
    descending: bool
    state: State | None
    after: str | None = None  # a task id: the rows past it in this order
    # time ranges, ms: from inclusive, to exclusive ("due": estimate_execution_at)
    created_from: int | None = None
    created_to: int | None = None
    due_from: int | None = None
    due_to: int | None = None
    # the digests of the target host asked for (one per key that may have written them)
    host_indexes: tuple[str, ...] = ()

    def page_sql(self, placeholder: Callable[[str, object], str]) -> tuple[str, str]:
        """ORDER BY, and the conditions of the filters and of the start past `after`, with
        `placeholder(name, value)` giving each value's parameter: the one place they are
        written."""
        direction, compare = ("DESC", "<") if self.descending else ("ASC", ">")
        order_by = f"{self.order} {direction}, id {direction}"
        conditions = [
            f"AND {column} {operator} {placeholder(field, getattr(self, field))}"
            for field, column, operator in _RANGES
            if getattr(self, field) is not None
        ]
        if self.host_indexes:
            digests = ", ".join(
                placeholder(f"host_{n}", digest) for n, digest in enumerate(self.host_indexes)
            )
            conditions.append(f"AND target_host IN ({digests})")
        if self.after is not None:
            conditions.append(
                f"AND ({self.order}, id) {compare} (SELECT {self.order}, id FROM task"
                f" WHERE id = {placeholder('after', self.after)}"
                f" AND owner_id = {placeholder('owner_id', self.owner_id)})"
            )
        return order_by, " ".join(conditions)


_RANGES = (
    ("created_from", "created_at", ">="),
    ("created_to", "created_at", "<"),
    ("due_from", "estimate_execution_at", ">="),
    ("due_to", "estimate_execution_at", "<"),
)


# API order names -> task columns; the only values ever placed in ORDER BY
ORDER_COLUMNS = {
    "createdAt": "created_at",
    "estimateEndAt": "estimate_end_at",
    "estimateExecutionAt": "estimate_execution_at",
}


class InstanceRow(msgspec.Struct, frozen=True):
    """A server process (one scheduler) registered in the database, and its last heartbeat."""

    id: str
    host: str
    pid: int
    heartbeat_at: int


class SealedColumns(msgspec.Struct, frozen=True):
    """A task's sealed columns, as key rotation reads and rewrites them, with the sealed
    errors of its attempts (number, error)."""

    id: str
    payload: bytes
    metadata: bytes | None
    response: bytes | None
    error: bytes | None
    attempt_errors: tuple[tuple[int, bytes], ...] = ()
