"""Command line: `tasks-server serve`."""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

import click
import uvicorn

from tasks_server.app import create_app
from tasks_server.config import Settings, SettingsError, read_env_file


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(message)s",
        level=logging.WARNING,
    )
    logging.getLogger("tasks_server").setLevel(logging.INFO if verbose else logging.WARNING)


def load_settings(env_file: str | None, **overrides: object) -> Settings:
    env = dict(os.environ)
    if env_file:
        env = {**read_env_file(env_file), **env}  # the real environment wins over the file
    given = {key: value for key, value in overrides.items() if value is not None}
    return Settings.from_env(env, **given)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGINT when uvicorn is not handling them: exit with status 0.

    uvicorn takes both signals while it serves, shuts down gracefully, then
    restores these handlers and raises the signal again (so that a default
    handler would end the process *by* the signal, status -15 or a
    KeyboardInterrupt). By then the stop is complete, which is a success.
    A signal arriving before uvicorn starts serving lands here too.
    """
    raise SystemExit(0)


@click.group()
def main() -> None:
    """Tasks Server: HTTP requests scheduled for later, stored durably, retried."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (PORT, default 9420).")
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Read settings from this KEY=VALUE file; the environment wins.",
)
def serve(host: str | None, port: int | None, env_file: str | None) -> None:
    """Run the API and the scheduler in one process until SIGTERM or SIGINT."""
    try:
        settings = load_settings(env_file, host=host, port=port)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings.log)
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_cleanly)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",  # our own start-up line says where we listen
        access_log=False,
        timeout_graceful_shutdown=max(1, settings.shutdown_grace_ms // 1000 + 1),
    )
