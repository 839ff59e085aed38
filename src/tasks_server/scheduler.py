"""When tasks run: claim due tasks -> dispatch -> record outcomes -> sleep until next due.

The database is the source of truth. Each RUNNING task row has `due_at`;
claiming sets a lease (token + `due_at` moved to the lease expiry) in one
atomic statement, so a task is never dispatched twice at once. Memory holds
only the tasks in flight, never the pending ones. Instances heartbeat; the
leases of an instance that stopped heart-beating (or whose process is gone)
are released so its in-flight tasks run again at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from contextlib import suppress
from urllib.parse import urlsplit

import msgspec
from ulid import ULID

from tasks_server.codec import TaskCodec
from tasks_server.crypto import DecryptionError
from tasks_server.dispatch.sender import Sender
from tasks_server.model.lifecycle import State
from tasks_server.model.outcome import AttemptResult, AttemptTimings, plan_outcome
from tasks_server.model.records import (
    ATTEMPT_HISTORY,
    AttemptLog,
    AttemptRecord,
    Claim,
    ClaimedTask,
)
from tasks_server.model.retry import retry_policy
from tasks_server.model.spec import TaskSpec
from tasks_server.model.timing import now_ms
from tasks_server.observer import NO_OBSERVER, Observer
from tasks_server.store.base import Store, TaskSignal
from tasks_server.store.instances import HOST

log = logging.getLogger(__name__)

# A burst is claimed in growing batches: the first requests leave while the rest are
# still being claimed and prepared, and a claim of 512 costs little more than one of 16.
FIRST_CLAIM = 16
CLAIM_BATCH = 512
DISPATCH_SLICE = 64  # tasks prepared between two turns of the loop (which drives the sockets)
IDLE_POLL_S = 1.0  # other processes may add tasks; look again at least this often
HEARTBEAT_S = 1.0
CLAIM_RETRY_S = 0.5  # after a failed claim (database busy or read-only)
RECORD_TRIES_AT_STOP = 3  # then the outcomes are left to the leases
ABORTED = "aborted"  # the error of an attempt stopped by a pause, revoke, delete or stop
MIN_CLAIM = 128  # while busy, wait for this many free slots: a claim costs the same for 1 or 500


class Scheduler:
    """Claims, dispatches and records; one per process, on the server's loop."""

    def __init__(
        self,
        store: Store,
        codec: TaskCodec,
        sender: Sender,
        *,
        max_in_flight: int,
        stale_after_ms: int,
        shutdown_grace_ms: int,
        history: int = ATTEMPT_HISTORY,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self.instance_id = str(ULID())
        self._store = store
        self._codec = codec
        self._max_in_flight = max_in_flight
        self._min_claim = min(MIN_CLAIM, max(1, max_in_flight // 4))
        self._stale_after_ms = stale_after_ms
        self._grace_s = shutdown_grace_ms / 1000
        self._sender = sender
        self._history = history
        self._observer = observer
        self._wake = asyncio.Event()
        # a task due before this (ms) wakes the claim loop: when it looks again by itself
        # while it sleeps, and any time while it claims (it may miss what commits meanwhile)
        self._wake_before = math.inf
        self._stopping = False
        self._in_flight: dict[str, asyncio.Future[AttemptResult]] = {}
        # claimed and not yet handed to the sender (a batch is handed over in slices)
        self._claimed: dict[str, ClaimedTask] = {}
        self._claim_size = FIRST_CLAIM
        self._records: list[AttemptRecord] = []
        self._attempts: list[AttemptLog] = []  # the history of each attempt that ended
        self._records_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None

    # ---- what clients change, as the store signals it ----

    def _on_signal(self, signal: TaskSignal) -> None:
        if signal.abort:
            # paused, revoked or deleted: its request in flight here stops, its result dropped,
            # and a claimed one not handed over yet is not sent
            self._claimed.pop(signal.task_id, None)
            future = self._in_flight.get(signal.task_id)
            if future is not None:
                future.cancel()
        if signal.due_at is not None and signal.due_at < self._wake_before:
            # due before the loop would look again: look now (one due later is found then,
            # so a burst of registrations for tomorrow costs no claim each)
            self._wake.set()

    # ---- lifetime ----

    async def start(self) -> None:
        now = now_ms()
        await self._store.register_instance(self.instance_id, HOST, os.getpid(), now)
        self._unsubscribe = self._store.subscribe(self._on_signal)
        await self._release_dead_leases()
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="scheduler-claim"),
            asyncio.create_task(self._record_loop(), name="scheduler-record"),
            asyncio.create_task(self._heartbeat_loop(), name="scheduler-heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop claiming, let in-flight requests finish within the grace, release the rest."""
        self._stopping = True
        self._wake.set()
        claim, record, heartbeat = self._tasks
        heartbeat.cancel()
        await _quietly(claim)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=self._grace_s)
        for future in list(self._in_flight.values()):
            future.cancel()
        await asyncio.sleep(0)  # let cancelled attempts run their done callbacks
        self._records_ready.set()
        await _quietly(record)
        await _quietly(heartbeat)
        await self._flush_records()
        if self._unsubscribe is not None:
            self._unsubscribe()
        released = await self._store.release_leases(self.instance_id, now_ms())
        if released:
            log.info("Released %d unfinished attempts for the next start", released)

    # ---- the loops ----

    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wake.clear()
            self._wake_before = math.inf
            try:
                delay = await self._claim_round()
            except Exception as exc:
                # e.g. the database is locked or read-only for a moment: never stop claiming
                log.error("Claiming due tasks failed: %s", exc)
                delay = CLAIM_RETRY_S
            if delay is None or self._wake.is_set() or self._stopping:
                continue
            self._wake_before = now_ms() + delay * 1000
            timer = loop.call_later(delay, self._wake.set)
            await self._wake.wait()
            timer.cancel()

    async def _claim_round(self) -> float | None:
        """Claim what is due; return how long to sleep, or None to look again at once."""
        busy = len(self._in_flight)
        free = self._max_in_flight - busy
        if free <= 0 or (busy and free < self._min_claim):
            return IDLE_POLL_S  # a finished attempt wakes us
        limit = min(free, self._claim_size)
        claim = await self._claim(limit)
        if len(claim.tasks) == limit:
            self._claim_size = min(CLAIM_BATCH, self._claim_size * 2)
            return None  # more may be due right now
        self._claim_size = FIRST_CLAIM  # the next burst starts small again
        if claim.next_due_at is None:
            return IDLE_POLL_S
        return min(IDLE_POLL_S, max(0.0, claim.next_due_at / 1000 - time.time()))

    async def _claim(self, limit: int) -> Claim:
        now = now_ms()
        token = secrets.randbits(62)
        claim = await self._store.claim_due_tasks(now, limit, self.instance_id, token)
        self._claimed.update((claimed.id, claimed) for claimed in claim.tasks)
        for index, claimed in enumerate(claim.tasks):
            if index and index % DISPATCH_SLICE == 0:
                # let the loop connect and send what is handed over while the rest is prepared
                await asyncio.sleep(0)
            if self._stopping:
                break  # the rest stays leased to this instance, and the stop releases it
            if self._claimed.pop(claimed.id, None) is None:
                continue  # aborted meanwhile (paused, revoked, deleted)
            try:
                self._dispatch(claimed, now)
            except Exception:
                # the others of the batch still go; this one runs again when its lease ends
                log.exception("Task %s could not be dispatched", claimed.id)
        self._claimed.clear()
        # told once a batch, not once an attempt: a gauge, read a few times a minute
        self._observer.attempts_in_flight(len(self._in_flight))
        return claim

    def _dispatch(self, claimed: ClaimedTask, now: int) -> None:
        """Hand the task's request to the sender."""
        try:
            spec = self._codec.open_spec(claimed.id, claimed.payload)
        except (DecryptionError, msgspec.DecodeError) as exc:
            # keep the task: its lease expires and it is tried again, e.g. with the right key
            log.error("Task %s cannot be read (%s); it stays queued", claimed.id, exc)
            return
        started_at = now_ms()
        self._observer.attempt_started(max(0, started_at - claimed.due_at) / 1000)
        future = self._sender.perform(spec, claimed, now)
        self._in_flight[claimed.id] = future
        future.add_done_callback(
            lambda done: self._on_attempt_done(claimed, spec, started_at, done)
        )

    @property
    def in_flight(self) -> int:
        """Attempts on the wire now."""
        return len(self._in_flight)

    @property
    def running(self) -> bool:
        """Claiming and recording, as a readiness probe asks."""
        return bool(self._tasks) and not self._stopping and not any(t.done() for t in self._tasks)

    def _on_attempt_done(
        self,
        claimed: ClaimedTask,
        spec: TaskSpec,
        started_at: int,
        future: asyncio.Future[AttemptResult],
    ) -> None:
        if self._in_flight.get(claimed.id) is future:
            del self._in_flight[claimed.id]
        self._wake.set()  # a slot is free
        ended_at = now_ms()
        if future.cancelled():
            # aborted by pause, revoke, delete or shutdown: its outcome counts for nothing,
            # but it happened (the history of a deleted task is gone with it)
            if self._history:
                self._attempts.append(self._attempt_log(claimed, started_at, ended_at, None))
                self._records_ready.set()
            return
        result = future.result()
        self._observer.attempt_finished(
            result.succeeded, result.status_code, (ended_at - started_at) / 1000
        )
        record = plan_outcome(claimed, retry_policy(spec), result, ended_at)
        record = msgspec.structs.replace(
            record,
            response=self._codec.seal_response(claimed.id, record.response),
            error=self._codec.seal_error(claimed.id, result.failure),
        )
        if log.isEnabledFor(logging.INFO):
            _log_outcome(record, result, spec, claimed.attempts)
        self._records.append(record)
        if self._history:  # 0: no history kept
            self._attempts.append(self._attempt_log(claimed, started_at, ended_at, result))
        self._records_ready.set()

    def _attempt_log(
        self, claimed: ClaimedTask, started_at: int, ended_at: int, result: AttemptResult | None
    ) -> AttemptLog:
        """The history row of an attempt; `result` None: aborted."""
        failure = ABORTED if result is None else result.failure
        timings = (result.timings if result else None) or AttemptTimings()
        return AttemptLog(
            task_id=claimed.id,
            number=claimed.attempts,
            due_at=claimed.due_at,
            started_at=started_at,
            ended_at=ended_at,
            status_code=result.status_code if result else 0,
            error=self._codec.seal_error(claimed.id, failure),
            response_bytes=result.response_bytes if result else 0,
            http_version=result.http_version if result else None,
            remote_address=result.remote_address if result else None,
            dns_ms=timings.dns_ms,
            connect_ms=timings.connect_ms,
            tls_ms=timings.tls_ms,
            first_byte_ms=timings.first_byte_ms,
            total_ms=timings.total_ms if result else ended_at - started_at,
        )

    async def _record_loop(self) -> None:
        while not self._stopping:
            await self._records_ready.wait()
            self._records_ready.clear()
            await self._flush_records()

    async def _flush_records(self) -> None:
        self._observer.attempts_in_flight(len(self._in_flight))
        failures = 0
        while self._records or self._attempts:
            batch, self._records = self._records, []
            attempts, self._attempts = self._attempts, []
            try:
                await self._store.record_attempts(batch, attempts, history=self._history)
            except Exception as exc:
                failures += 1
                if self._stopping and failures >= RECORD_TRIES_AT_STOP:
                    # the leases expire and the tasks run again: at-least-once
                    log.error("Could not record %d outcomes: %s", len(batch), exc)
                    return
                # e.g. the database is locked for a moment: keep the outcomes and try again,
                # rather than drop them and send the requests again when their leases end
                log.error("Could not record %d outcomes yet: %s", len(batch), exc)
                self._records = batch + self._records
                self._attempts = attempts + self._attempts
                await asyncio.sleep(0.5)
                continue
            if any(record.due_at is not None for record in batch):
                self._wake.set()  # retries have due times now

    async def _heartbeat_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._store.heartbeat(self.instance_id, now_ms())
                await self._release_dead_leases()
            except Exception as exc:
                log.error("Heartbeat failed: %s", exc)

    async def _release_dead_leases(self) -> None:
        now = now_ms()
        released = await self._store.release_dead_leases(
            self.instance_id, now, self._stale_after_ms
        )
        if released:
            log.info("Re-queued %d attempts left in flight by a stopped instance", released)
            self._wake.set()


def _log_outcome(record: AttemptRecord, result: AttemptResult, spec: TaskSpec, number: int) -> None:
    """LOG=1: one line per attempt, with the fields a JSON line carries."""
    request = spec.http_request
    host = urlsplit(request.url).hostname or ""
    fields = {
        "task_id": record.id,
        "attempt": number,
        "method": request.method,
        "host": host,
        "status_code": result.status_code,
        "state": record.state.value,
        "error": result.failure,
    }
    what = f"{request.method} {host} -> {result.status_code or result.error}"
    if record.state == State.RUNNING:
        log.info(
            "Task %s attempt %d failed: %s; retry %d at %d",
            record.id,
            number,
            what,
            record.retry_count,
            record.estimate_next_retry_at,
            extra={**fields, "retry_at": record.estimate_next_retry_at},
        )
    else:
        log.info("Task %s attempt %d %s: %s", record.id, number, record.state, what, extra=fields)


async def _quietly(task: asyncio.Task[None]) -> None:
    with suppress(asyncio.CancelledError):
        await task
