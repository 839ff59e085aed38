"""Task ("queue") endpoints: register, list, read, config, lifecycle actions, edit, delete."""

from __future__ import annotations

import base64
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from ulid import ULID

from tasks_server.api.auth import ULID_PATTERN, authenticate
from tasks_server.api.decoding import parse_query
from tasks_server.api.errors import ApiError
from tasks_server.api.http import json_response, read_json
from tasks_server.api.masking import masked_view
from tasks_server.api.schemas import (
    AttemptsQuery,
    AttemptTimingsView,
    AttemptView,
    Done,
    ListQuery,
    TaskCounts,
    TaskView,
)
from tasks_server.api.services import Services, services
from tasks_server.model import actions
from tasks_server.model.canonical import parse_task_spec
from tasks_server.model.edit import check_patch_shape, edit
from tasks_server.model.lifecycle import State, TransitionRefused
from tasks_server.model.records import (
    ORDER_COLUMNS,
    AttemptLog,
    ListParams,
    TaskChange,
    TaskRow,
)
from tasks_server.model.registration import new_task_row
from tasks_server.model.timing import now_ms
from tasks_server.model.validation import ValidationFailed
from tasks_server.store.base import LimitReached, NotFound


async def register_task(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    data = await read_json(request, ctx.settings.max_size_body_request)
    now = now_ms()
    spec = parse_task_spec(data, now, ctx.rules)
    row = new_task_row(str(ULID.from_timestamp(now / 1000)), owner.id, spec, now, ctx.codec)
    try:
        await ctx.store.insert_task(row, ctx.settings.max_tasks_in_queue)
    except LimitReached:
        raise ApiError(
            422, f"Tasks in queue has reached its limit ({ctx.settings.max_tasks_in_queue})"
        ) from None
    except NotFound:
        raise ApiError(403) from None  # the owner was deleted since it was authenticated
    ctx.observer.tasks_registered(1)
    return json_response(request, task_view(ctx, row), 201)


async def list_tasks(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    query = parse_query(
        request.query_params.multi_items(),
        ListQuery,
        ignore=frozenset({"pretty"}),
        normalize={"sort": str.lower, "state": str.upper, "host": _host},
    )
    params = ListParams(
        owner_id=owner.id,
        limit=query.limit,
        offset=query.offset,
        order=ORDER_COLUMNS[query.order],
        descending=query.sort == "desc",
        state=State(query.state) if query.state else None,
        after=query.after.upper() if query.after else None,
        created_from=query.created_from,
        created_to=query.created_to,
        due_from=query.due_from,
        due_to=query.due_to,
        host_indexes=tuple(ctx.codec.host_indexes(query.host)) if query.host else (),
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
    await _apply(request, actions.pause)
    return json_response(request, Done())


async def resume_task(request: Request) -> Response:
    row = await _apply(request, actions.resume)
    return json_response(request, task_view(services(request), row))


async def revoke_task(request: Request) -> Response:
    await _apply(request, actions.revoke)
    return json_response(request, Done())


async def execute_task(request: Request) -> Response:
    await _apply(request, actions.execute)
    return json_response(request, Done())


async def delete_task(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    try:
        await ctx.store.delete_task(owner.id, _task_id(request))
    except NotFound:
        raise ApiError(404, "Task not found") from None
    return json_response(request, Done())


async def edit_task(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    task_id = _task_id(request)
    patch = await read_json(request, ctx.settings.max_size_body_request)
    check_patch_shape(patch)
    now = now_ms()
    row = await _change(
        ctx, owner.id, task_id, lambda row: edit(row, patch, now, ctx.codec, ctx.rules)
    )
    return json_response(request, task_view(ctx, row))


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


def _host(value: str) -> str:
    """As target_host keeps it: lower case, an IPv6 address without brackets."""
    return value.strip().lower().removeprefix("[").removesuffix("]")


def _task_id(request: Request) -> str:
    task_id: str = request.path_params["task_id"]
    if not ULID_PATTERN.match(task_id):
        raise ValidationFailed({"id": "Invalid task id: expected a 26-character ULID"})
    return task_id.upper()


async def list_attempts(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    task_id = _task_id(request)
    query = parse_query(
        request.query_params.multi_items(), AttemptsQuery, ignore=frozenset({"pretty"})
    )
    found = await ctx.store.list_attempts(owner.id, task_id, query.before, query.limit)
    if found is None:
        raise ApiError(404, "Task not found")
    return json_response(request, [attempt_view(ctx, attempt) for attempt in found])


async def count_tasks(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    counts = await ctx.store.count_tasks(owner.id)
    return json_response(request, TaskCounts.of(counts))


def attempt_view(ctx: Services, attempt: AttemptLog) -> AttemptView:
    return AttemptView(
        number=attempt.number,
        due_at=attempt.due_at,
        started_at=attempt.started_at,
        ended_at=attempt.ended_at,
        status_code=attempt.status_code,
        error=ctx.codec.open_error(attempt.task_id, attempt.error),
        response_bytes=attempt.response_bytes,
        http_version=attempt.http_version,
        remote_address=attempt.remote_address,
        timings=AttemptTimingsView(
            dns_ms=round(attempt.dns_ms, 3),
            connect_ms=round(attempt.connect_ms, 3),
            tls_ms=round(attempt.tls_ms, 3),
            first_byte_ms=round(attempt.first_byte_ms, 3),
            total_ms=round(attempt.total_ms, 3),
        ),
    )


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
