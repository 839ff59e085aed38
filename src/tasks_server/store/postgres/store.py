"""The scale-out store: many nodes on one PostgreSQL database (asyncpg, a small pool).

- Registrations of concurrent requests go in together: while one group's
  transaction runs, the next requests wait and then form the next group (one
  multi-row INSERT, one commit, `synchronous_commit` on).
- A claim is one statement (`FOR UPDATE SKIP LOCKED` on the partial due index),
  committed without waiting for the WAL flush: a claim lost to a crash only means
  the task is sent again, as on SQLite.
- Outcomes are written back in one statement per batch; the owners' queue
  counters are moved once per owner per statement.
- Every change a client makes is announced with NOTIFY in its own transaction
  (so only once it commits); each node LISTENs and tells its subscribers, which
  wakes its scheduler or aborts a request it has in flight.
- A lost connection (PostgreSQL restarting) raises StoreUnavailable: the API
  answers 503 meanwhile, the scheduler retries, the pool reconnects by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import asyncpg
import msgspec

from tasks_server.config import redact_url
from tasks_server.model.lifecycle import IN_QUEUE, State
from tasks_server.model.records import (
    ATTEMPT_HISTORY,
    AttemptLog,
    AttemptRecord,
    Claim,
    ClaimedTask,
    InstanceRow,
    ListParams,
    OwnerRow,
    SealedColumns,
    TaskChange,
    TaskRow,
)
from tasks_server.observer import NO_OBSERVER, Observer
from tasks_server.store import instances, queries
from tasks_server.store.base import (
    BackupRun,
    Conflict,
    InUse,
    LimitReached,
    Listener,
    NotFound,
    StoreFigures,
    StoreMissing,
    StoreUnavailable,
    TaskSignal,
    state_counts,
)
from tasks_server.store.postgres.migrate import apply_migrations, is_migrated
from tasks_server.store.postgres.notify import LOOK_AGAIN, Notifications
from tasks_server.store.postgres.owner_cache import OwnerCache
from tasks_server.store.signals import Signals, signal_of_change

log = logging.getLogger(__name__)
# a connection of the pool, as the store's statements use it
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

T = TypeVar("T")
R = TypeVar("R")

PACKAGE = __package__ or "tasks_server.store.postgres"
POOL_SIZE = 8
KEEP_BACKUP_RUNS = 1000  # rows of backup_run kept (one per tick)
TASK_FIELDS = msgspec.structs.fields(TaskRow)
ATTEMPT_FIELDS = msgspec.structs.fields(AttemptLog)
RECORD_FIELDS = msgspec.structs.fields(AttemptRecord)
_TYPES = {int: "bigint", str: "text", bytes: "bytea", float: "double precision"}
FOLD_COUNTS_EVERY = 10  # heartbeats (s) between two folds of the count deltas
_FOLD_LOCK = "tasks_server:fold_counts"
_CHANGE_FIELDS = tuple(f.name for f in msgspec.structs.fields(TaskChange) if f.name != "drop_lease")
_STATES = {state.value: state for state in State}
_QUEUE = frozenset(state.value for state in IN_QUEUE)
# the parameters of register_tasks after the task arrays, in order
_AFTER_ARRAYS = ("limits", "queue_states", "channel", "prefix")
# a backup tick is claimed under this advisory lock, so two nodes never both check and claim
_BACKUP_LOCK = "tasks_server:backup"
_RETENTION_LOCK = "tasks_server:retention"
# what a lost or refused connection raises: the database cannot answer now
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby
    # a connection cut in the middle of an operation is left in a state it cannot leave
    asyncpg.exceptions.InternalClientError,
    # e.g. "database ... is not currently accepting connections"
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
)


def _array_type(field: msgspec.structs.FieldInfo) -> str:
    """The PostgreSQL array type of a TaskRow field, for unnest()."""
    kinds = [t for t in getattr(field.type, "__args__", (field.type,)) if t is not type(None)]
    kind = kinds[0]
    if isinstance(kind, type) and issubclass(kind, str):
        return "text[]"
    return f"{_TYPES[kind]}[]"


class Grouped(Generic[T, R]):
    """Concurrent calls gathered into one run: while a run is under way the next calls
    wait, then go together. `run` returns one result per item: a value, or an
    exception that fails that item alone."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R | BaseException]]]) -> None:
        self._run = run
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._running = False

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    results = await self._run([item for item, _ in group])
                except BaseException as exc:
                    results = [exc] * len(group)
                for (_, future), result in zip(group, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._running = False


class PostgresStore:
    """Store on a PostgreSQL database (see the module docstring)."""

    def __init__(self, url: str, observer: Observer = NO_OBSERVER) -> None:
        self.url = url
        self._observer = observer
        columns = ", ".join(f.name for f in TASK_FIELDS)
        arrays = ", ".join(f"${n}::{_array_type(f)}" for n, f in enumerate(TASK_FIELDS, 1))
        after = len(TASK_FIELDS)
        self._q = queries.load(
            PACKAGE,
            "queries",
            {
                "task_columns": columns,
                "task_arrays": arrays,
                "attempt_columns": ", ".join(f.name for f in ATTEMPT_FIELDS),
                **{name: f"${after + n}" for n, name in enumerate(_AFTER_ARRAYS, 1)},
            },
        )
        self._pool: asyncpg.Pool | None = None
        self._signals = Signals()
        self._notifications: Notifications | None = None
        self._owners = OwnerCache()
        self._heartbeats = 0
        self._registrations: Grouped[tuple[TaskRow, int], None] = Grouped(self._insert_group)

    # ---- lifetime ----

    async def open(self, *, create: bool = True) -> None:
        try:
            pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=POOL_SIZE, reset=_session_left_clean
            )
        except asyncpg.exceptions.InvalidCatalogNameError as exc:
            raise StoreMissing(f"no database: {exc}") from None
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from None
        try:
            async with pool.acquire() as conn:
                if not create and not await is_migrated(conn):
                    raise StoreMissing("no Tasks Server schema in this database")
                await apply_migrations(conn)
                schema = await conn.fetchval("SELECT current_schema()")
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        # one channel per schema: several Tasks Servers may share a database
        self._notifications = Notifications(
            self.url, f"tasks_server.{schema}", self._heard, self._owners.forget
        )
        await self._notifications.start()

    async def close(self) -> None:
        if self._notifications is not None:
            await self._notifications.stop()
            self._notifications = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._signals.subscribe(listener)

    def _heard(self, signal: TaskSignal) -> None:
        if signal is LOOK_AGAIN:  # what other nodes said of their owners meanwhile is gone
            self._owners.forget()
        self._signals.publish(signal)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        assert self._pool is not None, "store is not open"
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from None

    @asynccontextmanager
    async def _transaction(self, *, durable: bool = True) -> AsyncIterator[Connection]:
        async with self._connection() as conn, conn.transaction():
            if not durable:
                # lost to a crash, this only means a task is sent again (as on SQLite)
                await conn.execute("SET LOCAL synchronous_commit = off")
            yield conn

    async def _announce(self, conn: Connection, signal: TaskSignal | None) -> None:
        """NOTIFY the other nodes of `signal`, in the caller's transaction."""
        if signal is not None and self._notifications is not None:
            await self._notifications.notify(conn, signal)

    # ---- owners ----

    async def create_owner(self, owner: OwnerRow) -> None:
        async with self._connection() as conn:
            try:
                await conn.execute(
                    self._q["insert_owner"],
                    owner.id,
                    owner.name,
                    owner.key_digest,
                    owner.created_at,
                )
            except asyncpg.exceptions.UniqueViolationError:
                raise Conflict("Owner has already registered") from None

    async def get_owner(self, owner_id: str, *, cached: bool = False) -> OwnerRow | None:
        listening = self._notifications is not None and self._notifications.listening
        if cached and listening and (known := self._owners.get(owner_id)) is not None:
            return known
        generation = self._owners.generation
        async with self._connection() as conn:
            row = await conn.fetchrow(self._q["get_owner"], owner_id)
        if row is None:
            return None
        owner = OwnerRow(*row)
        if listening:
            self._owners.keep(owner, generation)
        return owner

    async def delete_owner(self, owner_id: str, name: str) -> None:
        async with self._transaction() as conn:
            queued = await conn.fetchval(self._q["lock_owner_named"], owner_id, name)
            if queued is None:
                raise NotFound(name)
            if queued > 0:
                raise Conflict("Owner still has RUNNING or PAUSED tasks")
            await conn.execute(self._q["delete_owner"], owner_id)
            await conn.execute(self._q["delete_owner_counts"], owner_id)
            await self._owner_changed(conn, owner_id)
        self._owners.forget(owner_id)

    async def replace_owner_key(self, owner_id: str, old_digest: bytes, new_digest: bytes) -> bool:
        async with self._transaction() as conn:
            status = await conn.execute(
                self._q["replace_owner_key"], owner_id, old_digest, new_digest
            )
            replaced = _count(status) == 1
            if replaced:
                await self._owner_changed(conn, owner_id)
        self._owners.forget(owner_id)
        return replaced

    async def _owner_changed(self, conn: Connection, owner_id: str) -> None:
        """Tell the other nodes to forget the owner, in the caller's transaction."""
        self._owners.forget(owner_id)  # and a read racing with the change is not kept
        if self._notifications is not None:
            await self._notifications.notify_owner_changed(conn, owner_id)

    # ---- tasks ----

    async def insert_task(self, task: TaskRow, limit: int) -> None:
        await self._registrations.submit((task, limit))
        self._signals.publish(TaskSignal(task.id, due_at=task.due_at))

    async def _insert_group(self, items: list[tuple[TaskRow, int]]) -> list[BaseException | None]:
        """A group's registrations in one statement (see register_tasks): one round trip,
        since each one waits for a turn of a loop that is busy with the requests."""
        assert self._notifications is not None, "store is not open"
        tasks = [task for task, _ in items]
        started = time.perf_counter()
        async with self._connection() as conn:
            answers = await conn.fetch(
                self._q["register_tasks"],
                *_columns(tasks),
                [limit for _, limit in items],
                list(_QUEUE),
                self._notifications.channel,
                self._notifications.prefix,
            )
        self._observer.store_committed(time.perf_counter() - started, len(items))
        results: list[BaseException | None] = []
        for (task, limit), (owner_found, fits, inserted, _) in zip(items, answers, strict=True):
            if not owner_found:
                results.append(NotFound(task.owner_id))
            elif not fits:
                results.append(LimitReached(limit))
            elif not inserted:
                results.append(Conflict(f"a task {task.id} exists already"))
            else:
                results.append(None)
        return results

    async def get_task(self, owner_id: str, task_id: str) -> TaskRow | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(self._q["get_task"], task_id, owner_id)
        return _task_row(row) if row else None

    async def list_tasks(self, params: ListParams) -> list[TaskRow]:
        values: list[Any] = [params.owner_id, params.limit, params.offset]
        if params.state:
            values.append(params.state.value)

        def placeholder(name: str, value: object) -> str:
            if name == "owner_id":
                return "$1"
            values.append(value)
            return f"${len(values)}"

        order_by, after = params.page_sql(placeholder)
        name = "list_tasks_in_state" if params.state else "list_tasks"
        statement = self._q[name].replace("{order_by}", order_by).replace("{after}", after)
        async with self._connection() as conn:
            rows = await conn.fetch(statement, *values)
        return [_task_row(row) for row in rows]

    async def change_task(
        self, owner_id: str, task_id: str, decide: Callable[[TaskRow], TaskChange]
    ) -> TaskRow:
        async with self._transaction() as conn:
            found = await conn.fetchrow(self._q["lock_task"], task_id, owner_id)
            if found is None:
                raise NotFound(task_id)
            row = _task_row(found)
            update = decide(row)
            values = [
                (name, getattr(update, name))
                for name in _CHANGE_FIELDS
                if getattr(update, name) is not msgspec.UNSET
            ]
            assignments = [f"{name} = ${n}" for n, (name, _) in enumerate(values, 2)]
            if update.drop_lease:
                assignments += ["lease_owner = NULL", "lease_token = NULL"]
            if not assignments:
                return row
            statement = self._q["update_task"].replace("{assignments}", ", ".join(assignments))
            updated = await conn.fetchrow(statement, task_id, *(v for _, v in values))
            assert updated is not None  # the row is locked: it is still there
            after = _task_row(updated)
            delta = (after.state in _QUEUE) - (row.state in _QUEUE)
            if delta:
                await conn.execute(self._q["count_in_queue"], [owner_id], [delta])
            signal = signal_of_change(task_id, update)
            await self._announce(conn, signal)
        self._signals.publish(signal)
        return after

    async def delete_task(self, owner_id: str, task_id: str) -> TaskRow:
        async with self._transaction() as conn:
            found = await conn.fetchrow(self._q["delete_task"], task_id, owner_id)
            if found is None:
                raise NotFound(task_id)
            row = _task_row(found)
            if row.state in _QUEUE:
                await conn.execute(self._q["count_in_queue"], [owner_id], [-1])
            signal = TaskSignal(task_id, abort=True)
            await self._announce(conn, signal)
        self._signals.publish(signal)
        return row

    # ---- scheduling ----

    async def register_instance(self, instance_id: str, host: str, pid: int, now: int) -> None:
        instances.note_started_here(instance_id, host, pid)
        async with self._transaction(durable=False) as conn:
            await conn.execute(self._q["register_instance"], instance_id, host, pid, now)

    async def heartbeat(self, instance_id: str, now: int) -> None:
        async with self._transaction(durable=False) as conn:
            await conn.execute(self._q["heartbeat"], instance_id, now)
        self._heartbeats += 1
        if self._heartbeats % FOLD_COUNTS_EVERY == 0:
            await self.fold_task_counts()

    async def fold_task_counts(self) -> None:
        """Fold the count deltas (one node at a time), so that a count reads few rows."""
        async with self._transaction() as conn:
            if await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", _FOLD_LOCK):
                await conn.execute(self._q["fold_task_counts"])

    async def _instances(self, conn: Connection) -> list[InstanceRow]:
        return [InstanceRow(*row) for row in await conn.fetch(self._q["list_instances"])]

    async def _live_instances(self, conn: Connection, now: int, stale_ms: int) -> list[InstanceRow]:
        found = await self._instances(conn)
        return [row for row in found if instances.is_alive(row, now, stale_ms)]

    async def live_instances(self, now: int, stale_ms: int) -> list[InstanceRow]:
        async with self._connection() as conn:
            return await self._live_instances(conn, now, stale_ms)

    async def release_dead_leases(self, instance_id: str, now: int, stale_ms: int) -> int:
        async with self._transaction(durable=False) as conn:
            dead = [
                other.id
                for other in await self._instances(conn)
                if other.id != instance_id and not instances.is_alive(other, now, stale_ms)
            ]
            if dead:
                await conn.execute(self._q["delete_instances"], dead)
            return _count(await conn.execute(self._q["release_orphan_leases"], now))

    async def release_leases(self, instance_id: str, now: int) -> int:
        async with self._transaction() as conn:
            count = _count(await conn.execute(self._q["release_instance_leases"], instance_id, now))
            await conn.execute(self._q["delete_instance"], instance_id)
        return count

    async def claim_due_tasks(self, now: int, limit: int, instance_id: str, token: int) -> Claim:
        async with self._transaction(durable=False) as conn:
            rows = await conn.fetch(self._q["claim_due_tasks"], now, limit, instance_id, token)
            next_due: int | None = await conn.fetchval(self._q["next_due_at"])
        tasks = [
            ClaimedTask(
                task_id, payload, retries, retry_limit, attempts, at, retry_at, token, due_at
            )
            for task_id, payload, retries, retry_limit, attempts, at, retry_at, due_at in rows
        ]
        return Claim(tasks, next_due)

    async def record_attempts(
        self,
        records: list[AttemptRecord],
        attempts: Sequence[AttemptLog] = (),
        *,
        history: int = ATTEMPT_HISTORY,
    ) -> int:
        if not records and not attempts:
            return 0
        # the history is trimmed only where it may have grown past `history`: mostly nowhere
        trims = [(a.task_id, a.number - history) for a in attempts if a.number > history]
        started = time.perf_counter()
        async with self._connection() as conn:  # one statement: its own transaction
            written: int = await conn.fetchval(
                self._q["record_outcomes"],
                *(_columns(records) if records else [[]] * len(RECORD_FIELDS)),
                list(map(msgspec.structs.astuple, attempts)),
                [task_id for task_id, _ in trims],
                [below for _, below in trims],
                list(_QUEUE),
            )
        self._observer.store_committed(time.perf_counter() - started, 1)
        return written

    async def list_attempts(
        self, owner_id: str, task_id: str, before: int, limit: int
    ) -> list[AttemptLog] | None:
        async with self._connection() as conn:
            if await conn.fetchval(self._q["task_owner"], task_id) != owner_id:
                return None
            rows = await conn.fetch(self._q["list_attempts"], task_id, before, limit)
        return [AttemptLog(*row) for row in rows]

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    async def figures(self, now: int) -> StoreFigures:
        async with self._connection() as conn:
            totals = await conn.fetch(self._q["state_totals"])
            backlog, oldest = await conn.fetchrow(self._q["due_backlog"], now) or (0, None)
            last_backup = await conn.fetchval(self._q["last_backup"])
        return StoreFigures(
            tasks=state_counts((state, count) for state, count in totals),
            due_backlog=backlog,
            oldest_due_at=oldest,
            last_backup_at=last_backup,
        )

    async def in_flight_by_instance(self) -> dict[str, int]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._q["in_flight_by_instance"])
        return {instance: count for instance, count in rows}

    async def recent_backups(self, limit: int) -> list[BackupRun]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._q["recent_backups"], limit)
        return [BackupRun(*row) for row in rows]

    async def fill_target_hosts(
        self, after: str, limit: int, host_of: Callable[[str, bytes], str]
    ) -> str | None:
        async with self._transaction() as conn:
            rows = await conn.fetch(self._q["hostless_tasks"], after, limit)
            hosts = [
                (host, task_id) for task_id, payload in rows if (host := host_of(task_id, payload))
            ]
            await conn.executemany(self._q["set_target_host"], hosts)
        return str(rows[-1][0]) if rows else None

    async def count_tasks(self, owner_id: str) -> dict[State, int]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._q["count_tasks"], owner_id)
        return state_counts((state, count) for state, count in rows)

    # ---- key rotation ----

    async def reseal_tasks(
        self,
        after: str,
        limit: int,
        reseal: Callable[[SealedColumns], SealedColumns | None],
        *,
        now: int,
        stale_ms: int,
    ) -> list[str]:
        async with self._transaction() as conn:
            servers = await self._live_instances(conn, now, stale_ms)
            if servers:
                raise InUse(redact_url(self.url), [instances.describe(s) for s in servers])
            rows = await conn.fetch(self._q["sealed_batch"], after, limit)
            ids = [row[0] for row in rows]
            errors: dict[str, list[tuple[int, bytes]]] = {}
            for task_id, number, error in await conn.fetch(self._q["sealed_attempt_errors"], ids):
                errors.setdefault(task_id, []).append((number, error))
            fresh = [
                columns
                for task_id, payload, metadata, response, error in rows
                if (
                    columns := reseal(
                        SealedColumns(
                            task_id,
                            payload,
                            metadata,
                            response,
                            error,
                            tuple(errors.get(task_id, ())),
                        )
                    )
                )
            ]
            if fresh:
                await conn.executemany(
                    self._q["reseal_task"],
                    [(c.id, c.payload, c.metadata, c.response, c.error) for c in fresh],
                )
                await conn.executemany(
                    self._q["reseal_attempt_error"],
                    [(error, c.id, number) for c in fresh for number, error in c.attempt_errors],
                )
        return ids

    # ---- backups ----

    async def claim_backup_tick(
        self, tick: int, instance_id: str, now: int, stale_ms: int
    ) -> str | None:
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _BACKUP_LOCK)
            alive = {row.id for row in await self._live_instances(conn, now, stale_ms)}
            for running_tick, running_in in await conn.fetch(self._q["running_backups"], tick):
                if running_in in alive:
                    return f"the backup of tick {running_tick} is still running in {running_in}"
            if _count(await conn.execute(self._q["claim_tick"], tick, instance_id, now)) == 0:
                return "claimed by another server"
            await conn.execute(self._q["prune_runs"], KEEP_BACKUP_RUNS)
        return None

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
        state = "DONE" if error is None else "FAILED"
        async with self._connection() as conn:
            await conn.execute(
                self._q["finish_tick"], tick, instance_id, state, now, location, size, error
            )

    # ---- retention ----

    async def purge_finished(self, before: int, limit: int) -> int:
        async with self._transaction() as conn:
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))", _RETENTION_LOCK
            ):
                return 0  # another node is purging now
            return _count(await conn.execute(self._q["purge_finished"], before, limit))


def _task_row(row: asyncpg.Record) -> TaskRow:
    values = list(row)
    values[2] = _STATES[values[2]]
    return TaskRow(*values)


def _columns(rows: Sequence[msgspec.Struct]) -> list[list[Any]]:
    """The rows as one list per column: the arrays that unnest() turns back into rows."""
    return [list(column) for column in zip(*map(msgspec.structs.astuple, rows), strict=True)]


async def _session_left_clean(conn: Connection) -> None:
    """The pool's reset of a returned connection, which asyncpg makes a round trip (RESET
    ALL, UNLISTEN, advisory unlock) on every request. This store leaves no session state:
    settings are SET LOCAL, advisory locks are transaction-scoped, LISTEN has a connection
    of its own; and asyncpg still rolls back a transaction left open."""


def _count(status: str) -> int:
    """The row count of a command status such as `UPDATE 3` or `INSERT 0 1`."""
    return int(status.rsplit(" ", 1)[-1])
