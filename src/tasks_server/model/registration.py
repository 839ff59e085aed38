"""A newly registered task: its row, when it is first due, how long a claim holds it,
and the time each attempt may take."""

from __future__ import annotations

from urllib.parse import urlsplit

from tasks_server.model.lifecycle import State
from tasks_server.model.records import TaskRow
from tasks_server.model.sealing import TaskSealer
from tasks_server.model.spec import Config, TaskSpec, ms

LEASE_MARGIN_MS = 60_000


def execution_time(config: Config, now: int) -> int:
    """When the first attempt is due, for a canonical config."""
    execute_at = ms(config.execute_at)
    return execute_at if execute_at is not None else now + config.execution_delay


def lease_ms(spec: TaskSpec, execution_at: int) -> int:
    """How long a claim holds a task: its longest possible attempt, plus a margin."""
    config = spec.config
    longest = config.timeout
    timeout_at = ms(config.timeout_at)
    if timeout_at is not None:
        longest = max(longest, timeout_at - execution_at)
    return longest + LEASE_MARGIN_MS


def attempt_budget_ms(config: Config, retry_count: int, now: int) -> int:
    """The time an attempt starting at `now` may take: `timeout`, or for the first
    attempt of a task with `timeoutAt`, until that deadline."""
    timeout_at = ms(config.timeout_at)
    if retry_count == 0 and timeout_at is not None:
        return timeout_at - now
    return config.timeout


def new_task_row(
    task_id: str, owner_id: str, spec: TaskSpec, now: int, sealer: TaskSealer
) -> TaskRow:
    """The row of a newly registered task, sealed and due at its first attempt."""
    execution_at = execution_time(spec.config, now)
    return TaskRow(
        id=task_id,
        owner_id=owner_id,
        state=State.RUNNING,
        created_at=now,
        estimate_execution_at=execution_at,
        estimate_end_at=0,
        estimate_next_retry_at=0,
        status_code=0,
        retry_count=0,
        retry_limit=spec.config.retry,
        attempts=0,
        error=None,
        response=None,
        metadata=sealer.seal_metadata(task_id, spec.metadata),
        payload=sealer.seal_spec(task_id, spec),
        due_at=execution_at,
        lease_token=None,
        lease_ms=lease_ms(spec, execution_at),
        target_host=sealer.index_host(url_host(spec.http_request.url)),
    )


def url_host(url: str) -> str:
    """The host a task's URL names, lower case, without brackets: what lists filter on."""
    return urlsplit(url).hostname or ""
