"""Real HTTP targets on 127.0.0.1 that record every arrival and answer as scripted."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, body, extra headers, and a delay before answering."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Arrival:
    at_ms: float  # wall-clock ms when the request line was read
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-cased names
    body: bytes
    protocol: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Target:
    """A threaded HTTP/1.1 server. Script replies per path; read `arrivals`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.arrivals: list[Arrival] = []
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._default: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/cb") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply, always: Reply | None = None) -> None:
        """Answer the next requests to `path` with `replies` in order, then `always`."""
        with self._lock:
            self._scripts[path].extend(replies)
            if always is not None:
                self._default[path] = always

    def arrivals_at(self, path: str) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if a.path.split("?")[0] == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 10.0) -> list[Arrival]:
        """Wait until `count` requests (to `path`, if given) arrived; return them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.arrivals_at(path) if path else list(self.arrivals)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} arrivals at {path}, got {len(found)}")
            time.sleep(0.005)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_reply(self, path: str) -> Reply:
        with self._lock:
            queue = self._scripts.get(path)
            if queue:
                return queue.popleft()
            if path in self._default:
                return self._default[path]
        if path.endswith("/error"):
            return Reply(404, b"not found")
        return Reply()

    def _record(self, arrival: Arrival) -> None:
        with self._lock:
            self.arrivals.append(arrival)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                at = time.time() * 1000
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path
                target._record(
                    Arrival(
                        at_ms=at,
                        method=self.command,
                        path=path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                        protocol=self.request_version,
                    )
                )
                reply = target._next_reply(path.split("?")[0])
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        time.sleep(interval)
