"""The embedded store: one SQLite file, WAL, synchronous=FULL, group commit.

All writes go through one writer thread. It takes every job waiting in its
queue, runs each inside its own SAVEPOINT of one transaction, commits once
(one fsync for the whole group) and only then answers each caller. Jobs of one
kind that can share statements (Batched: the group's registrations) run
together, as a few multi-row statements; so do the outcomes of an attempt
batch. Fewer statements matter here: the writer thread retakes the GIL after
each one, and beside a busy loop every retake is a wait. Jobs whose
loss on a power cut costs nothing but a repeated delivery (claims, heartbeats)
go in a first group committed without the fsync, so a claim never waits for
the disk. Reads run on a second connection in a reader thread, so a long list
never delays a commit.

Several server processes on one file (CLUSTER_MODE) take turns at the write
lock through an flock on `<database>.lock` around each group: the waiting
writer is woken the moment the lock is free, where SQLite's own busy handler
sleeps 1, 2, 5, 10 ... ms between tries (which made p99 register latency
several hundred ms with two processes).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import msgspec
from msgspec.structs import astuple

from tasks_server.model.lifecycle import State
from tasks_server.model.records import (
    AttemptRecord,
    Claim,
    ClaimedTask,
    ListParams,
    OwnerRow,
    TaskChange,
    TaskRow,
)
from tasks_server.store import queries
from tasks_server.store.base import (
    Conflict,
    LimitReached,
    NotFound,
    StoreUnavailable,
)
from tasks_server.store.migrations import apply_migrations

T = TypeVar("T")


class Batched(NamedTuple):
    """One item of a write that the writer runs for all the items of its group at once.

    `run` gets the connection and the group's items in queue order and returns
    one result per item: its value, or an exception that fails that item alone.
    Its statements stand alone (no savepoint per item is taken).
    """

    run: Callable[[sqlite3.Connection, list[Any]], list[Any]]
    item: Any


# (work, its caller's future, whether the work is one statement: see _try_group)
Job = tuple[Callable[[sqlite3.Connection], Any] | Batched, asyncio.Future[Any], bool]
Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]
Lanes = tuple[list[Job], list[Job]]  # (without fsync, durable)

MAX_GROUP = 512
# rows per multi-row statement: these few prepared shapes cover a batch of any size
ROWS_PER_STATEMENT = (256, 64, 16, 4, 1)
PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
    # short: while another connection holds the write lock, callers queue behind each
    # waiting group, so a long wait per group makes every request wait several times over
    "PRAGMA busy_timeout = 2000",
    "PRAGMA temp_store = MEMORY",
)
TASK_FIELDS = msgspec.structs.fields(TaskRow)
_CHANGE_FIELDS = tuple(f.name for f in msgspec.structs.fields(TaskChange) if f.name != "drop_lease")


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


class _Worker:
    """A thread owning one connection, running jobs handed to it from the loop."""

    def __init__(
        self, name: str, conn: sqlite3.Connection, group_commit: bool, lock_path: str = ""
    ) -> None:
        self._conn = conn
        self._group_commit = group_commit
        # the processes' turn at the write lock (see the module docstring)
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600) if lock_path else -1
        self._jobs: queue.SimpleQueue[tuple[Job, bool] | None] = queue.SimpleQueue()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(
        self,
        fn: Callable[[sqlite3.Connection], T] | Batched,
        *,
        durable: bool = True,
        one_statement: bool = False,
    ) -> asyncio.Future[T]:
        """Run `fn` on this thread's connection; `durable=False` skips the fsync.

        `one_statement`: `fn` changes the database with at most one statement,
        which SQLite applies whole or not at all, so it needs no savepoint.
        """
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put(((fn, future, one_statement), durable))
        return future

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        self._conn.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            if not self._group_commit:
                self._loop.call_soon_threadsafe(_settle, [self._run_one(first[0])])
                continue
            fast, durable = self._take_group(first)
            for lane, synchronous in ((fast, "NORMAL"), (durable, "FULL")):
                if lane:
                    self._conn.execute(f"PRAGMA synchronous = {synchronous}")
                    self._loop.call_soon_threadsafe(_settle, self._run_group(lane))

    def _take_group(self, first: tuple[Job, bool]) -> Lanes:
        lanes: Lanes = ([], [])
        entry: tuple[Job, bool] | None = first
        taken = 0
        while entry is not None:
            job, durable = entry
            lanes[durable].append(job)
            taken += 1
            if taken >= MAX_GROUP:
                break
            try:
                entry = self._jobs.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                self._jobs.put(None)  # stop after this group
                break
        return lanes

    def _run_one(self, job: Job) -> Outcome:
        fn, future, _ = job
        if isinstance(fn, Batched):
            return _run_batched(self._conn, fn.run, [(fn.item, future)])[0]
        try:
            return future, fn(self._conn), None
        except BaseException as exc:
            return future, None, _translate(exc)

    def _run_group(self, batch: list[Job]) -> list[tuple[asyncio.Future[Any], Any, Any]]:
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # held only for one group by each process
        try:
            return self._try_group(batch)
        except sqlite3.Error as exc:
            # SAVEPOINT, ROLLBACK TO or ROLLBACK itself failed (I/O error, disk
            # full): nothing of the group is committed. Answer every caller
            # rather than let this thread die and leave them waiting forever.
            with suppress(sqlite3.Error):
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            failure = _translate(exc)
            return [(future, None, failure) for _, future, _ in batch]
        finally:
            if self._lock_fd >= 0:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _try_group(self, batch: list[Job]) -> list[tuple[asyncio.Future[Any], Any, Any]]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(future, None, _translate(exc)) for _, future, _ in batch]
        results: list[tuple[asyncio.Future[Any], Any, Any]] = []
        batched: dict[Callable[[sqlite3.Connection, list[Any]], list[Any]], list[Any]] = {}
        for fn, future, one_statement in batch:
            if isinstance(fn, Batched):
                batched.setdefault(fn.run, []).append((fn.item, future))
                continue
            # Every statement costs this thread a release and a re-take of the
            # GIL, each a wait while the loop is busy, and the write lock is held
            # meanwhile: one-statement jobs skip the savepoint's three statements.
            if one_statement:
                try:
                    results.append((future, fn(conn), None))
                except BaseException as exc:
                    results.append((future, None, _translate(exc)))
                continue
            conn.execute("SAVEPOINT job")
            try:
                value = fn(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                results.append((future, None, _translate(exc)))
            else:
                conn.execute("RELEASE job")
                results.append((future, value, None))
        for run, entries in batched.items():
            # concurrent writes of one kind, in one statement where they can: the
            # order among a group's jobs is free, none was answered before the commit
            results += _run_batched(conn, run, entries)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = _translate(exc)
            return [(future, None, failure) for future, _, _ in results]
        return results


def _run_batched(
    conn: sqlite3.Connection,
    run: Callable[[sqlite3.Connection, list[Any]], list[Any]],
    entries: list[tuple[Any, asyncio.Future[Any]]],
) -> list[Outcome]:
    conn.execute("SAVEPOINT batch")
    try:
        values = run(conn, [item for item, _ in entries])
    except BaseException as exc:
        conn.execute("ROLLBACK TO batch")
        conn.execute("RELEASE batch")
        failure = _translate(exc)
        return [(future, None, failure) for _, future in entries]
    conn.execute("RELEASE batch")
    return [
        (future, None, _translate(value))
        if isinstance(value, BaseException)
        else (future, value, None)
        for (_, future), value in zip(entries, values, strict=True)
    ]


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailable(str(exc))
    return exc


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class SqliteStore:
    """Store on one SQLite file (see module docstring for the threading)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._q = queries.load(
            "sqlite",
            {
                "task_columns": ", ".join(f.name for f in TASK_FIELDS),
                "task_values": ", ".join("?" for _ in TASK_FIELDS),
            },
        )
        self._insert_sql = _multi_row(self._q["insert_tasks"], len(TASK_FIELDS))
        self._record_sql = _multi_row(
            self._q["record_attempts"], len(msgspec.structs.fields(AttemptRecord))
        )
        self._writer: _Worker | None = None
        self._reader: _Worker | None = None
        self._point_reads: sqlite3.Connection | None = None

    async def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        writer = _connect(self.path)
        apply_migrations(writer, "sqlite")
        self._writer = _Worker(
            "sqlite-writer", writer, group_commit=True, lock_path=f"{self.path}.lock"
        )
        self._reader = _Worker("sqlite-reader", _connect(self.path), group_commit=False)
        self._point_reads = _connect(self.path)
        # on the loop itself: never wait for a lock there (the reader thread will)
        self._point_reads.execute("PRAGMA busy_timeout = 0")

    async def close(self) -> None:
        for worker in (self._writer, self._reader):
            if worker is not None:
                worker.stop()
        self._writer = self._reader = None
        if self._point_reads is not None:
            self._point_reads.close()
            self._point_reads = None

    def _write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        one_statement: bool = False,
    ) -> asyncio.Future[T]:
        assert self._writer is not None, "store is not open"
        return self._writer.submit(fn, durable=durable, one_statement=one_statement)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        assert self._reader is not None, "store is not open"
        return self._reader.submit(fn)

    # ---- owners ----

    async def create_owner(self, owner: OwnerRow) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(self._q["insert_owner"], msgspec.structs.asdict(owner))
            except sqlite3.IntegrityError:
                raise Conflict("Owner has already registered") from None

        await self._write(insert)

    async def get_owner(self, owner_id: str) -> OwnerRow | None:
        # every authenticated request asks this: a primary-key read of a small,
        # cached table is cheaper on the loop than a hop to the reader thread
        def select(conn: sqlite3.Connection) -> OwnerRow | None:
            row = conn.execute(self._q["get_owner"], {"id": owner_id}).fetchone()
            return OwnerRow(*row) if row else None

        if self._point_reads is not None:
            try:
                return select(self._point_reads)
            except sqlite3.OperationalError:
                pass  # busy (e.g. a checkpoint): wait for it in the reader thread instead
        return await self._read(select)

    async def delete_owner(self, owner_id: str, name: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                self._q["get_owner_named"], {"id": owner_id, "name": name}
            ).fetchone()
            if row is None:
                raise NotFound(name)
            if OwnerRow(*row).tasks_in_queue > 0:
                raise Conflict("Owner still has RUNNING or PAUSED tasks")
            conn.execute(self._q["delete_owner"], {"id": owner_id})

        await self._write(delete)

    async def replace_owner_key(self, owner_id: str, old_digest: bytes, new_digest: bytes) -> bool:
        values = {"id": owner_id, "old_digest": old_digest, "new_digest": new_digest}

        def replace(conn: sqlite3.Connection) -> bool:
            return conn.execute(self._q["replace_owner_key"], values).rowcount == 1

        return await self._write(replace)

    # ---- tasks ----

    async def insert_task(self, task: TaskRow, limit: int) -> None:
        assert self._writer is not None, "store is not open"
        await self._writer.submit(Batched(self._insert_tasks, (task, limit)))

    def _insert_tasks(
        self, conn: sqlite3.Connection, items: list[tuple[TaskRow, int]]
    ) -> list[BaseException | None]:
        """A group's registrations in a few multi-row INSERTs; one result per item."""
        results = self._refuse_over_limit(conn, items)
        fits = [n for n, result in enumerate(results) if result is None]
        for start, size in _chunks(len(fits)):
            chunk = fits[start : start + size]
            try:
                conn.execute(
                    self._insert_sql[size], [v for n in chunk for v in astuple(items[n][0])]
                )
            except sqlite3.IntegrityError:
                # a bad row (a duplicate id, an owner deleted meanwhile) fails alone: from
                # here on each is inserted by itself, checked against its owner's queue
                for n in range(chunk[0], len(items)):
                    results[n] = self._insert_one(conn, *items[n])
                break
        return results

    def _refuse_over_limit(
        self, conn: sqlite3.Connection, items: list[tuple[TaskRow, int]]
    ) -> list[BaseException | None]:
        """LimitReached for each item its owner's queue has no room for, in order."""
        counts: dict[str, int] = {}
        for owner_id in {task.owner_id for task, _ in items}:
            found = conn.execute(self._q["get_owner"], {"id": owner_id}).fetchone()
            counts[owner_id] = OwnerRow(*found).tasks_in_queue if found else 0
        results: list[BaseException | None] = []
        for task, limit in items:
            if counts[task.owner_id] >= limit:
                results.append(LimitReached(limit))
            else:
                counts[task.owner_id] += 1
                results.append(None)
        return results

    def _insert_one(
        self, conn: sqlite3.Connection, task: TaskRow, limit: int
    ) -> BaseException | None:
        values = (*astuple(task), task.owner_id, limit)
        try:
            if conn.execute(self._q["insert_task"], values).rowcount == 0:
                return LimitReached(limit)
        except sqlite3.IntegrityError as exc:
            return exc
        return None

    async def get_task(self, owner_id: str, task_id: str) -> TaskRow | None:
        return await self._read(lambda conn: self._select_task(conn, owner_id, task_id))

    def _select_task(self, conn: sqlite3.Connection, owner_id: str, task_id: str) -> TaskRow | None:
        row = conn.execute(self._q["get_task"], {"id": task_id, "owner_id": owner_id}).fetchone()
        return _task_row(row) if row else None

    async def list_tasks(self, params: ListParams) -> list[TaskRow]:
        direction = "DESC" if params.descending else "ASC"
        order_by = f"{params.order} {direction}, id {direction}"
        name = "list_tasks_in_state" if params.state else "list_tasks"
        statement = self._q[name].replace("{order_by}", order_by)
        values = msgspec.structs.asdict(params)

        def select(conn: sqlite3.Connection) -> list[TaskRow]:
            return [_task_row(row) for row in conn.execute(statement, values)]

        return await self._read(select)

    async def change_task(
        self, owner_id: str, task_id: str, decide: Callable[[TaskRow], TaskChange]
    ) -> TaskRow:
        def change(conn: sqlite3.Connection) -> TaskRow:
            row = self._select_task(conn, owner_id, task_id)
            if row is None:
                raise NotFound(task_id)
            update = decide(row)
            values: dict[str, Any] = {
                name: getattr(update, name)
                for name in _CHANGE_FIELDS
                if getattr(update, name) is not msgspec.UNSET
            }
            assignments = [f"{name} = :{name}" for name in values]
            if update.drop_lease:
                assignments += ["lease_owner = NULL", "lease_token = NULL"]
            if assignments:
                statement = self._q["update_task"].replace("{assignments}", ", ".join(assignments))
                conn.execute(statement, {**values, "id": task_id})
            after = self._select_task(conn, owner_id, task_id)
            assert after is not None
            return after

        return await self._write(change)

    async def delete_task(self, owner_id: str, task_id: str) -> TaskRow:
        def delete(conn: sqlite3.Connection) -> TaskRow:
            row = self._select_task(conn, owner_id, task_id)
            if row is None:
                raise NotFound(task_id)
            conn.execute(self._q["delete_task"], {"id": task_id, "owner_id": owner_id})
            return row

        return await self._write(delete)

    # ---- scheduling ----

    async def register_instance(self, instance_id: str, host: str, pid: int, now: int) -> None:
        values = {"id": instance_id, "host": host, "pid": pid, "now": now}
        await self._write(
            lambda conn: conn.execute(self._q["register_instance"], values), durable=False
        )

    async def heartbeat(self, instance_id: str, now: int) -> None:
        await self._write(
            lambda conn: conn.execute(self._q["heartbeat"], {"id": instance_id, "now": now}),
            durable=False,
            one_statement=True,
        )

    async def release_dead_leases(
        self, instance_id: str, now: int, stale_before: int, host: str
    ) -> int:
        def release(conn: sqlite3.Connection) -> int:
            for other, their_host, pid, heartbeat_at in conn.execute(self._q["list_instances"]):
                if other == instance_id:
                    continue
                if heartbeat_at < stale_before or (their_host == host and not _pid_alive(pid)):
                    conn.execute(self._q["delete_instance"], {"id": other})
            return conn.execute(self._q["release_orphan_leases"], {"now": now}).rowcount

        return await self._write(release, durable=False)

    async def release_leases(self, instance_id: str, now: int) -> int:
        def release(conn: sqlite3.Connection) -> int:
            count = conn.execute(
                self._q["release_instance_leases"], {"id": instance_id, "now": now}
            ).rowcount
            conn.execute(self._q["delete_instance"], {"id": instance_id})
            return count

        return await self._write(release)

    async def claim_due_tasks(self, now: int, limit: int, instance_id: str, token: int) -> Claim:
        values = {"now": now, "limit": limit, "instance_id": instance_id, "token": token}

        def claim(conn: sqlite3.Connection) -> Claim:
            rows = _claimed_rows.decode(
                conn.execute(self._q["claim_due_tasks"], values).fetchone()[0]
            )
            if rows:
                ids = msgspec.json.encode([row[0] for row in rows]).decode()
                conn.execute(self._q["lease_claimed"], {**values, "ids": ids})
            tasks = [
                ClaimedTask(
                    id, bytes.fromhex(payload), retries, retry_limit, attempts, at, retry_at, token
                )
                for id, payload, retries, retry_limit, attempts, at, retry_at in rows
            ]
            next_due: int | None = conn.execute(self._q["next_due_at"]).fetchone()[0]
            return Claim(tasks, next_due)

        # a claim lost to a power cut only means the task is sent again (at least once)
        # (a savepoint still: were the second query to fail, the claim must not stay)
        return await self._write(claim, durable=False)

    async def record_attempts(self, records: list[AttemptRecord]) -> int:
        # the parameters are laid out here, on the loop, which holds the GIL anyway
        statements = [
            (
                self._record_sql[size],
                [value for record in records[start : start + size] for value in astuple(record)],
            )
            for start, size in _chunks(len(records))
        ]

        def record(conn: sqlite3.Connection) -> int:
            return sum(conn.execute(sql, params).rowcount for sql, params in statements)

        return await self._write(record)


