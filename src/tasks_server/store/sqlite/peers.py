"""Signals between the server processes of one SQLite file (CLUSTER_MODE's workers, or
several `serve` on one file): each process listens on a Unix datagram socket in a private
directory named after the database, and a signal for the others is one datagram each.

A datagram can be dropped (a peer too busy to read): the schedulers' poll of due times
is the safety net for wake-ups, and a lost abort only lets a request finish whose outcome
counts for nothing (its lease was dropped).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from tasks_server.store.base import TaskSignal
from tasks_server.store.signals import decode_signal, encode_signal

log = logging.getLogger(__name__)

RELIST_S = 0.5  # a process that started since is told within this long
MAX_DATAGRAM = 512


class Peers:
    """This process's socket, and the sockets of the others on the same database."""

    def __init__(self, database: str, heard: Callable[[TaskSignal], None]) -> None:
        digest = hashlib.sha256(os.path.realpath(database).encode()).hexdigest()[:16]
        self._dir = Path(tempfile.gettempdir()) / f"tasks-server-{digest}"
        self._heard = heard
        self._sock: socket.socket | None = None
        self._path = ""
        self._peers: list[str] = []
        self._listed_at = 0.0

    def open(self) -> None:
        """Listen; without a private directory of our own (another user's), signals stay
        in this process and the others find changes by their poll."""
        self._dir.mkdir(mode=0o700, exist_ok=True)
        if self._dir.stat().st_uid != os.getuid():
            log.warning("%s belongs to another user: no signals between processes", self._dir)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        self._path = str(self._dir / f"{os.getpid()}-{secrets.token_hex(4)}")
        sock.bind(self._path)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        if self._sock is None:
            return
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with suppress(FileNotFoundError):
            os.unlink(self._path)

    def send(self, signal: TaskSignal) -> None:
        """Tell every other process on this database, without waiting for any."""
        if self._sock is None:
            return
        payload = encode_signal(signal).encode()
        for peer in self._current():
            try:
                self._sock.sendto(payload, peer)
            except BlockingIOError:
                pass  # its queue is full: it finds the change by its poll
            except (ConnectionRefusedError, FileNotFoundError):
                # a process that died without closing: nobody will read its socket again
                with suppress(FileNotFoundError):
                    os.unlink(peer)
                self._listed_at = 0.0

    def _current(self) -> list[str]:
        now = time.monotonic()
        if now - self._listed_at > RELIST_S:
            names = os.listdir(self._dir)
            self._peers = [str(self._dir / n) for n in names if str(self._dir / n) != self._path]
            self._listed_at = now
        return self._peers

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            self._heard(decode_signal(data.decode()))
