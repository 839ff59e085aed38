"""Targets that misbehave (never answer, reset, trickle, 50 MB, not HTTP): each
outcome is recorded and the API stays responsive meanwhile."""

from __future__ import annotations

import signal
import socket
import socketserver
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.served import Served

BIG = 50 * 1024 * 1024
EACH = 6  # tasks per kind of bad target


class BadTarget:
    """A raw TCP server on 127.0.0.1 that misbehaves according to the request path."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        bad = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                bad._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the server under test gives up on us: expected

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def count(self, path: str) -> int:
        with self._lock:
            return self.paths.count(path)

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, sock: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                return
            head += data
        path = head.split(b" ", 2)[1].decode()
        with self._lock:
            self.paths.append(path)
        if path == "/hang":
            self._stop.wait(30)  # never answers; the server's timeout ends it
        elif path == "/reset":
            # SO_LINGER 0: close sends a TCP RST instead of a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # before socketserver's shutdown(SHUT_WR), which would send a FIN
        elif path == "/trickle":
            reply = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nslow-bytes"
            for byte in reply:
                if self._stop.wait(0.02):
                    return
                sock.sendall(bytes([byte]))
        elif path == "/big":
            sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n".encode())
            chunk = b"x" * (1024 * 1024)
            for _ in range(BIG // len(chunk)):
                sock.sendall(chunk)
        elif path == "/garbage":
            sock.sendall(b"\x00\xffthis is not HTTP at all\r\n\r\n")


@pytest.fixture
def bad_target() -> Iterator[BadTarget]:
    server = BadTarget()
    yield server
    server.close()


def test_bad_targets_are_recorded_and_the_api_stays_fast(
    serve: Callable[..., Served], bad_target: BadTarget
) -> None:
    served = serve(MAX_SIZE_DATA_RESPONSE="65536")
    owner = served.owner("bad-targets-owner")
    probe = served.task(owner, bad_target.url("/garbage"), executionDelay=3_600_000)

    kinds = ("/hang", "/reset", "/trickle", "/big", "/garbage")
    tasks: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for kind in kinds:
        for _ in range(EACH):
            tasks[kind].append(
                served.task(
                    owner,
                    bad_target.url(kind),
                    executionDelay=0,
                    timeout=2000,
                    traceResponseData=True,
                )
            )

    # API latency while the bad requests are in flight, on a fresh client (own connection)
    latencies: list[float] = []
    with httpx.Client(base_url=str(served.http.base_url), timeout=10) as client:
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            asked = time.perf_counter()
            reply = client.get(f"/v1/queues/{probe['id']}", headers=owner.headers)
            latencies.append((time.perf_counter() - asked) * 1000)
            assert reply.status_code == 200
            time.sleep(0.005)
    for kind in kinds:
        assert bad_target.count(kind) >= EACH, (kind, bad_target.paths)

    def final(task: dict[str, Any]) -> dict[str, Any]:
        return served.wait(owner, task["id"], lambda t: t["state"] != "RUNNING", 15)

    outcomes = {kind: [final(task) for task in tasks[kind]] for kind in kinds}
    for task in outcomes["/hang"]:
        assert (task["state"], task["statusCode"]) == ("ERROR", 408), task
        assert task["error"], task
    for kind, words in (("/reset", "reset"), ("/garbage", "HTTP")):
        for task in outcomes[kind]:
            assert (task["state"], task["statusCode"]) == ("ERROR", 0), task
            assert words in task["error"], task
    for task in outcomes["/trickle"]:
        assert (task["state"], task["statusCode"]) == ("SUCCESS", 200), task
    for task in outcomes["/big"]:
        assert (task["state"], task["statusCode"]) == ("SUCCESS", 200), task
        assert task["error"] is None, task
        # stored truncated to MAX_SIZE_DATA_RESPONSE, not 50 MB
        assert len(str(task["response"])) < 2 * 65536 + 1024

    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"bad targets: {len(latencies)} API calls meanwhile, median "
        f"{statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms; "
        + ", ".join(
            f"{k} -> {outcomes[k][0]['statusCode']} {outcomes[k][0]['error']!r}" for k in kinds
        )
    )
    assert p99 < 100, f"API p99 {p99:.1f} ms during bad targets"
    assert served.http.get("/status").status_code == 200
    assert served.stop(signal.SIGTERM) == 0
