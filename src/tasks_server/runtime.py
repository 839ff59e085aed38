"""Running the server: uvicorn on the app, logging, TLS checks, garbage-collector tuning,
and the workers of CLUSTER_MODE."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import ssl
import sys
from types import FrameType
from typing import Any

import uvicorn

from tasks_server.app import create_app
from tasks_server.cluster import STARTUP_FAILURE, Supervisor, bind_socket
from tasks_server.config import Settings, SettingsError
from tasks_server.crypto import load_or_create_secret
from tasks_server.logs import configure_logging
from tasks_server.store import open_store

log = logging.getLogger(__name__)
GC_THRESHOLD = 50_000  # container allocations between two young-generation collections


class StartError(Exception):
    """The server cannot start (not a setting's fault, e.g. the port is taken)."""


def set_up_logging(settings: Settings) -> None:
    configure_logging(
        verbose=settings.log, json=settings.log_format == "json", access=settings.log_access
    )


def exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGINT when uvicorn is not handling them: exit with status 0.

    uvicorn takes both signals while it serves, shuts down gracefully, then
    restores these handlers and raises the signal again (so that a default
    handler would end the process *by* the signal, status -15 or a
    KeyboardInterrupt). By then the stop is complete, which is a success.
    A signal arriving before uvicorn starts serving lands here too.
    """
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    """One server until SIGTERM or SIGINT; with CLUSTER_MODE, the supervisor of several."""
    if settings.tls:
        check_tls_files(settings)
    set_up_logging(settings)
    if settings.cluster_mode:
        sys.exit(serve_cluster(settings))
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, exit_cleanly)
    run_server(settings)


def serve_cluster(settings: Settings) -> int:
    """CLUSTER_MODE=1: the database and the key prepared once, then the workers."""
    try:
        asyncio.run(prepare_database(settings))
        load_or_create_secret(settings.cipher_key, settings.data_dir)
    except Exception as exc:  # what a single server reports as its start-up failure
        log.error("Cannot start: %s", exc)
        return STARTUP_FAILURE
    try:
        sock = bind_socket(settings)
    except OSError as exc:
        raise StartError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
    return Supervisor(settings, run_cluster_worker, sock).run()


async def prepare_database(settings: Settings) -> None:
    """Create or migrate the database before any worker opens it."""
    store = open_store(settings)
    await store.open()
    await store.close()


def run_cluster_worker(settings: Settings, sock: socket.socket) -> None:
    set_up_logging(settings)
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, exit_cleanly)
    run_server(settings, sock)


def run_server(settings: Settings, sock: socket.socket | None = None) -> None:
    """uvicorn serving the app until SIGTERM or SIGINT, on `sock` if given."""
    app = create_app(settings)
    tune_garbage_collector()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # logs.py has set up every logger, uvicorn's included
        access_log=settings.log_access,
        timeout_graceful_shutdown=max(1, settings.shutdown_grace_ms // 1000 + 1),
        **server_options(settings),
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock] if sock is not None else None)
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def tune_garbage_collector() -> None:
    """Collect cycles less often: a request or an attempt allocates hundreds of
    short-lived containers, and with the default threshold (700) the collector
    ran several times per task and took 5-6 % of a dispatch burst's CPU. What
    is loaded at start-up is frozen out of every later collection."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options that `serve` and the tests' server share: TLS, and the peer as it is."""
    options: dict[str, Any] = {
        # X-Forwarded-For is the throttle's to read, and only with TRUST_PROXY_HEADERS=1
        "proxy_headers": False,
        "server_header": False,
    }
    if settings.tls:
        options.update(
            ssl_certfile=settings.path_tls_cert,
            ssl_keyfile=settings.path_tls_key or None,
            # CA certificates completing the chain the server presents
            ssl_ca_certs=settings.path_tls_ca or None,
        )
    return options


def check_tls_files(settings: Settings) -> None:
    """Load the TLS files once, so that a wrong one is a clear SettingsError, not a traceback."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.path_tls_cert, settings.path_tls_key or None)
        if settings.path_tls_ca:
            context.load_verify_locations(settings.path_tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"PATH_TLS_CERT, PATH_TLS_KEY, PATH_TLS_CA: {exc}") from None