# what claim_due_tasks returns: id, payload (hex), retry_count, retry_limit, attempts,
# estimate_execution_at, estimate_next_retry_at
_claimed_rows = msgspec.json.Decoder(list[tuple[str, str, int, int, int, int, int]])


def _task_row(row: tuple[Any, ...]) -> TaskRow:
    task_id, owner_id, state, *rest = row
    return TaskRow(task_id, owner_id, State(state), *rest)


def _multi_row(sql: str, columns: int) -> dict[int, str]:
    """`sql` with its {rows} as many rows of `columns` parameters as each statement size."""
    row = "(" + ", ".join("?" * columns) + ")"
    return {size: sql.replace("{rows}", ", ".join([row] * size)) for size in ROWS_PER_STATEMENT}


def _chunks(count: int) -> Iterator[tuple[int, int]]:
    """(start, size) pairs covering `count` items in ROWS_PER_STATEMENT sizes, largest first."""
    start = 0
    for size in ROWS_PER_STATEMENT:
        while count - start >= size:
            yield start, size
            start += size


def process_exists(pid: int) -> bool:
    """Whether a process with this pid runs on this host (ours included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_alive(pid: int) -> bool:
    # our own pid means the instance that held it is gone (a container restart reuses pids)
    return pid != os.getpid() and process_exists(pid)
