"""CLUSTER_MODE: several server processes on one listening socket and one database.

The supervisor (the process `serve` started) checks the settings, prepares the
database and the key once, binds the socket, then runs MAX_INSTANCES workers:
each is a whole server (API and scheduler) on the shared socket. The kernel
spreads the connections among them; the claims in the database keep any task
from being sent by two. A worker that dies is started again (its siblings
release what it had in flight); SIGTERM or SIGINT stops every worker
gracefully, each finishing its requests in flight as a single server does.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from tasks_server.config import Settings
from tasks_server.metrics import MULTIPROCESS_DIR as METRICS_DIR

log = logging.getLogger(__name__)

Worker = Callable[[Settings, socket.socket], None]
LISTEN_BACKLOG = 2048  # uvicorn's own default
RESTART_DELAY_S = 1.0  # before a dead worker is started again
STARTUP_FAILURE = 3  # uvicorn's exit status when the app cannot start: not worth a restart
STOP_MARGIN_S = 15.0  # beyond the shutdown grace, before a worker that hangs is killed
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def bind_socket(settings: Settings) -> socket.socket:
    """The listening socket every worker accepts on."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError:
        sock.close()
        raise
    sock.listen(LISTEN_BACKLOG)
    return sock


class Supervisor:
    """Runs `settings.instances` workers until a stop signal, restarting any that dies."""

    def __init__(self, settings: Settings, worker: Worker, sock: socket.socket) -> None:
        self._settings = settings
        self._worker = worker
        self._sock = sock
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[SpawnProcess] = []
        self._stopping = False
        self._status = 0

    def run(self) -> int:
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop_signal, self._on_stop_signal)
        # the workers' metrics, in files one scrape of any worker reads together
        metrics_dir = os.environ.get(METRICS_DIR) or tempfile.mkdtemp(prefix="tasks-metrics-")
        own_dir = METRICS_DIR not in os.environ
        os.environ[METRICS_DIR] = metrics_dir  # spawned workers inherit it
        try:
            log.info("Cluster mode: starting %d workers", self._settings.instances)
            self._workers = [self._start() for _ in range(self._settings.instances)]
            while not self._stopping:
                time.sleep(0.2)
                self._replace_dead_workers()
            self._stop_workers()
        finally:
            self._sock.close()
            if own_dir:
                del os.environ[METRICS_DIR]
                shutil.rmtree(metrics_dir, ignore_errors=True)
        return self._status

    def _start(self) -> SpawnProcess:
        process = self._context.Process(
            target=run_worker,
            args=(self._worker, self._settings, self._sock, os.getpid()),
            name="tasks-server-worker",
        )
        process.start()
        return process

    def _replace_dead_workers(self) -> None:
        for index, process in enumerate(self._workers):
            if process.is_alive() or self._stopping:
                continue
            if process.exitcode == STARTUP_FAILURE:
                log.error("A worker could not start (see above); stopping the cluster")
                self._stopping, self._status = True, STARTUP_FAILURE
                return
            if process.pid is not None:
                # its gauges go; its counters still count
                mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
            log.error(
                "Worker %d exited (status %s); starting another in %.0f s",
                process.pid,
                process.exitcode,
                RESTART_DELAY_S,
            )
            time.sleep(RESTART_DELAY_S)
            if not self._stopping:
                self._workers[index] = self._start()

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _stop_workers(self) -> None:
        for process in self._workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._settings.shutdown_grace_ms / 1000 + STOP_MARGIN_S
        for process in self._workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("Worker %d did not stop in time; killing it", process.pid)
                process.kill()
                process.join()


def run_worker(
    worker: Worker, settings: Settings, sock: socket.socket, supervisor_pid: int
) -> None:
    """A worker process's main: one whole server on the shared socket."""
    # the supervisor alone takes the terminal's Ctrl-C and passes it on as one
    # SIGTERM (a second signal would make uvicorn skip the graceful stop) ...
    os.setpgrp()
    # ... and a worker never outlives a supervisor that was killed
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor_pid:  # it died before prctl took effect
            return
    worker(settings, sock)
