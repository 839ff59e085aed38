"""What is kept: the Store protocol, the one interface to the database, and its errors.

The rows it reads and writes are model.records; task data arrives already
sealed (encrypted), so the store never sees a secret in clear.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tasks_server.model.records import (
    AttemptRecord,
    Claim,
    ListParams,
    OwnerRow,
    TaskChange,
    TaskRow,
)


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
