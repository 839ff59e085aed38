"""The embedded store: one SQLite file, WAL, synchronous=FULL, group commit.

Writes go through the writer thread (writer.py: group commit, one fsync per
group, claims and heartbeats without it); reads through a reader thread, and
the owner lookup of each request on the loop itself. Several server processes
on one file (CLUSTER_MODE) take turns at the write lock (see writer.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from msgspec.structs import astuple

from tasks_server.model.lifecycle import State
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
    TaskSignal,
    state_counts,
)
from tasks_server.store.signals import Signals, signal_of_change
from tasks_server.store.sqlite.migrate import apply_migrations
from tasks_server.store.sqlite.peers import Peers
from tasks_server.store.sqlite.writer import Batched, Worker, connect

T = TypeVar("T")

# rows per multi-row statement: these few prepared shapes cover a batch of any size
ROWS_PER_STATEMENT = (256, 64, 16, 4, 1)
TASK_FIELDS = msgspec.structs.fields(TaskRow)
_CHANGE_FIELDS = tuple(f.name for f in msgspec.structs.fields(TaskChange) if f.name != "drop_lease")
KEEP_BACKUP_RUNS = 1000  # rows of backup_run kept (one per tick)


class SqliteStore:
    """Store on one SQLite file (see module docstring for the threading)."""

    def __init__(self, path: str, observer: Observer = NO_OBSERVER) -> None:
        self.path = path
        self._observer = observer
        self._q = queries.load(
            __package__ or "tasks_server.store.sqlite",
            "queries",
            {
                "task_columns": ", ".join(f.name for f in TASK_FIELDS),
                "task_values": ", ".join("?" for _ in TASK_FIELDS),
            },
        )
        self._insert_sql = _multi_row(self._q["insert_tasks"], len(TASK_FIELDS))
        self._attempts_sql = _multi_row(
            self._q["insert_attempts"], len(msgspec.structs.fields(AttemptLog))
        )
        self._record_sql = _multi_row(
            self._q["record_attempts"], len(msgspec.structs.fields(AttemptRecord))
        )
        self._writer: Worker | None = None
        self._reader: Worker | None = None
        self._point_reads: sqlite3.Connection | None = None
        self._signals = Signals()
        self._peers = Peers(path, self._signals.publish)

    async def open(self, *, create: bool = True) -> None:
        if not create and not Path(self.path).is_file():
            raise StoreMissing(f"no database at {self.path}")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        writer = connect(self.path)
        apply_migrations(writer)
        self._writer = Worker(
            "sqlite-writer",
            writer,
            group_commit=True,
            lock_path=f"{self.path}.lock",
            committed=self._observer.store_committed,
        )
        self._reader = Worker("sqlite-reader", connect(self.path), group_commit=False)
        self._point_reads = connect(self.path)
        # on the loop itself: never wait for a lock there (the reader thread will)
        self._point_reads.execute("PRAGMA busy_timeout = 0")
        self._peers.open()

    async def close(self) -> None:
        self._peers.close()
        for worker in (self._writer, self._reader):
            if worker is not None:
                worker.stop()
        self._writer = self._reader = None
        if self._point_reads is not None:
            self._point_reads.close()
            self._point_reads = None

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._signals.subscribe(listener)

    def _tell(self, signal: TaskSignal | None) -> None:
        """A committed change, told to this process's subscribers and to the other
        processes on the file."""
        if signal is not None:
            self._signals.publish(signal)
            self._peers.send(signal)

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

    async def get_owner(self, owner_id: str, *, cached: bool = False) -> OwnerRow | None:
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
        self._tell(TaskSignal(task.id, due_at=task.due_at))

    def _insert_tasks(
        self, conn: sqlite3.Connection, items: list[tuple[TaskRow, int]]
    ) -> list[BaseException | None]:
        """A group's registrations in a few multi-row INSERTs; one result per item."""
        results = self._refusals(conn, items)
        fits = [n for n, result in enumerate(results) if result is None]
        for start, size in _chunks(len(fits)):
            chunk = fits[start : start + size]
            try:
                conn.execute(
                    self._insert_sql[size], [v for n in chunk for v in astuple(items[n][0])]
                )
            except sqlite3.IntegrityError:
                # a bad row (a duplicate id) fails alone: from here on each is
                # inserted by itself, checked against its owner's queue
                for n in fits[start:]:
                    results[n] = self._insert_one(conn, *items[n])
                break
        return results

    def _refusals(
        self, conn: sqlite3.Connection, items: list[tuple[TaskRow, int]]
    ) -> list[BaseException | None]:
        """For each item in order: NotFound when its owner is gone, LimitReached when the
        owner's queue has no room left for it, else None."""
        counts: dict[str, int | None] = {}
        for owner_id in {task.owner_id for task, _ in items}:
            found = conn.execute(self._q["get_owner"], {"id": owner_id}).fetchone()
            counts[owner_id] = OwnerRow(*found).tasks_in_queue if found else None
        results: list[BaseException | None] = []
        for task, limit in items:
            count = counts[task.owner_id]
            if count is None:
                results.append(NotFound(task.owner_id))
            elif count >= limit:
                results.append(LimitReached(limit))
            else:
                counts[task.owner_id] = count + 1
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
        values = msgspec.structs.asdict(params)

        def placeholder(name: str, value: object) -> str:
            values[name] = value
            return f":{name}"

        order_by, after = params.page_sql(placeholder)
        name = "list_tasks_in_state" if params.state else "list_tasks"
        statement = self._q[name].replace("{order_by}", order_by).replace("{after}", after)

        def select(conn: sqlite3.Connection) -> list[TaskRow]:
            return [_task_row(row) for row in conn.execute(statement, values)]

        return await self._read(select)

    async def change_task(
        self, owner_id: str, task_id: str, decide: Callable[[TaskRow], TaskChange]
    ) -> TaskRow:
        def change(conn: sqlite3.Connection) -> tuple[TaskRow, TaskChange]:
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
            return after, update

        after, update = await self._write(change)
        self._tell(signal_of_change(task_id, update))
        return after

    async def delete_task(self, owner_id: str, task_id: str) -> TaskRow:
        def delete(conn: sqlite3.Connection) -> TaskRow:
            row = self._select_task(conn, owner_id, task_id)
            if row is None:
                raise NotFound(task_id)
            conn.execute(self._q["delete_task"], {"id": task_id, "owner_id": owner_id})
            return row

        row = await self._write(delete)
        self._tell(TaskSignal(task_id, abort=True))
        return row

    # ---- scheduling ----

    async def register_instance(self, instance_id: str, host: str, pid: int, now: int) -> None:
        instances.note_started_here(instance_id, host, pid)
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

    def _instances(self, conn: sqlite3.Connection) -> list[InstanceRow]:
        return [InstanceRow(*row) for row in conn.execute(self._q["list_instances"])]

    def _live_instances(
        self, conn: sqlite3.Connection, now: int, stale_ms: int
    ) -> list[InstanceRow]:
        return [row for row in self._instances(conn) if instances.is_alive(row, now, stale_ms)]

    async def live_instances(self, now: int, stale_ms: int) -> list[InstanceRow]:
        return await self._read(lambda conn: self._live_instances(conn, now, stale_ms))

    async def release_dead_leases(self, instance_id: str, now: int, stale_ms: int) -> int:
        def release(conn: sqlite3.Connection) -> int:
            for other in self._instances(conn):
                if other.id != instance_id and not instances.is_alive(other, now, stale_ms):
                    conn.execute(self._q["delete_instance"], {"id": other.id})
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
                    id,
                    bytes.fromhex(payload),
                    retries,
                    retry_limit,
                    attempts,
                    at,
                    retry_at,
                    token,
                    due_at,
                )
                for id, payload, retries, retry_limit, attempts, at, retry_at, due_at in rows
            ]
            next_due: int | None = conn.execute(self._q["next_due_at"]).fetchone()[0]
            return Claim(tasks, next_due)

        # a claim lost to a power cut only means the task is sent again (at least once)
        # (a savepoint still: were the second query to fail, the claim must not stay)
        return await self._write(claim, durable=False)

    async def record_attempts(
        self,
        records: list[AttemptRecord],
        attempts: Sequence[AttemptLog] = (),
        *,
        history: int = ATTEMPT_HISTORY,
    ) -> int:
        # the parameters are laid out here, on the loop, which holds the GIL anyway
        statements = _rows_in_statements(self._record_sql, records)
        attempt_statements = _rows_in_statements(self._attempts_sql, attempts)
        trims = [(a.task_id, a.number - history) for a in attempts if a.number > history]

        def record(conn: sqlite3.Connection) -> int:
            written = 0
            finished: dict[tuple[str, str], int] = {}
            for sql, params in statements:
                for owner_id, state in conn.execute(sql, params):
                    written += 1
                    if state in _FINISHED_BY_OUTCOME:
                        finished[owner_id, state] = finished.get((owner_id, state), 0) + 1
            if finished:
                counted = [
                    {"owner_id": owner_id, "state": state, "tasks": tasks}
                    for (owner_id, state), tasks in finished.items()
                ]
                for name in ("count_finished", "count_finished_states", "count_finished_state"):
                    conn.executemany(self._q[name], counted)
            for sql, params in attempt_statements:
                conn.execute(sql, params)
            if trims:
                conn.executemany(self._q["trim_attempts"], trims)
            return written

        return await self._write(record)

    async def list_attempts(
        self, owner_id: str, task_id: str, before: int, limit: int
    ) -> list[AttemptLog] | None:
        def select(conn: sqlite3.Connection) -> list[AttemptLog] | None:
            found = conn.execute(self._q["task_owner"], {"id": task_id}).fetchone()
            if found is None or found[0] != owner_id:
                return None
            values = {"task_id": task_id, "before": before, "limit": limit}
            return [AttemptLog(*row) for row in conn.execute(self._q["list_attempts"], values)]

        return await self._read(select)

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def figures(self, now: int) -> StoreFigures:
        def select(conn: sqlite3.Connection) -> StoreFigures:
            backlog, oldest = conn.execute(self._q["due_backlog"], {"now": now}).fetchone()
            return StoreFigures(
                tasks=state_counts(conn.execute(self._q["state_totals"])),
                due_backlog=backlog,
                oldest_due_at=oldest,
                last_backup_at=conn.execute(self._q["last_backup"]).fetchone()[0],
            )

        return await self._read(select)

    async def in_flight_by_instance(self) -> dict[str, int]:
        def select(conn: sqlite3.Connection) -> dict[str, int]:
            return dict(conn.execute(self._q["in_flight_by_instance"]).fetchall())

        return await self._read(select)

    async def recent_backups(self, limit: int) -> list[BackupRun]:
        def select(conn: sqlite3.Connection) -> list[BackupRun]:
            rows = conn.execute(self._q["recent_backups"], {"limit": limit})
            return [BackupRun(*row) for row in rows]

        return await self._read(select)

    async def fill_target_hosts(
        self, after: str, limit: int, host_of: Callable[[str, bytes], str]
    ) -> str | None:
        def fill(conn: sqlite3.Connection) -> str | None:
            found = conn.execute(self._q["hostless_tasks"], {"after": after, "limit": limit})
            rows = found.fetchall()
            hosts = [
                (host, task_id) for task_id, payload in rows if (host := host_of(task_id, payload))
            ]
            conn.executemany(self._q["set_target_host"], hosts)
            return str(rows[-1][0]) if rows else None

        return await self._write(fill)

    async def count_tasks(self, owner_id: str) -> dict[State, int]:
        def select(conn: sqlite3.Connection) -> dict[State, int]:
            rows = conn.execute(self._q["count_tasks"], {"owner_id": owner_id})
            return state_counts(rows)

        return await self._read(select)

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
        def batch(conn: sqlite3.Connection) -> list[str]:
            servers = self._live_instances(conn, now, stale_ms)
            if servers:
                raise InUse(self.path, [instances.describe(server) for server in servers])
            found = conn.execute(self._q["sealed_batch"], {"after": after, "limit": limit})
            rows = found.fetchall()
            ids = msgspec.json.encode([row[0] for row in rows]).decode()
            errors = _by_task(conn.execute(self._q["sealed_attempt_errors"], {"ids": ids}))
            for row in rows:
                task_id, payload, metadata, response, error = row
                sealed = SealedColumns(
                    task_id, payload, metadata, response, error, errors.get(task_id, ())
                )
                fresh = reseal(sealed)
                if fresh is not None:
                    conn.execute(self._q["reseal_task"], msgspec.structs.asdict(fresh))
                    conn.executemany(
                        self._q["reseal_attempt_error"],
                        [(error, fresh.id, number) for number, error in fresh.attempt_errors],
                    )
            return [row[0] for row in rows]

        return await self._write(batch)

    # ---- backups ----

    async def claim_backup_tick(
        self, tick: int, instance_id: str, now: int, stale_ms: int
    ) -> str | None:
        def claim(conn: sqlite3.Connection) -> str | None:
            alive = {row.id for row in self._live_instances(conn, now, stale_ms)}
            for running_tick, running_in in conn.execute(
                self._q["running_backups"], {"tick": tick}
            ):
                if running_in in alive:
                    return f"the backup of tick {running_tick} is still running in {running_in}"
            values = {"tick": tick, "instance_id": instance_id, "now": now}
            if conn.execute(self._q["claim_tick"], values).rowcount == 0:
                return "claimed by another server"
            conn.execute(self._q["prune_runs"], {"keep": KEEP_BACKUP_RUNS})
            return None

        return await self._write(claim)

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
        values = {
            "tick": tick,
            "instance_id": instance_id,
            "now": now,
            "state": "DONE" if error is None else "FAILED",
            "location": location,
            "size": size,
            "error": error,
        }
        await self._write(
            lambda conn: conn.execute(self._q["finish_tick"], values), one_statement=True
        )

    # ---- retention ----

    async def purge_finished(self, before: int, limit: int) -> int:
        values = {"before": before, "limit": limit}
        return await self._write(
            lambda conn: conn.execute(self._q["purge_finished"], values).rowcount,
            one_statement=True,
        )


