"""The original's security headers on every response; HSTS only over TLS."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"x-xss-protection", b"0"),  # the old XSS auditors did more harm than good
)
# 180 days; sent only over TLS: over plain HTTP a browser ignores it and it only misleads
HSTS = (b"strict-transport-security", b"max-age=15552000; includeSubDomains")


def security_headers(scope: Scope) -> dict[str, str]:
    """The headers as a dict, for a response built outside the middleware (a 500)."""
    extra = SECURITY_HEADERS + ((HSTS,) if scope.get("scheme") == "https" else ())
    return {name.decode(): value.decode() for name, value in extra}


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS (and HSTS on https) to every HTTP response.

    It sits outside everything else, so that errors, 404s, 429s and even a 500
    carry the headers too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = SECURITY_HEADERS + ((HSTS,) if scope.get("scheme") == "https" else ())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
