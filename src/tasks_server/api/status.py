"""The service itself: is it answering (/status, /health), can it work (/ready), and its
figures (/metrics). None of them is throttled."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from tasks_server.api.auth import bearer_token, check_token
from tasks_server.api.http import json_response
from tasks_server.api.schemas import Health
from tasks_server.api.services import services
from tasks_server.model.timing import now_ms

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


async def status(request: Request) -> Response:
    return PlainTextResponse("OK")


async def health(request: Request) -> Response:
    """The process answers: for a liveness probe (restart the process when it fails)."""
    return json_response(request, Health("ok"))


async def ready(request: Request) -> Response:
    """The database answers and the scheduler runs: for a readiness probe (send no traffic
    here while it fails). 503 with the reason otherwise."""
    ctx = services(request)
    reason = None
    if not ctx.scheduler_running():
        reason = "the scheduler is not running"
    else:
        try:
            await ctx.store.ping()
        except Exception as exc:
            reason = f"the database does not answer: {exc}"
    if reason is not None:
        return json_response(request, Health("unavailable", reason), 503, {"Retry-After": "1"})
    return json_response(request, Health("ok"))


async def metrics(request: Request) -> Response:
    ctx = services(request)
    token = ctx.settings.metrics_token
    if token:
        check_token(bearer_token(request, "METRICS_TOKEN", 401), token, "METRICS_TOKEN")
    now = now_ms()
    figures = await ctx.store.figures(now)
    alive = await ctx.store.live_instances(now, ctx.settings.instance_stale_ms)
    body = ctx.metrics.render(figures, len(alive), now)
    return Response(body, media_type=PROMETHEUS_TEXT)
