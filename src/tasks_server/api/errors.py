"""One error shape for every failure: {"action", "message"} plus "fields" for 400."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from tasks_server.api.middleware.security_headers import security_headers
from tasks_server.api.schemas import ErrorBody
from tasks_server.crypto import DecryptionError
from tasks_server.model.validation import ValidationFailed
from tasks_server.store.base import StoreUnavailable

log = logging.getLogger(__name__)

_FIX = "Do not retry without fixing the problem"
_STOP = "The request should not be repeated"
ACTIONS = {
    400: _FIX,
    401: _STOP,
    403: _STOP,
    404: _FIX,
    405: _FIX,
    409: _FIX,
    413: _FIX,
    422: _FIX,
    429: "Please wait until the server restore your connection",
    503: "Retry later: the server cannot store data right now",
}
DEFAULT_MESSAGES = {
    401: "The request did not include valid authentication",
    403: "The server did not accept valid authentication",
    404: "Not found",
    405: "Method not allowed",
    413: "The request is too large",
    429: "Too many requests in a given amount of time",
}
_INTERNAL = "Do not retry this request more than once"


class ApiError(Exception):
    """A client-visible failure with its status code."""

    def __init__(
        self, status: int, message: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message or DEFAULT_MESSAGES.get(status, "Request failed")
        self.headers = headers


_encoder = msgspec.json.Encoder()


def encode_json(request: Request, value: Any) -> bytes:
    """JSON bytes of `value`; `?pretty` indents them (4 spaces) for people reading them."""
    body = _encoder.encode(value)
    # most requests have no query string: parsing one per answer cost 1-2 % of a registration
    if request.scope.get("query_string") and "pretty" in request.query_params:
        body = msgspec.json.format(body, indent=4)
    return body


def error_response(
    request: Request,
    status: int,
    message: str,
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = ErrorBody(action=ACTIONS.get(status, _INTERNAL), message=message, fields=fields)
    return Response(encode_json(request, body), status, headers, media_type="application/json")


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status, exc.message, headers=exc.headers)


async def on_validation_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationFailed)
    return error_response(request, 400, exc.message, exc.fields)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = DEFAULT_MESSAGES.get(exc.status_code, str(exc.detail))
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and "Allow" in headers:
        # Starlette lists the methods of a set, in no order
        allowed = ", ".join(sorted(headers["Allow"].split(", ")))
        headers["Allow"] = allowed
        message = f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})"
    return error_response(request, exc.status_code, message, headers=headers)


async def on_store_unavailable(request: Request, exc: Exception) -> Response:
    log.error("Store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        request,
        503,
        f"The database cannot take this change now: {exc}",
        headers={"Retry-After": "1"},
    )


async def on_undecryptable(request: Request, exc: Exception) -> Response:
    log.error("Stored task data cannot be read on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        request,
        500,
        "This task was stored with another CIPHER_KEY: start the server with that key in "
        "CIPHER_KEY_PREVIOUS (the task is kept)",
    )


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("Unexpected error on %s %s", request.method, request.url.path)
    # answered from outside every middleware (Starlette's last resort): add their headers here
    headers = security_headers(request.scope)
    return error_response(request, 500, "Internal server error", headers=headers)


async def on_client_disconnect(request: Request, exc: Exception) -> Response:
    # the client went away mid-body: nobody reads an answer, and it is not our error
    return Response(status_code=400)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ClientDisconnect: on_client_disconnect,
    ApiError: on_api_error,
    ValidationFailed: on_validation_failed,
    HTTPException: on_http_exception,
    StoreUnavailable: on_store_unavailable,
    DecryptionError: on_undecryptable,
    Exception: on_unexpected,
}
