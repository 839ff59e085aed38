"""The SQLite writer: one thread, one connection, group commit.

The writer thread takes every job waiting in its queue, runs each inside its
own SAVEPOINT of one transaction, commits once (one fsync for the whole
group) and only then answers each caller. Jobs of one kind that can share
statements (Batched: the group's registrations) run together, as a few
multi-row statements. Fewer statements matter here: the writer thread
retakes the GIL after each one, and beside a busy loop every retake is a
wait. Jobs whose loss on a power cut costs nothing but a repeated delivery
(claims, heartbeats) go in a first group committed without the fsync, so a
claim never waits for the disk. The same class, without group commit, runs
the reads on a second connection, so a long list never delays a commit.

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
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NamedTuple, TypeVar

from tasks_server.store.base import StoreUnavailable

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
PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
    # short: while another connection holds the write lock, callers queue behind each
    # waiting group, so a long wait per group makes every request wait several times over
    "PRAGMA busy_timeout = 2000",
    "PRAGMA temp_store = MEMORY",
)


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


class Worker:
    """A thread owning one connection, running jobs handed to it from the loop."""

    def __init__(
        self,
        name: str,
        conn: sqlite3.Connection,
        group_commit: bool,
        lock_path: str = "",
        committed: Callable[[float, int], None] | None = None,
    ) -> None:
        self._conn = conn
        self._group_commit = group_commit
        # told (seconds, writes) after each durable group: what metrics show of the commits
        # (a write: a registration, a change, or a batch of outcomes)
        self._committed = committed
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
                    started = time.perf_counter()
                    results = self._run_group(lane)
                    if lane is durable and self._committed is not None:
                        self._committed(time.perf_counter() - started, len(lane))
                    self._loop.call_soon_threadsafe(_settle, results)

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
