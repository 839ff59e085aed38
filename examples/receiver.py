"""A tiny receiver for the tasks of examples/schedule.py: prints every request it gets
and answers 200. Only the standard library.

    python examples/receiver.py [port]      # port 8000 unless given (or PORT)
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class PrintingHandler(BaseHTTPRequestHandler):
    def _receive(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode(errors="replace")
        task = self.headers.get("X-Tasks-Queue-Id", "-")
        # flushed at once: the output may be a pipe (a test reads it)
        print(f"{self.command} {self.path} task={task} body={body}", flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "8")
        self.end_headers()
        self.wfile.write(b"received")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _receive

    def log_message(self, format: str, *args: object) -> None:
        pass  # _receive prints what matters


def main() -> None:
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), PrintingHandler)
    print(f"Receiving on http://127.0.0.1:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
