"""Reading request bodies within the size limit, and writing JSON responses."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tasks_server.api.decoding import decode_json
from tasks_server.api.errors import ApiError, encode_json
from tasks_server.model.validation import ValidationFailed


def json_response(
    request: Request, value: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Encode `value` as JSON; `?pretty` indents it for people reading it."""
    return Response(encode_json(request, value), status, headers, media_type="application/json")


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, refused past `limit` bytes without reading further."""
    content_type = request.headers.get("content-type", "application/json")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ValidationFailed(
            {"headers.Content-Type": "Expected application/json"}, "Unsupported content type"
        )
    too_large = ApiError(
        413,
        f"The request body cannot be more than {limit} bytes",
        # the rest of the body is never read: the connection cannot carry another request
        headers={"Connection": "close"},
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return decode_json(b"".join(chunks))
