"""Requests per client IP: a token bucket per client, in memory, as ASGI middleware.

Each client has a bucket of MAX_THROTTLE_REQUEST requests that refills
continuously, MAX_THROTTLE_REQUEST per MAX_THROTTLE_TIME_WINDOW ms. A request
finding it empty is answered 429 with `Retry-After`; every throttled route
says where the client stands in `RateLimit-*` headers.

The bucket is kept as one number, its "theoretical arrival time" (GCRA): the
moment it will be full again. A bucket that is full again holds nothing
worth keeping, so idle clients are forgotten at no cost; memory is bounded
by the clients seen within one window, and at most MAX_CLIENTS.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasks_server.api.errors import DEFAULT_MESSAGES, error_response

log = logging.getLogger(__name__)

MAX_CLIENTS = 100_000


class Decision:
    """The verdict on one request, with what the RateLimit-* headers say."""

    __slots__ = ("allowed", "remaining", "reset_s", "retry_after_s")

    def __init__(self, allowed: bool, remaining: int, reset_s: int, retry_after_s: int) -> None:
        self.allowed = allowed
        self.remaining = remaining
        self.reset_s = reset_s  # until the bucket is full again
        self.retry_after_s = retry_after_s  # until one request is allowed (0 when allowed)


class TokenBuckets:
    """One bucket per client key; `take` spends one token or says how long to wait."""

    def __init__(
        self,
        limit: int,
        window_ms: int,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window_ms / 1000
        self.interval = self.window / limit  # one token comes back every `interval` seconds
        self.max_clients = max_clients
        self._clock = clock
        # client -> when its bucket is full again; least recently seen first
        self._full_at: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._full_at)

    def take(self, client: str) -> Decision:
        now = self._clock()
        self._forget_idle(now)
        full_at = max(self._full_at.get(client, now), now)
        after = full_at + self.interval
        if after - now > self.window + 1e-9:  # not one token left
            wait = full_at - self.window + self.interval - now
            return Decision(False, 0, _seconds(full_at - now), max(1, _seconds(wait)))
        self._full_at[client] = after
        self._full_at.move_to_end(client)
        if len(self._full_at) > self.max_clients:
            self._full_at.popitem(last=False)  # the least recently seen forgets its history
        remaining = int((self.window - (after - now)) / self.interval + 1e-9)
        return Decision(True, remaining, _seconds(after - now), 0)

    def _forget_idle(self, now: float) -> None:
        # least recently seen first: stop at the first client whose bucket is not full yet
        while self._full_at:
            client, full_at = next(iter(self._full_at.items()))
            if full_at > now:
                return
            del self._full_at[client]


def _seconds(duration: float) -> int:
    return max(0, math.ceil(duration - 1e-9))


def client_address(scope: Scope, trust_proxy_headers: bool) -> str:
    """The client's IP: the peer, or with TRUST_PROXY_HEADERS the last X-Forwarded-For entry.

    The last entry is the one the proxy in front of us added; entries before
    it were written by the client and prove nothing.
    """
    if trust_proxy_headers:
        forwarded = [
            value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name == b"x-forwarded-for"
        ]
        if forwarded:
            last = ",".join(forwarded).rsplit(",", 1)[-1].strip()
            try:
                return str(ipaddress.ip_address(last))
            except ValueError:
                pass  # not an address: fall back to the peer
    client = scope.get("client")
    return client[0] if client else "unknown"


class Throttle:
    """ASGI middleware: 429 once a client's bucket is empty; RateLimit-* headers always."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        window_ms: int,
        trust_proxy_headers: bool = False,
        exempt: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.exempt = exempt  # path prefixes never throttled
        self.buckets = TokenBuckets(limit, window_ms)
        self.trust_proxy_headers = trust_proxy_headers
        self.policy = f"{limit};w={max(1, math.ceil(window_ms / 1000))}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        client = client_address(scope, self.trust_proxy_headers)
        decision = self.buckets.take(client)
        headers = {
            "RateLimit-Policy": self.policy,
            "RateLimit-Limit": str(self.buckets.limit),
            "RateLimit-Remaining": str(decision.remaining),
            "RateLimit-Reset": str(decision.reset_s),
        }
        if not decision.allowed:
            request = Request(scope)
            log.warning(
                "Throttled %s %s from %s (%s)",
                request.method,
                path,
                client,
                request.headers.get("user-agent", "no User-Agent"),
            )
            headers["Retry-After"] = str(decision.retry_after_s)
            response = error_response(request, 429, DEFAULT_MESSAGES[429], headers=headers)
            await response(scope, receive, send)
            return
        raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *raw]
            await send(message)

        await self.app(scope, receive, send_with_headers)
