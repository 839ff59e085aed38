"""Task ("queue") endpoints: register, list, read, config, lifecycle actions, edit, delete."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from ulid import ULID

from tasks_server.api.auth import ULID_PATTERN, authenticate
from tasks_server.api.errors import ApiError
from tasks_server.api.http import json_response, read_json
from tasks_server.api.masking import masked_view
from tasks_server.api.schemas import Done, ListQuery, TaskSpec, TaskView, ms
from tasks_server.api.services import Services, services
from tasks_server.api.validation import (
    ValidationFailed,
    ValidationRules,
    canonical_task_spec,
    convert,
    execution_time,
    merge_patch,
    parse_query,
    parse_task_spec,
)
from tasks_server.codec import TaskCodec
from tasks_server.model import actions
from tasks_server.model.lifecycle import Action, State, TransitionRefused, target_state
from tasks_server.model.timing import now_ms
from tasks_server.store.base import (
    ORDER_COLUMNS,
    LimitReached,
    ListParams,
    NotFound,
    TaskChange,
    TaskRow,
)

LEASE_MARGIN_MS = 60_000
SCHEDULE_FIELDS = frozenset({"executeAt", "executionDelay"})
PATCH_KEYS = frozenset({"httpRequest", "config", "metadata"})


def lease_ms(spec: TaskSpec, execution_at: int) -> int:
    """How long a claim holds a task: its longest possible attempt, plus a margin."""
    config = spec.config
    longest = config.timeout
    timeout_at = ms(config.timeout_at)
    if timeout_at is not None:
        longest = max(longest, timeout_at - execution_at)
    return longest + LEASE_MARGIN_MS


def new_task_row(
    task_id: str, owner_id: str, spec: TaskSpec, now: int, codec: TaskCodec
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
        metadata=codec.seal_metadata(task_id, spec.metadata),
        payload=codec.seal_spec(task_id, spec),
        due_at=execution_at,
        lease_token=None,
        lease_ms=lease_ms(spec, execution_at),
    )


async def register_task(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    data = await read_json(request, ctx.settings.max_size_body_request)
    now = now_ms()
    spec = parse_task_spec(data, now, ValidationRules.from_settings(ctx.settings))
    row = new_task_row(str(ULID.from_timestamp(now / 1000)), owner.id, spec, now, ctx.codec)
    try:
        await ctx.store.insert_task(row, ctx.settings.max_tasks_in_queue)
    except LimitReached:
        raise ApiError(
            422, f"Tasks in queue has reached its limit ({ctx.settings.max_tasks_in_queue})"
        ) from None
    ctx.scheduler.wake()
    return json_response(request, task_view(ctx, row), 201)


async def list_tasks(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    query = parse_query(
        request.query_params.multi_items(),
        ListQuery,
        ignore=frozenset({"pretty"}),
        normalize={"sort": str.lower, "state": str.upper},
    )
    params = ListParams(
        owner_id=owner.id,
        limit=query.limit,
        offset=query.offset,
        order=ORDER_COLUMNS[query.order],
        descending=query.sort == "desc",
        state=query.state,
    )
    rows = await ctx.store.list_tasks(params)
    return json_response(request, [task_view(ctx, row) for row in rows])


async def get_task(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    row = await ctx.store.get_task(owner.id, _task_id(request))
    if row is None:
        raise ApiError(404, "Task not found")
    return json_response(request, task_view(ctx, row))


async def get_task_config(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    row = await ctx.store.get_task(owner.id, _task_id(request))
    if row is None:
        raise ApiError(404, "Task not found")
    spec = ctx.codec.open_spec(row.id, row.payload)
    return json_response(request, masked_view(spec))


async def pause_task(request: Request) -> Response:
    row = await _apply(request, actions.pause)
    services(request).scheduler.abort(row.id)
    return json_response(request, Done())


async def resume_task(request: Request) -> Response:
    row = await _apply(request, actions.resume)
    ctx = services(request)
    ctx.scheduler.wake()
    return json_response(request, task_view(ctx, row))


async def revoke_task(request: Request) -> Response:
    row = await _apply(request, actions.revoke)
    services(request).scheduler.abort(row.id)
    return json_response(request, Done())


async def execute_task(request: Request) -> Response:
    await _apply(request, actions.execute)
    services(request).scheduler.wake()
    return json_response(request, Done())


async def delete_task(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    try:
        row = await ctx.store.delete_task(owner.id, _task_id(request))
    except NotFound:
        raise ApiError(404, "Task not found") from None
    ctx.scheduler.abort(row.id)
    return json_response(request, Done())


async def edit_task(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    task_id = _task_id(request)
    patch = await read_json(request, ctx.settings.max_size_body_request)
    _check_patch_shape(patch)
    now = now_ms()

    def decide(row: TaskRow) -> TaskChange:
        target_state(Action.EDIT, State(row.state), row.in_flight)
        return _edit_change(ctx, row, patch, now)

    row = await _change(ctx, owner.id, task_id, decide)
    ctx.scheduler.wake()
    return json_response(request, task_view(ctx, row))


def _edit_change(ctx: Services, row: TaskRow, patch: dict[str, Any], now: int) -> TaskChange:
    stored = ctx.codec.open_spec(row.id, row.payload)
    document = msgspec.to_builtins(stored)
    metadata = ctx.codec.open_metadata(row.id, row.metadata)
    if metadata is not None:
        document["metadata"] = metadata
    config_patch = patch.get("config") or {}
    if "executionDelay" in config_patch and "executeAt" not in config_patch:
        # a new delay replaces the stored date (executeAt would otherwise win)
        document.get("config", {}).pop("executeAt", None)
    if stored.config.retry < 2 and "retry" in config_patch:
        # under 2 retries the stored form says false whatever was asked (it makes no
        # difference there): more retries take the default, as a registration would,
        # unless the edit names retryExponential itself
        document.get("config", {}).pop("retryExponential", None)
    merged = convert(merge_patch(document, patch), TaskSpec)
    rules = ValidationRules.from_settings(ctx.settings)
    reschedule = bool(SCHEDULE_FIELDS & set(config_patch))
    if reschedule:
        spec = canonical_task_spec(merged, now, rules=rules)
        execution_at = execution_time(spec.config, now)
        schedule = TaskChange(
            estimate_execution_at=execution_at,
            estimate_next_retry_at=0,
            retry_count=0,
            due_at=execution_at if row.state == State.RUNNING else None,
        )
    else:
        # the task keeps its place in time; only what it sends and how it retries change
        execution_at = row.estimate_execution_at
        spec = canonical_task_spec(merged, now, execution_at=execution_at, rules=rules)
        schedule = TaskChange()
    return msgspec.structs.replace(
        schedule,
        payload=ctx.codec.seal_spec(row.id, spec),
        metadata=ctx.codec.seal_metadata(row.id, spec.metadata),
        retry_limit=spec.config.retry,
        lease_ms=lease_ms(spec, execution_at),
    )


def _check_patch_shape(patch: Any) -> None:
    if not isinstance(patch, dict) or not patch:
        raise ValidationFailed({"body": "Expected a non-empty object"})
    errors = {key: "Unknown field" for key in patch if key not in PATCH_KEYS}
    for key in ("httpRequest", "config"):
        if key in patch and not isinstance(patch[key], dict):
            errors[key] = "Expected an object"
    if errors:
        raise ValidationFailed(errors)


async def _apply(request: Request, action: Callable[[TaskRow, int], TaskChange]) -> TaskRow:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    now = now_ms()
    return await _change(ctx, owner.id, _task_id(request), lambda row: action(row, now))


async def _change(
    ctx: Services, owner_id: str, task_id: str, decide: Callable[[TaskRow], TaskChange]
) -> TaskRow:
    try:
        return await ctx.store.change_task(owner_id, task_id, decide)
    except NotFound:
        raise ApiError(404, "Task not found") from None
    except TransitionRefused as exc:
        raise ApiError(409, str(exc)) from None


def _task_id(request: Request) -> str:
    task_id: str = request.path_params["task_id"]
    if not ULID_PATTERN.match(task_id):
        raise ValidationFailed({"id": "Invalid task id: expected a 26-character ULID"})
    return task_id.upper()


def task_view(ctx: Services, row: TaskRow) -> TaskView:
    response = ctx.codec.open_response(row.id, row.response)
    return TaskView(
        id=row.id,
        state=row.state,
        created_at=row.created_at,
        status_code=row.status_code,
        estimate_end_at=row.estimate_end_at,
        estimate_execution_at=row.estimate_execution_at,
        response=base64.b64encode(response).decode() if response is not None else None,
        metadata=ctx.codec.open_metadata(row.id, row.metadata),
        retry_count=row.retry_count,
        retry_limit=row.retry_limit,
        estimate_next_retry_at=row.estimate_next_retry_at,
        attempts=row.attempts,
        error=ctx.codec.open_error(row.id, row.error),
    )