# what claim_due_tasks returns: id, payload (hex), retry_count, retry_limit, attempts,
# estimate_execution_at, estimate_next_retry_at
_claimed_rows = msgspec.json.Decoder(list[tuple[str, str, int, int, int, int, int, int]])


_STATES = {state.value: state for state in State}  # a dict lookup: a third of State(text)


def _task_row(row: tuple[Any, ...]) -> TaskRow:
    return TaskRow(row[0], row[1], _STATES[row[2]], *row[3:])


def _multi_row(sql: str, columns: int) -> dict[int, str]:
    """`sql` with its {rows} as many rows of `columns` parameters as each statement size."""
    row = "(" + ", ".join("?" * columns) + ")"
    return {size: sql.replace("{rows}", ", ".join([row] * size)) for size in ROWS_PER_STATEMENT}


# what only an outcome leads to: counted by the batch of outcomes, not by a trigger per row
_FINISHED_BY_OUTCOME = frozenset({State.SUCCESS.value, State.ERROR.value})


def _by_task(rows: Iterable[tuple[str, int, bytes]]) -> dict[str, tuple[tuple[int, bytes], ...]]:
    """(task id, number, error) rows as each task's (number, error) pairs."""
    found: dict[str, list[tuple[int, bytes]]] = {}
    for task_id, number, error in rows:
        found.setdefault(task_id, []).append((number, error))
    return {task_id: tuple(pairs) for task_id, pairs in found.items()}


def _rows_in_statements(
    sql: dict[int, str], rows: Sequence[msgspec.Struct]
) -> list[tuple[str, list[Any]]]:
    """Multi-row statements with their parameters, for `rows` in chunks."""
    return [
        (sql[size], [value for row in rows[start : start + size] for value in astuple(row)])
        for start, size in _chunks(len(rows))
    ]


def _chunks(count: int) -> Iterator[tuple[int, int]]:
    """(start, size) pairs covering `count` items in ROWS_PER_STATEMENT sizes, largest first."""
    start = 0
    for size in ROWS_PER_STATEMENT:
        while count - start >= size:
            yield start, size
            start += size
