"""What is kept: the rows the store reads and writes, and the Store protocol.

Stored task data (payload, response, metadata) arrives here already sealed
(encrypted); the store never sees a secret in clear. Scheduling columns
(state, due times, counters) stay in clear so they can be indexed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import msgspec

T = TypeVar("T")


class OwnerRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    key_digest: bytes
    created_at: int
    tasks_in_queue: int


class TaskRow(msgspec.Struct, frozen=True):
    id: str
    owner_id: str
    state: str
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

    @property
    def in_flight(self) -> bool:
        return self.lease_token is not None


class TaskChange(msgspec.Struct, frozen=True, omit_defaults=True):
    """Columns an action sets on a task; UNSET fields are left as they are."""

    state: str | msgspec.UnsetType = msgspec.UNSET
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


class Claim(msgspec.Struct, frozen=True):
    """Tasks leased by one claim, and the earliest due time left after it."""

    tasks: list[ClaimedTask]
    next_due_at: int | None


class AttemptRecord(msgspec.Struct, frozen=True):
    """The outcome of one attempt, as it is written back (only if the lease still holds)."""

    id: str
    lease_token: int
    state: str
    status_code: int
    response: bytes | None
    error: bytes | None
    retry_count: int
    estimate_next_retry_at: int
    estimate_end_at: int
    due_at: int | None


class ListParams(msgspec.Struct, frozen=True):
    owner_id: str
    limit: int
    offset: int
    order: str  # a column name from ORDER_COLUMNS
    descending: bool
    state: str | None


# API order names -> task columns; the only values ever placed in ORDER BY
ORDER_COLUMNS = {
    "createdAt": "created_at",
    "estimateEndAt": "estimate_end_at",
    "estimateExecutionAt": "estimate_execution_at",
}


class NotFound(Exception):
    """No such row for this caller."""


class Conflict(Exception):
    """The row exists but the change is not allowed in its current state."""


class LimitReached(Exception):
    """The owner's tasks-in-queue limit is reached."""


class StoreUnavailable(Exception):
    """The database cannot take writes right now (read-only, disk full, locked)."""


class Store(Protocol):
    """The one interface through which the server reaches its database."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # owners
    async def create_owner(self, owner: OwnerRow) -> None:
        """Insert; raise Conflict when the name is taken."""

    async def get_owner(self, owner_id: str) -> OwnerRow | None: ...
    async def delete_owner(self, owner_id: str, name: str) -> None:
        """Delete with its finished tasks; NotFound, or Conflict while tasks are queued."""

    async def replace_owner_key(self, owner_id: str, old_digest: bytes, new_digest: bytes) -> bool:
        """Swap the key digest if it is still `old_digest`; False when it changed meanwhile."""

    # tasks, scoped to their owner
    async def insert_task(self, task: TaskRow, limit: int) -> None:
        """Insert, counting it in the owner's queue; LimitReached at `limit`."""

    async def get_task(self, owner_id: str, task_id: str) -> TaskRow | None: ...
    async def list_tasks(self, params: ListParams) -> list[TaskRow]: ...
    async def change_task(
        self, owner_id: str, task_id: str, decide: Callable[[TaskRow], TaskChange]
    ) -> TaskRow:
        """Read, decide and write one task in one transaction; returns the row after.

        `decide` may raise (e.g. Conflict) to leave the row unchanged; NotFound
        when the task is not the owner's.
        """

    async def delete_task(self, owner_id: str, task_id: str) -> TaskRow:
        """Delete in any state and return the row as it was; NotFound otherwise."""

    # scheduling
    async def register_instance(self, instance_id: str, host: str, pid: int, now: int) -> None: ...
    async def heartbeat(self, instance_id: str, now: int) -> None: ...
    async def release_dead_leases(
        self, instance_id: str, now: int, stale_before: int, host: str
    ) -> int:
        """Make tasks leased by dead instances due now; returns how many."""

    async def release_leases(self, instance_id: str, now: int) -> int:
        """Give back this instance's leases (graceful stop) and remove it."""

    async def claim_due_tasks(self, now: int, limit: int, instance_id: str, token: int) -> Claim:
        """Lease up to `limit` tasks due at `now`, oldest due first, in one statement."""

    async def record_attempts(self, records: list[AttemptRecord]) -> int:
        """Write outcomes whose lease still holds; returns how many were written."""
