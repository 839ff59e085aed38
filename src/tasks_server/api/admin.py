"""What the dashboard shows beyond one owner's tasks: the server's last hour (any owner),
and the operator's view across owners (only with ADMIN_TOKEN, which it must carry)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tasks_server.api.auth import authenticate, bearer_token, check_token
from tasks_server.api.errors import ApiError
from tasks_server.api.http import json_response
from tasks_server.api.schemas import (
    ActivityPoint,
    BackupView,
    InstanceView,
    Overview,
    TaskCounts,
)
from tasks_server.api.services import services
from tasks_server.model.timing import now_ms

RECENT_BACKUPS = 10


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


async def activity(request: Request) -> Response:
    """Attempts, lateness and backlog a minute at a time, for the last hour, of the server
    process that answers (counts only: nothing of any task or owner)."""
    ctx = services(request)
    await authenticate(request, ctx.store)
    points = [
        ActivityPoint(
            minute=minute.start_ms,
            succeeded=minute.succeeded,
            failed=minute.failed,
            lateness_p50_ms=_ms(minute.lateness_quantile(0.5)),
            lateness_p99_ms=_ms(minute.lateness_quantile(0.99)),
            backlog=minute.backlog,
        )
        for minute in ctx.metrics.activity.minutes()
    ]
    return json_response(request, points)


async def overview(request: Request) -> Response:
    ctx = services(request)
    token = ctx.settings.admin_token
    given = bearer_token(request, "ADMIN_TOKEN", 401)  # credentials first, as everywhere
    if not token:
        raise ApiError(404, "The operator view is off: set ADMIN_TOKEN to turn it on")
    check_token(given, token, "ADMIN_TOKEN")
    now = now_ms()
    figures = await ctx.store.figures(now)
    alive = await ctx.store.live_instances(now, ctx.settings.instance_stale_ms)
    in_flight = await ctx.store.in_flight_by_instance()
    backups = await ctx.store.recent_backups(RECENT_BACKUPS)
    view = Overview(
        instances=[
            InstanceView(
                id=instance.id,
                host=instance.host,
                pid=instance.pid,
                heartbeat_at=instance.heartbeat_at,
                in_flight=in_flight.get(instance.id, 0),
            )
            for instance in alive
        ],
        tasks=TaskCounts.of(figures.tasks),
        due_backlog=figures.due_backlog,
        oldest_due_age_ms=max(0, now - figures.oldest_due_at) if figures.oldest_due_at else 0,
        backups=[
            BackupView(
                tick=run.tick,
                state=run.state,
                started_at=run.started_at,
                finished_at=run.finished_at,
                location=run.location,
                size=run.size,
                error=run.error,
            )
            for run in backups
        ],
    )
    return json_response(request, view)
