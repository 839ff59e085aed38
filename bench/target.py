"""The fast local target: nginx answering `return 200`, logging each arrival's time.

Falls back to a built-in asyncio target (same log format) when nginx cannot be
installed. Log lines: `<msec> <uri> <X-Tasks-Retry-Count> <X-Tasks-Estimate-Next-Retry-At>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    log_format arrivals
        '$msec $request_uri $http_x_tasks_retry_count $http_x_tasks_estimate_next_retry_at';
    client_body_temp_path {dir}/body;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location /t/ {{
            access_log {dir}/arrivals.log arrivals buffer=256k flush=1s;
            return 200 "ok";
        }}
        location /fail/ {{
            access_log {dir}/arrivals.log arrivals buffer=256k flush=1s;
            if ($http_x_tasks_retry_count = "3") {{ return 200 "ok"; }}
            return 500 "fail";
        }}
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_nginx() -> str | None:
    """The nginx binary, installing Debian's nginx-light if needed; None if impossible."""
    found = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    if found:
        return str(found)
    if shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light"], capture_output=True)
        if Path("/usr/sbin/nginx").exists():
            return "/usr/sbin/nginx"
    return None


class Target:
    """A running target; `arrivals()` reads what it logged since the last `reset()`."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-target-"))
        self.port = free_port()
        self.log = self.dir / "arrivals.log"
        self._counting = ("", 0, 0)  # (prefix, bytes read, arrivals seen)
        nginx = ensure_nginx()
        if nginx:
            self.kind = "nginx"
            (self.dir / "nginx.conf").write_text(NGINX_CONF.format(dir=self.dir, port=self.port))
            self._process = subprocess.Popen(
                [nginx, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        else:
            self.kind = "built-in (nginx not installable)"
            self._process = subprocess.Popen(
                [sys.executable, __file__, str(self.port), str(self.log)],
                stdout=subprocess.DEVNULL,
            )
        _wait_port(self.port)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reset(self) -> None:
        self.flush()
        self.log.write_text("")
        self.flush()
        self._counting = ("", 0, 0)  # (prefix, bytes read, arrivals seen)

    def count(self, prefix: str) -> int:
        """How many arrivals under `prefix` are logged so far.

        Cheap enough to poll beside a running benchmark: it reads only what was
        logged since the last call, parses nothing and does not make nginx flush
        (it writes its buffer at least every second).
        """
        if self._counting[0] != prefix:
            self._counting = (prefix, 0, 0)
        _, read_to, counted = self._counting
        if not self.log.exists():
            return 0
        with self.log.open("rb") as log:
            log.seek(read_to)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        counted += complete.count(b" " + prefix.encode())
        self._counting = (prefix, read_to + len(complete), counted)
        return counted

    def flush(self) -> None:
        # nginx writes its buffered log on reopen (SIGUSR1)
        if self.kind == "nginx":
            self._process.send_signal(signal.SIGUSR1)
            time.sleep(0.2)

    def arrivals(self) -> list[tuple[float, str, str, str]]:
        """(arrival ms, uri, retry count, planned retry ms) for each logged request."""
        self.flush()
        rows = []
        if not self.log.exists():
            return rows
        for line in self.log.read_text().splitlines():
            parts = line.split(" ")
            if len(parts) >= 4:
                rows.append((float(parts[0]) * 1000, parts[1], parts[2], parts[3]))
        return rows

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"target did not listen on {port}")


# ---- built-in fallback target (run as a script) ----


async def _serve(port: int, log_path: str) -> None:
    log = open(log_path, "a", buffering=1 << 16)  # noqa: SIM115

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                at = time.time()
                lines = head.decode("latin-1").split("\r\n")
                uri = lines[0].split(" ")[1]
                headers = {
                    k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
                }
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                count = headers.get("x-tasks-retry-count", "-")
                planned = headers.get("x-tasks-estimate-next-retry-at", "-")
                if uri.startswith(("/t/", "/fail/")):
                    log.write(f"{at:.3f} {uri} {count} {planned}\n")
                ok = not uri.startswith("/fail/") or count == "3"
                status = b"200 OK" if ok else b"500 Internal Server Error"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, server.close)
    loop.add_signal_handler(signal.SIGUSR1, log.flush)
    async with server:
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve_forever()
    log.close()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), sys.argv[2]))
