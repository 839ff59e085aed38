"""Real HTTP targets on 127.0.0.1 (or ::1) that record every arrival and answer as scripted.

`Target` speaks HTTP/1.x, optionally over TLS (`ssl_context`, e.g. from
`tls_context(trustme.CA())`); `H2Target` speaks HTTP/2 only, over TLS with
ALPN h2 or in clear with prior knowledge (h2c). Both record arrivals the same
way and share the scripting API: `script` (fixed replies per path) and
`respond` (a function of the arrival, for challenges such as digest auth).
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import trustme


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
    # every header line as received, in order, names as sent (duplicates kept)
    header_list: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def header_values(self, name: str) -> list[str]:
        """Every value sent for this header name (case-insensitive), in order."""
        return [v for k, v in self.header_list if k.lower() == name.lower()]


Responder = Callable[[Arrival], Reply]


class _Recorder:
    """Arrivals, scripts and responders, shared by the HTTP/1.x and HTTP/2 targets."""

    def __init__(self, host: str, ssl_context: ssl.SSLContext | None) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.arrivals: list[Arrival] = []
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._default: dict[str, Reply] = {}
        self._responders: dict[str, Responder] = {}
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        raise NotImplementedError

    def url(self, path: str = "/cb") -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{path}"

    def script(self, path: str, *replies: Reply, always: Reply | None = None) -> None:
        """Answer the next requests to `path` with `replies` in order, then `always`."""
        with self._lock:
            self._scripts[path].extend(replies)
            if always is not None:
                self._default[path] = always

    def respond(self, path: str, responder: Responder) -> None:
        """Answer requests to `path` (once its scripted replies are used) with `responder`."""
        with self._lock:
            self._responders[path] = responder

    def arrivals_at(self, path: str) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if a.path.split("?")[0] == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 10.0) -> list[Arrival]:
        """Wait until `count` requests (to `path`, if given) arrived; return them."""
        deadline = time.monotonic() + timeout
        while True:
            if path:
                found = self.arrivals_at(path)
            else:
                with self._lock:
                    found = list(self.arrivals)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} arrivals at {path}, got {len(found)}")
            time.sleep(0.005)

    def _next_reply(self, path: str, arrival: Arrival | None = None) -> Reply:
        with self._lock:
            queue = self._scripts.get(path)
            if queue:
                return queue.popleft()
            if path in self._default:
                return self._default[path]
            responder = self._responders.get(path)
        if responder is not None and arrival is not None:
            return responder(arrival)
        if path.endswith("/error"):
            return Reply(404, b"not found")
        return Reply()

    def _record(self, arrival: Arrival) -> None:
        with self._lock:
            self.arrivals.append(arrival)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that give up (timeouts, failed TLS handshakes) are expected here


class _QuietServer6(_QuietServer):
    address_family = socket.AF_INET6


class Target(_Recorder):
    """A threaded HTTP/1.1 server. Script replies per path; read `arrivals`.

    `host` may be an IPv6 address such as "::1"; `ssl_context` makes it HTTPS.
    """

    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(host, ssl_context)
        server_class = _QuietServer6 if ":" in host else _QuietServer
        self._server = server_class((host, 0), self._handler_class())
        if ssl_context is not None:
            # the handshake runs in the request's thread (Handler.setup), not in accept()
            self._server.socket = ssl_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(10)
                    self.request.do_handshake()
                    self.request.settimeout(None)
                super().setup()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                at = time.time() * 1000
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path
                arrival = Arrival(
                    at_ms=at,
                    method=self.command,
                    path=path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    protocol=self.request_version,
                    header_list=tuple(self.headers.items()),
                )
                target._record(arrival)
                reply = target._next_reply(path.split("?")[0], arrival)
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


class H2Target(_Recorder):
    """An HTTP/2-only server (the `h2` package): TLS with ALPN h2, or h2c prior knowledge.

    Arrivals have protocol "HTTP/2". Without `ssl_context` it only understands
    clients that start with the HTTP/2 preface (prior knowledge).
    """

    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(host, ssl_context)
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["h2"])
        target = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                target._serve_connection(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server((host, 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve_connection(self, raw: socket.socket) -> None:
        import h2.config
        import h2.connection
        import h2.events

        sock: socket.socket = raw
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(raw, server_side=True)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        streams: dict[int, tuple[float, list[tuple[str, str]], bytearray]] = {}
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    pairs = [(str(k), str(v)) for k, v in event.headers or []]
                    streams[event.stream_id] = (time.time() * 1000, pairs, bytearray())
                elif isinstance(event, h2.events.DataReceived):
                    streams[event.stream_id][2].extend(event.data or b"")
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    at, pairs, body = streams.pop(event.stream_id)
                    self._answer(conn, event.stream_id, at, pairs, bytes(body))
                elif isinstance(event, h2.events.ConnectionTerminated):
                    sock.sendall(conn.data_to_send())
                    return
            sock.sendall(conn.data_to_send())

    def _answer(
        self, conn: Any, stream_id: int, at: float, pairs: list[tuple[str, str]], body: bytes
    ) -> None:
        pseudo = {k: v for k, v in pairs if k.startswith(":")}
        regular = tuple((k, v) for k, v in pairs if not k.startswith(":"))
        path = pseudo.get(":path", "/")
        arrival = Arrival(
            at_ms=at,
            method=pseudo.get(":method", ""),
            path=path,
            headers={k.lower(): v for k, v in regular},
            body=body,
            protocol="HTTP/2",
            header_list=regular,
        )
        self._record(arrival)
        reply = self._next_reply(path.split("?")[0], arrival)
        if reply.delay:
            time.sleep(reply.delay)
        headers = [(":status", str(reply.status)), ("content-length", str(len(reply.body)))]
        headers += [(k.lower(), v) for k, v in reply.headers.items()]
        conn.send_headers(stream_id, headers)
        conn.send_data(stream_id, reply.body, end_stream=True)


def tls_context(ca: trustme.CA, *hosts: str) -> ssl.SSLContext:
    """A server TLS context with a certificate from `ca` for `hosts` (default: loopback)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(hosts or ("127.0.0.1", "::1", "localhost"))).configure_cert(context)
    return context


def closed_port(host: str = "127.0.0.1") -> int:
    """A port on `host` where nothing listens (bound, then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


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
