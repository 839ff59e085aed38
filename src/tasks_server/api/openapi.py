"""GET /openapi.json (OpenAPI 3.1, schemas generated from the msgspec structs) and
/swagger, a Swagger UI page whose assets come from a Python package, not a CDN.

OPERATIONS is the one table of what each endpoint takes and answers; the
document is built from it and the structs of api/schemas.py, once per app,
for that app's settings (whether registration needs a token, throttling).
"""

from __future__ import annotations

import copy
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import swagger_ui_bundle  # type: ignore[import-untyped]
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from tasks_server.api import schemas
from tasks_server.api.errors import ApiError
from tasks_server.config import Settings
from tasks_server.model.spec import TaskSpec

OPENAPI_PATH = "/openapi.json"
SWAGGER_PATH = "/swagger"
_REF = "#/components/schemas/{name}"
_JSON = "application/json"

# every status an operation may answer with besides its success, and what it means
ERROR_MEANINGS = {
    400: "Invalid input: `fields` names each bad field by its path",
    401: "Well-formed credentials, wrong key or token",
    403: "Missing or malformed credentials, or unknown owner",
    404: "No such task or owner for this caller",
    409: "Not allowed now (name taken, or not in the task's state)",
    413: "Body larger than MAX_SIZE_BODY_REQUEST",
    422: "The owner's tasks-in-queue limit is reached",
    429: "Throttled: too many requests from this client (see Retry-After)",
    503: "The database cannot take this change now (see Retry-After)",
}
_AUTH_ERRORS = (401, 403)


class Operation(NamedTuple):
    method: str
    path: str
    operation_id: str
    summary: str
    response: str | None  # a component name; None: not JSON, or any JSON
    errors: tuple[int, ...] = ()  # besides auth, 429 and 503 (added where they apply)
    status: int = 200  # on success
    auth: str = "owner"  # "owner" (key + owner id), "registration" or "none"
    body: str | None = None  # the request body's component name
    array: bool = False  # the response is an array of `response`
    media: str = _JSON
    query: str | None = None  # a component whose properties are the query parameters
    example: Any = None  # of the request body

    @property
    def tag(self) -> str:
        """owners, queues (from /v1/<tag>/...) or service."""
        return self.path.split("/")[2] if self.path.startswith("/v1/") else "service"


_TASK = "/v1/queues/{task_id}"
_OWNER = "/v1/owners/{name}"
_ANSWERS_TASK = (400, 404, 409)
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/status", "status", "Liveness", None, auth="none", media="text/plain"),
    Operation(
        "POST",
        "/v1/owners/register",
        "registerOwner",
        "Register an owner; its key is shown once",
        "OwnerCreated",
        (400, 409, 413),
        status=201,
        auth="registration",
        body="OwnerRegistration",
        example={"name": "my-team"},
    ),
    Operation("GET", _OWNER, "getOwner", "Read your owner", "OwnerView", (400, 404)),
    Operation(
        "DELETE",
        _OWNER,
        "deleteOwner",
        "Delete your owner and its finished tasks",
        "Done",
        (400, 404, 409),
    ),
    Operation(
        "POST",
        _OWNER + "/rotate-key",
        "rotateOwnerKey",
        "Replace your key: the new one is shown once, the old one stops working",
        "OwnerCreated",
        (400, 404),
    ),
    Operation(
        "POST",
        "/v1/queues/register",
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
    Operation(
        "GET",
        "/v1/queues",
        "listTasks",
        "List your tasks",
        "TaskView",
        (400,),
        array=True,
        query="ListQuery",
    ),
    Operation("GET", _TASK, "getTask", "Read one task", "TaskView", (400, 404)),
    Operation(
        "PATCH",
        _TASK,
        "editTask",
        "Edit a PAUSED task, or a RUNNING one not in flight (a merge patch of its registration)",
        "TaskView",
        (400, 404, 409, 413),
        body="TaskPatch",
        example={"config": {"executionDelay": 120000}, "metadata": {"tag": None}},
    ),
    Operation("DELETE", _TASK, "deleteTask", "Delete a task in any state", "Done", (400, 404)),
    Operation(
        "GET",
        _TASK + "/config",
        "getTaskConfig",
        "The stored request and options, secrets masked",
        "TaskConfig",
        (400, 404),
    ),
    Operation(
        "PATCH",
        _TASK + "/pause",
        "pauseTask",
        "Pause a RUNNING task (aborts a request in flight)",
        "Done",
        _ANSWERS_TASK,
    ),
    Operation(
        "PATCH",
        _TASK + "/resume",
        "resumeTask",
        "Resume a PAUSED task",
        "TaskView",
        _ANSWERS_TASK,
    ),
    Operation(
        "PATCH",
        _TASK + "/revoke",
        "revokeTask",
        "End a RUNNING or PAUSED task for good",
        "Done",
        _ANSWERS_TASK,
    ),
    Operation(
        "POST",
        _TASK + "/execute",
        "executeTask",
        "Run a RUNNING task now, once",
        "Done",
        _ANSWERS_TASK,
    ),
    Operation("GET", OPENAPI_PATH, "openapi", "This document", None, auth="none"),
    Operation(
        "GET",
        SWAGGER_PATH,
        "swagger",
        "Swagger UI for this document",
        None,
        auth="none",
        media="text/html",
    ),
)

