"""Real HTTP targets on 127.0.0.1 (or ::1) that record every arrival and answer as scripted.

`Target` speaks HTTP/1.x, optionally over TLS (`ssl_context`, e.g. from
`tls_context(trustme.CA())`); `H2Target` speaks HTTP/2 only, over TLS with
ALPN h2 or in clear with prior knowledge (h2c). Both record arrivals the same
way and share the scripting API: `script` (fixed replies per path) and
`respond` (a function of the arrival, for challenges such as digest auth).
"""

from __future__ import annotations

import base64
import http.client
import select
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
from urllib.parse import parse_qs, urlsplit

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
    client_port: int = 0  # the sender's port: one per connection
    peer_cert: dict[str, Any] | None = None  # the client certificate (TLS, when one was asked)
    session_reused: bool | None = None  # TLS: the handshake resumed an earlier session
    proxy_line: str | None = None  # the PROXY protocol v1 line that opened the connection

    def peer_subject(self, key: str = "commonName") -> str | None:
        """A field of the client certificate's subject, e.g. its commonName."""
        for rdn in (self.peer_cert or {}).get("subject", ()):
            for name, value in rdn:
                if name == key:
                    return str(value)
        return None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def header_values(self, name: str) -> list[str]:
        """Every value sent for this header name (case-insensitive), in order."""
        return [v for k, v in self.header_list if k.lower() == name.lower()]


Responder = Callable[[Arrival], Reply]


def _serve_in_thread(server: socketserver.BaseServer) -> None:
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()


def _port_of(server: socketserver.BaseServer) -> int:
    return int(server.server_address[1])


def _close(server: socketserver.BaseServer) -> None:
    server.shutdown()
    server.server_close()


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

    def _take(self, at: float, pairs: list[tuple[str, str]], body: bytes, protocol: str) -> Reply:
        """Record an HTTP/2 or HTTP/3 request from its header pairs; the reply to send."""
        pseudo = {k: v for k, v in pairs if k.startswith(":")}
        regular = tuple((k, v) for k, v in pairs if not k.startswith(":"))
        path = pseudo.get(":path", "/")
        arrival = Arrival(
            at_ms=at,
            method=pseudo.get(":method", ""),
            path=path,
            headers={k.lower(): v for k, v in regular},
            body=body,
            protocol=protocol,
            header_list=regular,
        )
        self._record(arrival)
        return self._next_reply(path.split("?")[0], arrival)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a claimed batch opens many connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that give up (timeouts, failed TLS handshakes) are expected here


class _QuietServer6(_QuietServer):
    address_family = socket.AF_INET6


