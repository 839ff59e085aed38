"""The result of one attempt, what counts as success, and what is written after it."""

from __future__ import annotations

import msgspec

from tasks_server.model.lifecycle import State
from tasks_server.model.records import AttemptRecord, ClaimedTask
from tasks_server.model.retry import RetryPolicy

TIMEOUT_STATUS = 408


class AttemptTimings(msgspec.Struct, frozen=True):
    """Where an attempt's time went, in ms, phase by phase (0 for a phase it did not need,
    such as DNS and connect on a reused connection): name lookup, TCP connect, TLS
    handshake, the wait from the request sent to the first byte of the answer, and the
    whole attempt."""

    dns_ms: float = 0.0
    connect_ms: float = 0.0
    tls_ms: float = 0.0
    first_byte_ms: float = 0.0
    total_ms: float = 0.0


class AttemptResult(msgspec.Struct, frozen=True):
    """What one HTTP attempt produced.

    `status_code` is the final HTTP status, 0 when no response arrived
    (network, DNS or TLS failure, then `error` says what libcurl said), or
    408 when the attempt ran out of time. `body` is at most the configured
    size (cut off beyond it); `response_bytes` counts what arrived of it.
    """

    status_code: int
    body: bytes | None = None
    error: str | None = None
    response_bytes: int = 0
    http_version: str | None = None  # "1.1", "2", "3"
    remote_address: str | None = None  # the address connected to, "ip:port"
    timings: AttemptTimings | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and 0 < self.status_code < 400

    @property
    def failure(self) -> str | None:
        """Why the attempt failed, in words: libcurl's error, else the HTTP status."""
        if self.succeeded:
            return None
        return self.error or f"HTTP {self.status_code}"


def plan_outcome(
    claimed: ClaimedTask, policy: RetryPolicy, result: AttemptResult, now: int
) -> AttemptRecord:
    """What to write after an attempt: SUCCESS, a retry, or the final ERROR.

    The response and error are as the attempt gave them; the caller seals them.
    """
    state, retry_count, retry_at = State.ERROR, claimed.retry_count, None
    if result.succeeded:
        state = State.SUCCESS
    elif not policy.stops_on(result.status_code):
        retry_at = policy.next_retry_at(claimed.retry_count + 1, now)
        if retry_at is not None:
            state, retry_count = State.RUNNING, claimed.retry_count + 1
    return AttemptRecord(
        id=claimed.id,
        lease_token=claimed.lease_token,
        state=state,
        status_code=result.status_code,
        response=result.body,
        error=None,  # sealed by the caller, like the response
        retry_count=retry_count,
        estimate_next_retry_at=retry_at or 0,
        estimate_end_at=0 if retry_at is not None else now,
        due_at=retry_at,
    )
