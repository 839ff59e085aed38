"""The one table of the HTTP API: each endpoint, its handler and what it takes and answers.

The app's routes, the OpenAPI document (openapi.py) and the throttle's
exemptions are all built from ROUTES.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from tasks_server.api import admin, docs, owners, queues, status
from tasks_server.api.auth import ULID_PATTERN

Handler = Callable[[Request], Awaitable[Response]]
JSON = "application/json"
OPENAPI_PATH = "/openapi.json"
SWAGGER_PATH = "/swagger"


class Endpoint(NamedTuple):
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    response: str | None  # a component name; None: not JSON, or any JSON
    errors: tuple[int, ...] = ()  # besides auth, 429 and 503 (added where they apply)
    status: int = 200  # on success
    auth: str = "owner"  # "owner" (key + owner id), "registration" or "none"
    body: str | None = None  # the request body's component name
    array: bool = False  # the response is an array of `response`
    media: str = JSON
    query: str | None = None  # a component whose properties are the query parameters
    example: Any = None  # of the request body
    throttled: bool = True  # documentation is not throttled (as in the original)
    documented: bool = True  # in the OpenAPI document

    @property
    def tag(self) -> str:
        """owners, queues (from /v1/<tag>/...) or service."""
        return self.path.split("/")[2] if self.path.startswith("/v1/") else "service"


_TASK = "/v1/queues/{task_id}"
_OWNER = "/v1/owners/{name}"
_ANSWERS_TASK = (400, 404, 409)
ROUTES: tuple[Endpoint, ...] = (
    Endpoint(
        "GET", "/status", status.status, "status", "Liveness", None, auth="none", media="text/plain"
    ),
    Endpoint(
        "GET",
        "/health",
        status.health,
        "health",
        "The process answers (a liveness probe)",
        "Health",
        auth="none",
        throttled=False,
    ),
    Endpoint(
        "GET",
        "/ready",
        status.ready,
        "ready",
        "The database answers and the scheduler runs (a readiness probe); 503 with the reason",
        "Health",
        (503,),
        auth="none",
        throttled=False,
    ),
    Endpoint(
        "GET",
        "/metrics",
        status.metrics,
        "metrics",
        "Prometheus metrics (with METRICS_TOKEN set: `Authorization: Bearer <token>`)",
        None,
        (401,),
        auth="none",
        media="text/plain",
        throttled=False,
    ),
    Endpoint(
        "POST",
        "/v1/owners/register",
        owners.register_owner,
        "registerOwner",
        "Register an owner; its key is shown once",
        "OwnerCreated",
        (400, 409, 413),
        status=201,
        auth="registration",
        body="OwnerRegistration",
        example={"name": "my-team"},
    ),
    Endpoint(
        "GET", _OWNER, owners.get_owner, "getOwner", "Read your owner", "OwnerView", (400, 404)
    ),
    Endpoint(
        "DELETE",
        _OWNER,
        owners.delete_owner,
        "deleteOwner",
        "Delete your owner and its finished tasks",
        "Done",
        (400, 404, 409),
    ),
    Endpoint(
        "POST",
        _OWNER + "/rotate-key",
        owners.rotate_owner_key,
        "rotateOwnerKey",
        "Replace your key: the new one is shown once, the old one stops working",
        "OwnerCreated",
        (400, 404),
    ),
    Endpoint(
        "POST",
        "/v1/queues/register",
        queues.register_task,
        "registerTask",
        "Register a task",
        "TaskView",
        (400, 413, 422),
        status=201,
        body="TaskSpec",
        example={
            "httpRequest": {
                "url": "https://example.com/webhook",
                "method": "POST",
                "data": {"hello": "world"},
            },
            "config": {"executionDelay": 60000, "retry": 3, "retryInterval": 10000},
            "metadata": {"tag": "welcome-email"},
        },
    ),
    Endpoint(
        "GET",
        "/v1/queues",
        queues.list_tasks,
        "listTasks",
        "List your tasks",
        "TaskView",
        (400,),
        array=True,
        query="ListQuery",
    ),
    Endpoint(
        "GET",
        "/v1/queues/stats",
        queues.count_tasks,
        "countTasks",
        "Your tasks counted by state",
        "TaskCounts",
    ),
    Endpoint("GET", _TASK, queues.get_task, "getTask", "Read one task", "TaskView", (400, 404)),
    Endpoint(
        "GET",
        _TASK + "/attempts",
        queues.list_attempts,
        "listAttempts",
        "The task's attempts, newest first (the newest ATTEMPT_HISTORY are kept)",
        "AttemptView",
        (400, 404),
        array=True,
        query="AttemptsQuery",
    ),
    Endpoint(
        "PATCH",
        _TASK,
        queues.edit_task,
        "editTask",
        "Edit a PAUSED task, or a RUNNING one not in flight (a merge patch of its registration)",
        "TaskView",
        (400, 404, 409, 413),
        body="TaskPatch",
        example={"config": {"executionDelay": 120000}, "metadata": {"tag": None}},
    ),
    Endpoint(
        "DELETE",
        _TASK,
        queues.delete_task,
        "deleteTask",
        "Delete a task in any state",
        "Done",
        (400, 404),
    ),
    Endpoint(
        "GET",
        _TASK + "/config",
        queues.get_task_config,
        "getTaskConfig",
        "The stored request and options, secrets masked",
        "TaskConfig",
        (400, 404),
    ),
    Endpoint(
        "PATCH",
        _TASK + "/pause",
        queues.pause_task,
        "pauseTask",
        "Pause a RUNNING task (aborts a request in flight)",
        "Done",
        _ANSWERS_TASK,
    ),
    Endpoint(
        "PATCH",
        _TASK + "/resume",
        queues.resume_task,
        "resumeTask",
        "Resume a PAUSED task",
        "TaskView",
        _ANSWERS_TASK,
    ),
    Endpoint(
        "PATCH",
        _TASK + "/revoke",
        queues.revoke_task,
        "revokeTask",
        "End a RUNNING or PAUSED task for good",
        "Done",
        _ANSWERS_TASK,
    ),
    Endpoint(
        "POST",
        _TASK + "/execute",
        queues.execute_task,
        "executeTask",
        "Run a RUNNING task now, once",
        "Done",
        _ANSWERS_TASK,
    ),
    Endpoint(
        "GET",
        "/v1/activity",
        admin.activity,
        "activity",
        "The answering server process's last hour, a minute at a time (the dashboard's charts)",
        "ActivityPoint",
        array=True,
    ),
    Endpoint(
        "GET",
        "/v1/admin/overview",
        admin.overview,
        "overview",
        "Across owners: instances, counts, backlog, last backups (`Bearer <ADMIN_TOKEN>`)",
        "Overview",
        (401, 404),
        auth="none",
    ),
    Endpoint(
        "GET",
        OPENAPI_PATH,
        docs.openapi_json,
        "openapi",
        "This document",
        None,
        auth="none",
        throttled=False,
    ),
    Endpoint(
        "GET",
        SWAGGER_PATH,
        docs.swagger_page,
        "swagger",
        "Swagger UI for this document",
        None,
        auth="none",
        media="text/html",
        throttled=False,
    ),
    Endpoint(
        "GET",
        SWAGGER_PATH + "/{asset}",
        docs.swagger_asset,
        "swaggerAsset",
        "The assets of Swagger UI",
        None,
        auth="none",
        media="application/octet-stream",
        throttled=False,
        documented=False,
    ),
)


def unthrottled_prefixes(endpoints: tuple[Endpoint, ...] = ROUTES) -> tuple[str, ...]:
    """The path prefixes the throttle lets through: each unthrottled path up to its first
    parameter."""
    return tuple(
        dict.fromkeys(
            endpoint.path.split("{", 1)[0] for endpoint in endpoints if not endpoint.throttled
        )
    )


# the path parameters that take ids, and the shape of an id
ID_PARAMETERS: dict[str, re.Pattern[str]] = {"{task_id}": ULID_PATTERN}


class PathRoute(Route):
    """Every method of one path as one Starlette route, so that a wrong method is a 405
    whose Allow header lists them all. Its id parameter never takes a literal segment of a
    path beside it: GET /v1/queues/register is a 405 (only POST is), not a task's id."""

    def __init__(self, path: str, handlers: dict[str, Handler], reserved: frozenset[str]) -> None:
        self.handlers = handlers
        self.reserved = reserved
        super().__init__(path, self.dispatch, methods=list(handlers), name=path)

    async def dispatch(self, request: Request) -> Response:
        return await self.handlers["GET" if request.method == "HEAD" else request.method](request)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and not self.reserved.isdisjoint(child["path_params"].values()):
            return Match.NONE, {}
        return match, child


def path_routes(endpoints: tuple[Endpoint, ...] = ROUTES) -> list[Route]:
    """The app's routes: one PathRoute a path, in the order of the table."""
    by_path: dict[str, dict[str, Handler]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint.handler
    return [
        PathRoute(path, handlers, _reserved(path, by_path)) for path, handlers in by_path.items()
    ]


def _reserved(path: str, paths: Iterable[str]) -> frozenset[str]:
    """The last segments of the literal paths beside `path` that cannot be its final id
    parameter: `register` and `stats` for /v1/queues/{task_id}."""
    parent, _, parameter = path.rpartition("/")
    shape = ID_PARAMETERS.get(parameter)
    if shape is None:
        return frozenset()
    siblings = (other.rpartition("/") for other in paths)
    return frozenset(
        last
        for head, _, last in siblings
        if head == parent and "{" not in last and not shape.match(last)
    )
