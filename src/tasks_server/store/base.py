"""What is kept: the Store protocol, the one interface to the database, and its errors.

The rows it reads and writes are model.records; task data arrives already
sealed (encrypted), so the store never sees a secret in clear. Every store
passes the same behaviour suite (tests/store/test_contract.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from tasks_server.model.lifecycle import State
from tasks_server.model.records import (
    ATTEMPT_HISTORY,
    AttemptLog,
    AttemptRecord,
    Claim,
    InstanceRow,
    ListParams,
    OwnerRow,
    SealedColumns,
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


class StoreMissing(Exception):
    """There is no database where the settings say (and it was not to be created)."""


class InUse(Exception):
    """Live servers use the database, so a tool that needs it to itself refuses."""

    def __init__(self, database: str, servers: list[str]) -> None:
        super().__init__(f"{database} is in use by a running server ({', '.join(servers)})")
        self.servers = servers


class TaskSignal(msgspec.Struct, frozen=True):
    """What a committed change of a task means to the schedulers."""

    task_id: str
    due_at: int | None = None  # it is due then: look again if that is sooner than planned
    abort: bool = False  # its attempt in flight, if any, must stop


Listener = Callable[[TaskSignal], None]


class StoreFigures(msgspec.Struct, frozen=True):
    """What the database says of the whole server, for metrics and the operator view."""

    tasks: dict[State, int]  # every owner's tasks by state
    due_backlog: int  # due and not started
    oldest_due_at: int | None  # the due time of the longest waiting of those
    last_backup_at: int | None  # when the last scheduled backup that succeeded finished


class BackupRun(msgspec.Struct, frozen=True):
    """One scheduled backup, as backup_run keeps it."""

    tick: int
    instance_id: str
    state: str  # RUNNING, DONE or FAILED
    started_at: int
    finished_at: int | None
    location: str | None
    size: int | None
    error: str | None


class Store(Protocol):
    """The one interface through which the server reaches its database."""

    async def open(self, *, create: bool = True) -> None:
        """Connect and bring the schema to the latest version; without `create`, StoreMissing
        when there is no database yet."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return once the database answers a query; raise otherwise."""

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` on the loop after each committed change a client made to a task
        (registration, action, edit, delete); returns the call that unsubscribes."""

    # owners
    async def create_owner(self, owner: OwnerRow) -> None:
        """Insert; raise Conflict when the name is taken."""

    async def get_owner(self, owner_id: str, *, cached: bool = False) -> OwnerRow | None:
        """The owner; `cached` allows a copy kept since its last key change, whose queue
        count may be a moment old (what authentication needs)."""

    async def delete_owner(self, owner_id: str, name: str) -> None:
        """Delete with its finished tasks; NotFound, or Conflict while tasks are queued."""

    async def replace_owner_key(self, owner_id: str, old_digest: bytes, new_digest: bytes) -> bool:
        """Swap the key digest if it is still `old_digest`; False when it changed meanwhile."""

    # tasks, scoped to their owner
    async def insert_task(self, task: TaskRow, limit: int) -> None:
        """Insert, counting it in the owner's queue; LimitReached at `limit`, NotFound when
        the owner does not exist (any more)."""

    async def get_task(self, owner_id: str, task_id: str) -> TaskRow | None: ...
    async def list_tasks(self, params: ListParams) -> list[TaskRow]:
        """The owner's tasks in `params.order`, ties broken by id in the same direction."""

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
    async def live_instances(self, now: int, stale_ms: int) -> list[InstanceRow]:
        """The instances alive by the one rule of store.instances."""

    async def release_dead_leases(self, instance_id: str, now: int, stale_ms: int) -> int:
        """Remove the instances (other than `instance_id`) that are not alive, and make the
        tasks leased by an instance that is gone due now; returns how many tasks."""

    async def release_leases(self, instance_id: str, now: int) -> int:
        """Give back this instance's leases (graceful stop) and remove it."""

    async def claim_due_tasks(self, now: int, limit: int, instance_id: str, token: int) -> Claim:
        """Lease up to `limit` tasks due at `now`, oldest due first, in one statement."""

    async def record_attempts(
        self,
        records: list[AttemptRecord],
        attempts: Sequence[AttemptLog] = (),
        *,
        history: int = ATTEMPT_HISTORY,
    ) -> int:
        """Write outcomes whose lease still holds, and add `attempts` to their tasks'
        history (also where the lease ended: the attempt happened), keeping each task's
        newest `history`; one commit. Returns how many outcomes were written."""

    async def list_attempts(
        self, owner_id: str, task_id: str, before: int, limit: int
    ) -> list[AttemptLog] | None:
        """The task's attempts numbered below `before`, newest first; None when the owner
        has no such task."""

    async def figures(self, now: int) -> StoreFigures:
        """Counts across owners, the backlog at `now`, the last backup: cheap at any size
        (counters and indexes, no scan of the tasks)."""

    async def in_flight_by_instance(self) -> dict[str, int]:
        """How many tasks each instance has leased (in flight) now."""

    async def recent_backups(self, limit: int) -> list[BackupRun]:
        """The newest scheduled backups, newest first."""

    async def fill_target_hosts(
        self, after: str, limit: int, host_of: Callable[[str, bytes], str]
    ) -> str | None:
        """Give up to `limit` rows written before target_host existed (ids past `after`)
        their host, `host_of(id, payload)`; the last id seen, None when none is left."""

    async def count_tasks(self, owner_id: str) -> dict[State, int]:
        """The owner's tasks in each state (every state, 0 where none), from counters
        kept with every change: no scan of the tasks."""

    # key rotation
    async def reseal_tasks(
        self,
        after: str,
        limit: int,
        reseal: Callable[[SealedColumns], SealedColumns | None],
        *,
        now: int,
        stale_ms: int,
    ) -> list[str]:
        """One batch of a key rotation, in one transaction: InUse while a live server uses
        the database; else the sealed columns of up to `limit` tasks with ids after `after`
        (in id order) are passed to `reseal`, and what it returns is written back. Returns
        the ids read."""

    # backups
    async def claim_backup_tick(
        self, tick: int, instance_id: str, now: int, stale_ms: int
    ) -> str | None:
        """Claim the backup of `tick` for this instance, atomically across instances: None
        when it is ours, else why not (another took it, or a live one still backs up)."""

    async def finish_backup_tick(
        self,
        tick: int,
        instance_id: str,
        now: int,
        *,
        location: str | None,
        size: int | None,
        error: str | None,
    ) -> None:
        """Record how the backup of a claimed tick ended (`error` None: it succeeded)."""

    # retention
    async def purge_finished(self, before: int, limit: int) -> int:
        """Delete up to `limit` finished tasks (SUCCESS, ERROR, REVOKED) that ended before
        `before`, oldest first; returns how many. 0 also when another node is purging."""


class SnapshotFacts(msgspec.Struct, frozen=True):
    schema_version: int
    task_count: int


class SnapshotError(Exception):
    """A snapshot cannot be taken, checked or put in place; the message says why."""


class Snapshots(Protocol):
    """The database as one file, for backups: a consistent copy out, a checked copy in.

    Blocking calls (they copy whole databases): run them off the loop.
    """

    @property
    def database(self) -> str:
        """Where the database is, as a person would name it."""

    @property
    def stem(self) -> str:
        """What backup names start with (the database file's name without `.db`)."""

    def scratch_dir(self) -> Path:
        """A directory beside the database for temporary files (so a swap is a rename)."""

    def take(self, into: Path) -> SnapshotFacts:
        """A consistent copy of the database, taken while servers keep writing, in the new
        file `into`; SnapshotError when there is no database."""

    def check(self, candidate: Path) -> SnapshotFacts:
        """Refuse (SnapshotError) a file that is not a sound database this version can run."""

    def sealed_sample(self, candidate: Path) -> tuple[str, bytes] | None:
        """(task id, sealed payload) of one task of `candidate`, to check the key opens it."""

    def swap_in(self, candidate: Path, stale_ms: int) -> Path | None:
        """Put `candidate` in place of the database, which is kept aside; returns where
        (None when there was none). InUse, or SnapshotError, while anything uses it."""

    def refuse_if_served(self, stale_ms: int) -> None:
        """InUse while live servers use the database."""


def state_counts(rows: Iterable[tuple[str, int]]) -> dict[State, int]:
    """Counts by state from (state, count) rows, every state present."""
    counts = dict.fromkeys(State, 0)
    for state, count in rows:
        counts[State(state)] += int(count)
    return counts
