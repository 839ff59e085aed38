"""The port the scheduler sends through: one attempt of a task in, its result out.

`CurlSender` is the one in use: the libcurl engine, the option table, the
target policy and each attempt's time budget, behind one `perform`. Tests of
the scheduler give it a fake that answers from memory.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Protocol

from tasks_server.dispatch.engine import CurlEngine
from tasks_server.dispatch.options import Attempt, curl_options
from tasks_server.dispatch.policy import TargetPolicy, perform_checked
from tasks_server.model.outcome import AttemptResult
from tasks_server.model.records import ClaimedTask
from tasks_server.model.registration import attempt_budget_ms
from tasks_server.model.spec import TaskSpec

log = logging.getLogger(__name__)


class Sender(Protocol):
    def perform(
        self, spec: TaskSpec, claimed: ClaimedTask, now: int
    ) -> asyncio.Future[AttemptResult]:
        """Start one attempt of `spec`, starting at `now`; the future gives its result.

        Never raises for a request that cannot be made: that is a failed attempt.
        Cancelling the future aborts the attempt.
        """
        ...

    def close(self) -> None:
        """Abort what is in flight and free the connections."""
        ...


class CurlSender:
    """Attempts through one libcurl multi handle on the running loop."""

    def __init__(self, max_response_bytes: int, target_policy: TargetPolicy | None = None) -> None:
        self._engine = CurlEngine(max_response_bytes)
        self._target_policy = target_policy
        # without TARGET_ALLOW / TARGET_DENY there is no refusal to explain: the engine's own
        self._send = (
            self._engine.perform
            if target_policy is None
            else partial(perform_checked, self._engine)
        )

    def perform(
        self, spec: TaskSpec, claimed: ClaimedTask, now: int
    ) -> asyncio.Future[AttemptResult]:
        attempt = Attempt(
            task_id=claimed.id,
            retry_count=claimed.retry_count,
            retry_limit=claimed.retry_limit,
            estimate_next_retry_at=claimed.estimate_next_retry_at,
            timeout_ms=attempt_budget_ms(spec.config, claimed.retry_count, now),
            target_policy=self._target_policy,
        )
        try:
            options = curl_options(spec, attempt)
        except Exception as exc:
            # a stored value libcurl cannot take fails this attempt, never the loop
            log.error("Task %s cannot be sent as stored: %r", claimed.id, exc)
            failed: asyncio.Future[AttemptResult] = asyncio.get_running_loop().create_future()
            failed.set_result(AttemptResult(0, error=f"invalid request option: {exc}"))
            return failed
        return self._send(options, keep_body=spec.config.trace_response_data)

    def close(self) -> None:
        self._engine.close()
