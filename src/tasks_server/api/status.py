"""The service itself: is it answering."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response


async def status(request: Request) -> Response:
    return PlainTextResponse("OK")