STRUCTS = (
    TaskSpec,
    schemas.OwnerRegistration,
    schemas.ListQuery,
    schemas.OwnerCreated,
    schemas.OwnerView,
    schemas.TaskView,
    schemas.Done,
    schemas.ErrorBody,
)
_ULID = r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$"

SECURITY_SCHEMES = {
    "ownerKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "The owner's 64-character key: `Authorization: Bearer <key>`",
    },
    "ownerId": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Tasks-Owner-Id",
        "description": "The owner's id (a ULID), sent with its key",
    },
    "registrationToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "REGISTRATION_TOKEN of the server: `Authorization: Bearer <token>`",
    },
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "owner": [{"ownerKey": [], "ownerId": []}],
    "registration": [{"registrationToken": []}],
    "none": [],
}
_RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": ("The client's quota: `<requests>;w=<window seconds>`", "string"),
    "RateLimit-Limit": ("Requests a client may make at once (its bucket)", "integer"),
    "RateLimit-Remaining": ("Requests left to this client now", "integer"),
    "RateLimit-Reset": ("Seconds until the client's bucket is full again", "integer"),
}


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a server running with `settings`."""
    _, components = msgspec.json.schema_components(STRUCTS, ref_template=_REF)
    _add_derived_schemas(components)
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, components, settings
        )
    del components["ListQuery"]  # its fields are the query parameters of listTasks
    headers: dict[str, Any] = {
        name: {"description": text, "schema": {"type": kind}}
        for name, (text, kind) in _RATE_LIMIT_HEADERS.items()
    }
    headers["Retry-After"] = {"description": "Seconds to wait", "schema": {"type": "integer"}}
    headers["WWW-Authenticate"] = {
        "description": "How to authenticate",
        "schema": {"type": "string"},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tasks Server",
            "version": version("tasks-server"),
            "description": (
                "HTTP requests scheduled for later, stored durably, retried. Times are ms since"
                " the Unix epoch (UTC). Every error body is `ErrorBody`. Add `?pretty` to any"
                " URL to indent the JSON."
            ),
        },
        "tags": [
            {"name": "owners", "description": "Who registers tasks: a name, an id and a key"},
            {"name": "queues", "description": "Tasks: an HTTP request, when and how to retry"},
            {"name": "service", "description": "Liveness and this documentation"},
        ],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": SECURITY_SCHEMES,
            "headers": headers,
            "parameters": _shared_parameters(components),
        },
    }


def _operation(
    operation: Operation, components: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    auth = operation.auth
    if auth == "registration" and not settings.registration_token:
        auth = "none"
    errors = set(operation.errors)
    if auth != "none":
        errors.update(_AUTH_ERRORS)
    api = operation.path.startswith("/v1/")
    if api:
        errors.add(503)
    throttled = settings.throttled and not operation.path.startswith((OPENAPI_PATH, SWAGGER_PATH))
    if throttled:
        errors.add(429)
    rate_headers = (
        {name: {"$ref": f"#/components/headers/{name}"} for name in _RATE_LIMIT_HEADERS}
        if throttled
        else {}
    )
    responses = {str(operation.status): _success(operation, rate_headers)}
    for status in sorted(errors):
        headers = dict(rate_headers)
        if status in (429, 503):
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        if status == 401:
            headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWW-Authenticate"}
        responses[str(status)] = {
            "description": ERROR_MEANINGS[status],
            "content": {_JSON: {"schema": {"$ref": _REF.format(name="ErrorBody")}}},
            **({"headers": headers} if headers else {}),
        }
    document: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "security": _SECURITY[auth],
        "parameters": _parameters(operation, components),
        "responses": responses,
    }
    if operation.body is not None:
        media: dict[str, Any] = {"schema": {"$ref": _REF.format(name=operation.body)}}
        if operation.example is not None:
            media["example"] = operation.example
        document["requestBody"] = {"required": True, "content": {_JSON: media}}
    if operation.operation_id == "registerTask":
        document["responses"]["201"]["links"] = _task_links()
    return document


def _success(operation: Operation, headers: dict[str, Any]) -> dict[str, Any]:
    if operation.response is not None:
        schema: dict[str, Any] = {"$ref": _REF.format(name=operation.response)}
        if operation.array:
            schema = {"type": "array", "items": schema}
    elif operation.media == _JSON:
        schema = {"type": "object"}
    else:
        schema = {"type": "string"}
    response: dict[str, Any] = {
        "description": operation.summary,
        "content": {operation.media: {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _parameters(operation: Operation, components: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if "{name}" in operation.path:
        found.append({"$ref": "#/components/parameters/ownerName"})
    if "{task_id}" in operation.path:
        found.append({"$ref": "#/components/parameters/taskId"})
    if operation.query is not None:
        for name, schema in components[operation.query]["properties"].items():
            schema = {key: value for key, value in schema.items() if key != "default"}
            if "anyOf" in schema:  # an optional parameter is left out, never null
                (schema,) = [arm for arm in schema["anyOf"] if arm != {"type": "null"}]
            found.append({"name": name, "in": "query", "required": False, "schema": schema})
    if operation.media == _JSON and operation.operation_id != "openapi":
        found.append({"$ref": "#/components/parameters/pretty"})
    return found


def _shared_parameters(components: dict[str, Any]) -> dict[str, Any]:
    return {
        "ownerName": {
            "name": "name",
            "in": "path",
            "required": True,
            "description": "The owner's name (yours: another owner's name is 404)",
            "schema": components["OwnerRegistration"]["properties"]["name"],
        },
        "taskId": {
            "name": "task_id",
            "in": "path",
            "required": True,
            "description": "The task's id, a ULID (any case)",
            "schema": {"type": "string", "pattern": _ULID},
        },
        "pretty": {
            "name": "pretty",
            "in": "query",
            "required": False,
            "allowEmptyValue": True,
            "description": "Present with any value: the JSON answer is indented (4 spaces)",
            "schema": {"type": "string"},
        },
    }


def _task_links() -> dict[str, Any]:
    """From a registered task to everything that can be done with it (stateful clients)."""
    by_id = {"task_id": "$response.body#/id"}
    return {
        operation.operation_id: {"operationId": operation.operation_id, "parameters": by_id}
        for operation in OPERATIONS
        if "{task_id}" in operation.path
    }


def _add_derived_schemas(components: dict[str, Any]) -> None:
    """TaskPatch (what PATCH /v1/queues/:id takes) and TaskConfig (what /config answers)."""
    spec = components["TaskSpec"]["properties"]
    metadata = _nullable(_patched(spec["metadata"], components))
    components["TaskPatch"] = {
        "title": "TaskPatch",
        "description": (
            "A JSON merge patch (RFC 7386) of the registration: objects merge, null removes a"
            " field (back to its default), anything else replaces. The result is validated as"
            " a whole, like a registration."
        ),
        "type": "object",
        "properties": {
            "httpRequest": _patched(spec["httpRequest"], components),
            "config": _patched(spec["config"], components),
            "metadata": metadata,
        },
        "minProperties": 1,
        "additionalProperties": False,
    }
    config_view = copy.deepcopy(components["TaskSpec"])
    del config_view["properties"]["metadata"]
    config_view.update(
        title="TaskConfig",
        description="The task as stored (canonical: dates in ms), every field, secrets masked",
        required=["httpRequest", "config"],
    )
    components["TaskConfig"] = config_view


def _patched(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """The schema of a merge patch of a value of `schema`."""
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[1]
        target = components[name]
        if target.get("type") != "object" or "properties" not in target:
            return schema
        patch_name = f"{name}Patch"
        if patch_name not in components:
            components[patch_name] = {}  # placed first: a struct may refer to itself
            components[patch_name] = {
                "title": patch_name,
                "type": "object",
                "properties": {
                    key: _nullable(_patched(value, components))
                    for key, value in target["properties"].items()
                },
                "additionalProperties": False,
            }
        return {"$ref": _REF.format(name=patch_name)}
    if "anyOf" in schema:
        arms = [_patched(arm, components) for arm in schema["anyOf"] if arm != {"type": "null"}]
        return arms[0] if len(arms) == 1 else {"anyOf": arms}
    patched = {key: value for key, value in schema.items() if key != "default"}
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        # a record merges too: a key set to null is removed
        patched["additionalProperties"] = _nullable(schema["additionalProperties"])
        patched.pop("minProperties", None)
        patched.pop("maxProperties", None)  # keys set to null do not count
    return patched


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


# ---- routes ----

_ASSETS_DIR = Path(str(swagger_ui_bundle.swagger_ui_path))
_ASSETS = frozenset(
    {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"}
)
# URLs are relative, so that the page also works behind a proxy under a path prefix
_SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Tasks Server API</title>
<link rel="stylesheet" href="swagger/swagger-ui.css">
<link rel="icon" type="image/png" href="swagger/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="swagger/swagger-ui-bundle.js"></script>
<script src="swagger/start.js"></script>
</body>
</html>
"""
_SWAGGER_START = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
};
"""


def openapi_routes(settings: Settings) -> list[Route]:
    """GET /openapi.json, GET /swagger and the Swagger UI assets under /swagger/."""
    document = msgspec.json.encode(openapi_document(settings))

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type=_JSON)

    async def swagger_page(request: Request) -> Response:
        return HTMLResponse(_SWAGGER_PAGE)

    async def swagger_asset(request: Request) -> Response:
        name: str = request.path_params["asset"]
        if name == "start.js":
            return Response(_SWAGGER_START, media_type="text/javascript")
        if name not in _ASSETS:
            raise ApiError(404)
        return FileResponse(_ASSETS_DIR / name, headers={"Cache-Control": "max-age=86400"})

    return [
        Route(OPENAPI_PATH, openapi_json, methods=["GET"]),
        Route(SWAGGER_PATH, swagger_page, methods=["GET"]),
        Route(SWAGGER_PATH + "/{asset}", swagger_asset, methods=["GET"]),
    ]
