"""The OpenAPI 3.1 document of this server, built from the route table (routes.py) and
the structs of model/spec.py and api/schemas.py (their JSON Schemas, by msgspec), once
per app, for that app's settings (whether registration needs a token, throttling)."""

from __future__ import annotations

import copy
from importlib.metadata import version
from typing import Any

import msgspec

from tasks_server.api import schemas
from tasks_server.api.routes import JSON, ROUTES, Endpoint
from tasks_server.config import Settings
from tasks_server.model.spec import TaskSpec

_REF = "#/components/schemas/{name}"

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


STRUCTS = (
    TaskSpec,
    schemas.OwnerRegistration,
    schemas.ListQuery,
    schemas.AttemptsQuery,
    schemas.OwnerCreated,
    schemas.OwnerView,
    schemas.TaskView,
    schemas.AttemptView,
    schemas.TaskCounts,
    schemas.Health,
    schemas.ActivityPoint,
    schemas.Overview,
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


def openapi_document(
    settings: Settings, endpoints: tuple[Endpoint, ...] = ROUTES
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a server running with `settings`."""
    _, components = msgspec.json.schema_components(STRUCTS, ref_template=_REF)
    _type_enums(components)
    _add_derived_schemas(components)
    paths: dict[str, dict[str, Any]] = {}
    for operation in endpoints:
        if not operation.documented:
            continue
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, components, settings, endpoints
        )
    for query in {operation.query for operation in endpoints if operation.query}:
        del components[query]  # its fields are the query parameters of its operation
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
            {
                "name": "service",
                "description": "Health, readiness, metrics and this documentation",
            },
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
    operation: Endpoint,
    components: dict[str, Any],
    settings: Settings,
    endpoints: tuple[Endpoint, ...],
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
    throttled = settings.throttled and operation.throttled
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
            "content": {JSON: {"schema": {"$ref": _REF.format(name="ErrorBody")}}},
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
        document["requestBody"] = {"required": True, "content": {JSON: media}}
    if operation.operation_id == "registerTask":
        document["responses"]["201"]["links"] = _task_links(endpoints)
    return document


def _success(operation: Endpoint, headers: dict[str, Any]) -> dict[str, Any]:
    if operation.response is not None:
        schema: dict[str, Any] = {"$ref": _REF.format(name=operation.response)}
        if operation.array:
            schema = {"type": "array", "items": schema}
    elif operation.media == JSON:
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


def _parameters(operation: Endpoint, components: dict[str, Any]) -> list[dict[str, Any]]:
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
    if operation.media == JSON and operation.operation_id != "openapi":
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


def _task_links(endpoints: tuple[Endpoint, ...]) -> dict[str, Any]:
    """From a registered task to everything that can be done with it (stateful clients)."""
    by_id = {"task_id": "$response.body#/id"}
    return {
        operation.operation_id: {"operationId": operation.operation_id, "parameters": by_id}
        for operation in endpoints
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


_ENUM_TYPES = {str: "string", int: "integer"}


def _type_enums(node: Any) -> None:
    """Give every enum the type of its values (msgspec writes the values alone), for the
    tools that read `type` first."""
    if isinstance(node, list):
        for item in node:
            _type_enums(item)
    elif isinstance(node, dict):
        values = node.get("enum")
        kinds = {type(value) for value in values} if isinstance(values, list) else set()
        if len(kinds) == 1 and "type" not in node:
            node["type"] = _ENUM_TYPES[kinds.pop()]
        for value in node.values():
            _type_enums(value)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


# ---- routes ----