class Target(_Recorder):
    """A threaded HTTP/1.1 server. Script replies per path; read `arrivals`.

    `host` may be an IPv6 address such as "::1"; `ssl_context` makes it HTTPS
    (with `verify_mode` CERT_REQUIRED it asks for a client certificate);
    `proxy_protocol` expects each connection to open with a PROXY v1 line.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
        proxy_protocol: bool = False,
    ) -> None:
        super().__init__(host, ssl_context)
        self.proxy_protocol = proxy_protocol
        server_class = _QuietServer6 if ":" in host else _QuietServer
        self._server = server_class((host, 0), self._handler_class())
        if ssl_context is not None:
            # the handshake runs in the request's thread (Handler.setup), not in accept()
            self._server.socket = ssl_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        _serve_in_thread(self._server)

    @property
    def port(self) -> int:
        return _port_of(self._server)

    def close(self) -> None:
        _close(self._server)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            proxy_line: str | None = None

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(10)
                    self.request.do_handshake()
                    self.request.settimeout(None)
                super().setup()
                if target.proxy_protocol:
                    self.proxy_line = self.rfile.readline(256).decode("ascii").rstrip("\r\n")

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
                    client_port=self.client_address[1],
                    proxy_line=self.proxy_line,
                    **_tls_facts(self.request),
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


def _tls_facts(sock: Any) -> dict[str, Any]:
    if not isinstance(sock, ssl.SSLSocket):
        return {}
    return {"peer_cert": sock.getpeercert() or None, "session_reused": sock.session_reused}


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
        _serve_in_thread(self._server)

    @property
    def port(self) -> int:
        return _port_of(self._server)

    def close(self) -> None:
        _close(self._server)

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
        reply = self._take(at, pairs, body, "HTTP/2")
        if reply.delay:
            time.sleep(reply.delay)
        headers = [(":status", str(reply.status)), ("content-length", str(len(reply.body)))]
        headers += [(k.lower(), v) for k, v in reply.headers.items()]
        conn.send_headers(stream_id, headers)
        conn.send_data(stream_id, reply.body, end_stream=True)


class H3Target(_Recorder):
    """An HTTP/3 server over QUIC (aioquic) on a UDP port of 127.0.0.1.

    Its certificate comes from `ca`. Nothing listens on the TCP port of the
    same number, so a request that arrives came over HTTP/3 (protocol "HTTP/3").
    """

    def __init__(self, ca: trustme.CA, host: str = "127.0.0.1") -> None:
        import asyncio

        from aioquic.asyncio import serve
        from aioquic.h3.connection import H3_ALPN
        from aioquic.quic.configuration import QuicConfiguration
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        super().__init__(host, None)
        leaf = ca.issue_cert(host)
        configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        configuration.certificate = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
        configuration.private_key = load_pem_private_key(leaf.private_key_pem.bytes(), None)
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            serve(host, 0, configuration=configuration, create_protocol=self._protocol_class())
        )
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server._transport.get_extra_info("sockname")[1])

    def url(self, path: str = "/cb") -> str:
        return f"https://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _protocol_class(self) -> Any:
        from aioquic.asyncio.protocol import QuicConnectionProtocol
        from aioquic.h3.connection import H3Connection
        from aioquic.h3.events import DataReceived, HeadersReceived
        from aioquic.quic.events import ProtocolNegotiated

        target = self

        class Protocol(QuicConnectionProtocol):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.h3: Any = None
                self.streams: dict[int, tuple[float, list[tuple[str, str]], bytearray]] = {}

            def quic_event_received(self, event: Any) -> None:
                if isinstance(event, ProtocolNegotiated):
                    self.h3 = H3Connection(self._quic)
                if self.h3 is None:
                    return
                for h3_event in self.h3.handle_event(event):
                    if isinstance(h3_event, HeadersReceived):
                        pairs = [(k.decode(), v.decode()) for k, v in h3_event.headers]
                        self.streams[h3_event.stream_id] = (time.time() * 1000, pairs, bytearray())
                    elif isinstance(h3_event, DataReceived):
                        self.streams[h3_event.stream_id][2].extend(h3_event.data)
                    if getattr(h3_event, "stream_ended", False):
                        self._answer(h3_event.stream_id)

            def _answer(self, stream_id: int) -> None:
                at, pairs, body = self.streams.pop(stream_id)
                reply = target._take(at, pairs, bytes(body), "HTTP/3")
                headers = [(b":status", str(reply.status).encode())]
                headers.append((b"content-length", str(len(reply.body)).encode()))
                headers += [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
                self.h3.send_headers(stream_id, headers)
                self.h3.send_data(stream_id, reply.body, end_stream=True)
                self.transmit()

        return Protocol


@dataclass(frozen=True)
class ProxyArrival:
    """One request a ForwardProxy was asked to relay."""

    method: str
    target: str  # the absolute URL, or host:port for CONNECT
    version: str  # e.g. HTTP/1.1
    headers: dict[str, str]  # lower-cased names
    client_port: int

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


ProxyChallenge = Callable[[ProxyArrival], Reply | None]
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding"})


class ForwardProxy:
    """An HTTP forward proxy on 127.0.0.1 that records what it is asked.

    Absolute-form requests are relayed to their origin; CONNECT opens a tunnel
    (so an https target is reached through it). `challenge` may answer a
    request itself (e.g. 407 until the right Proxy-Authorization comes).
    `ssl_context` makes it an HTTPS proxy.
    """

    def __init__(
        self, ssl_context: ssl.SSLContext | None = None, challenge: ProxyChallenge | None = None
    ) -> None:
        self.ssl_context = ssl_context
        self.challenge = challenge
        self.arrivals: list[ProxyArrival] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def setup(self) -> None:
                if proxy.ssl_context is not None:
                    self.request = proxy.ssl_context.wrap_socket(self.request, server_side=True)
                    self.connection = self.request
                super().setup()

            def handle(self) -> None:
                while proxy._serve_one(self):
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        _serve_in_thread(self._server)

    @property
    def port(self) -> int:
        return _port_of(self._server)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ProxyArrival]:
        def enough() -> list[ProxyArrival] | None:
            with self._lock:
                return list(self.arrivals) if len(self.arrivals) >= count else None

        found: list[ProxyArrival] = wait_until(enough, timeout=timeout)
        return found

    def close(self) -> None:
        _close(self._server)

    def _serve_one(self, handler: socketserver.StreamRequestHandler) -> bool:
        """Serve one request on the connection; False when the connection is done."""
        line = handler.rfile.readline(65537).decode("latin-1")
        if not line.strip():
            return False
        method, target, version = line.split()
        headers: dict[str, str] = {}
        while (header := handler.rfile.readline(65537).decode("latin-1").strip()) != "":
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        arrival = ProxyArrival(method, target, version, headers, handler.client_address[1])
        with self._lock:
            self.arrivals.append(arrival)
        reply = self.challenge(arrival) if self.challenge else None
        if reply is not None:
            _write_reply(handler.wfile, reply.status, reply.headers, reply.body)
            return True
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
            handler.wfile.write(f"{version} 200 Connection established\r\n\r\n".encode())
            handler.wfile.flush()
            _pipe(handler.connection, upstream)
            upstream.close()
            return False
        parts = urlsplit(target)
        origin = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=10)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        relayed = {
            k: v for k, v in headers.items() if k not in _HOP_BY_HOP and not k.startswith("proxy-")
        }
        origin.request(method, path or "/", body or None, relayed)
        answer = origin.getresponse()
        content = answer.read()
        kept = {
            k: v
            for k, v in answer.getheaders()
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
        }
        origin.close()
        _write_reply(handler.wfile, answer.status, kept, content)
        return True


def _write_reply(wfile: Any, status: int, headers: dict[str, str], body: bytes) -> None:
    lines = [f"HTTP/1.1 {status} {http.client.responses.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    wfile.flush()


def _pipe(one: socket.socket, other: socket.socket) -> None:
    """Copy bytes both ways until either side closes (TLS-aware: pending bytes first)."""
    sockets = [one, other]
    while True:
        ready = [s for s in sockets if isinstance(s, ssl.SSLSocket) and s.pending()]
        if not ready:
            ready, _, _ = select.select(sockets, [], [], 10)
            if not ready:
                return
        for sock in ready:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            (other if sock is one else one).sendall(data)


def dns_answer(query: bytes, records: dict[str, list[str]]) -> bytes:
    """The DNS reply (wire format) to `query`: A/AAAA from `records`, else NXDOMAIN."""
    from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord

    request = DNSRecord.parse(query)
    reply = request.reply()
    name = str(request.q.qname).rstrip(".").lower()
    wanted = QTYPE[request.q.qtype]
    if name not in records:
        reply.header.rcode = RCODE.NXDOMAIN
    for address in records.get(name, ()):
        if wanted == "AAAA" and ":" in address:
            reply.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(address), ttl=60))
        elif wanted == "A" and ":" not in address:
            reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=60))
    packed: bytes = reply.pack()
    return packed


def query_name(query: bytes) -> str:
    from dnslib import DNSRecord

    return str(DNSRecord.parse(query).q.qname).rstrip(".")


class DnsServer:
    """A UDP DNS server on 127.0.0.1 (dnslib packets) answering from `records`.

    `address` is its "127.0.0.1:port"; `queries` the names it was asked.
    """

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.queries: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self._open = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        while self._open:
            try:
                query, sender = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.queries.append(query_name(query))
            self._sock.sendto(dns_answer(query, self.records), sender)

    def close(self) -> None:
        self._open = False
        self._thread.join(timeout=5)
        self._sock.close()


def doh_responder(records: dict[str, list[str]], queries: list[str]) -> Responder:
    """An RFC 8484 DNS-over-HTTPS endpoint for a Target: POST or GET ?dns=, dns-message."""

    def respond(arrival: Arrival) -> Reply:
        if arrival.method == "POST":
            query = arrival.body
        else:
            encoded = parse_qs(urlsplit(arrival.path).query)["dns"][0]
            query = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        queries.append(query_name(query))
        answer = dns_answer(query, records)
        return Reply(200, answer, {"Content-Type": "application/dns-message"})

    return respond


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


class HoldingTarget:
    """Takes any number of connections, reads each request and never answers; notes when
    each task's request arrived and when its client hung up (by X-Tasks-Queue-Id)."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self._sock.getsockname()[1]
        self.received: dict[str, float] = {}  # task id -> time.monotonic() of arrival
        self.hung_up: dict[str, float] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/hold") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        with conn:
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                task_id = ""
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "x-tasks-queue-id":
                        task_id = value.strip()
                with self._lock:
                    self.received[task_id] = time.monotonic()
                while conn.recv(65536):
                    pass
                with self._lock:
                    self.hung_up[task_id] = time.monotonic()
            except OSError:
                pass
