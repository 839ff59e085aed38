"""Command line: `tasks-server serve`, `backup`, `backups`, `restore`, `rotate-key`."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
import sys
from datetime import UTC, datetime
from types import FrameType
from typing import Any, ClassVar

import click
import uvicorn

from tasks_server.app import create_app
from tasks_server.backup.commands import create_backup, list_backups, restore_backup
from tasks_server.backup.info import BackupError
from tasks_server.cluster import STARTUP_FAILURE, Supervisor, bind_socket
from tasks_server.config import Settings, SettingsError, read_env_file
from tasks_server.crypto import KEY_FILE_NAME, load_or_create_secret
from tasks_server.key_rotation import RotationError, rotate_key
from tasks_server.store import open_store

log = logging.getLogger("tasks_server")
GC_THRESHOLD = 50_000  # container allocations between two young-generation collections


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
        # the real environment wins over the file; an empty variable counts as unset
        env = {**read_env_file(env_file), **{k: v for k, v in env.items() if v.strip()}}
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
    if settings.tls:
        check_tls_files(settings)
    configure_logging(settings.log)
    if settings.cluster_mode:
        sys.exit(serve_cluster(settings))
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_cleanly)
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
        message = f"cannot listen on {settings.host}:{settings.port}: {exc}"
        raise click.ClickException(message) from None
    return Supervisor(settings, run_cluster_worker, sock).run()


async def prepare_database(settings: Settings) -> None:
    """Create or migrate the database before any worker opens it."""
    store = open_store(settings)
    await store.open()
    await store.close()


def run_cluster_worker(settings: Settings, sock: socket.socket) -> None:
    configure_logging(settings.log)
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_cleanly)
    run_server(settings, sock)


def run_server(settings: Settings, sock: socket.socket | None = None) -> None:
    """uvicorn serving the app until SIGTERM or SIGINT, on `sock` if given."""
    app = create_app(settings)
    tune_garbage_collector()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",  # our own start-up line says where we listen
        access_log=False,
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
    """Load the TLS files once, so that a wrong one is a clear usage error, not a traceback."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.path_tls_cert, settings.path_tls_key or None)
        if settings.path_tls_ca:
            context.load_verify_locations(settings.path_tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise click.UsageError(f"PATH_TLS_CERT, PATH_TLS_KEY, PATH_TLS_CA: {exc}") from None


env_file_option = click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Read settings from this KEY=VALUE file; the environment wins.",
)


def _settings(env_file: str | None) -> Settings:
    try:
        settings = load_settings(env_file)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings.log)
    return settings


def _size(count: int) -> str:
    amount = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            break
        amount /= 1024
    return f"{count} B" if unit == "B" else f"{amount:.1f} {unit}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@main.command("backup")
@env_file_option
def backup_command(env_file: str | None) -> None:
    """Take one backup now (BACKUP_METHOD_SQLITE) and print where it went."""
    settings = _settings(env_file)
    try:
        result = create_backup(settings)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    info = result.info
    click.echo(
        f"Backup written to {result.location} ({_size(info.size)}, {info.task_count} tasks, "
        f"schema {info.schema_version}{', encrypted' if info.encrypted else ''}, "
        f"{result.seconds:.2f} s)"
    )
    if result.removed:
        click.echo(f"Retention ({settings.backup_retention}): removed {', '.join(result.removed)}")
    if not settings.cipher_key:
        click.echo(
            f"Note: CIPHER_KEY is not set; the tasks in this backup can only be read with "
            f"{settings.data_dir / KEY_FILE_NAME}: keep a copy of that file.",
            err=True,
        )


@main.command("backups")
@env_file_option
def backups_command(env_file: str | None) -> None:
    """List the backups of this database, newest first."""
    settings = _settings(env_file)
    try:
        where, found = list_backups(settings)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    if not found:
        click.echo(f"No backups in {where} ({settings.backup_method_sqlite})")
        return
    click.echo(f"Backups in {where} ({settings.backup_method_sqlite}), newest first:")
    width = max(len(entry.name) for entry in found)
    for entry in found:
        info = entry.info
        details = "no sidecar: checksum unknown"
        if info is not None:
            details = (
                f"{_when(info.created_at)}  {info.task_count} tasks  schema {info.schema_version}"
                f"{'  encrypted' if info.encrypted else ''}"
            )
        click.echo(f"  {entry.name:<{width}}  {_size(entry.size):>10}  {details}")


class _ProgressBars:
    """Progress on stderr for the long steps of a restore of a large archive."""

    LABELS: ClassVar[dict[str, str]] = {
        "download": "Downloading",
        "verify": "Verifying checksum",
        "unpack": "Unpacking",
        "check": "Checking integrity",
    }
    LARGE = 1 << 20  # bytes; smaller archives are quick, so they show no bars

    def __init__(self) -> None:
        self._phase = ""
        self._done = 0
        self._bar: Any = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self._phase:
            self.close()
            self._phase, self._done = phase, 0
            if total >= self.LARGE:
                self._bar = click.progressbar(
                    length=total, label=self.LABELS.get(phase, phase), file=sys.stderr
                )
                self._bar.__enter__()
        if self._bar is not None:
            self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@main.command("restore")
@click.argument("source")
@env_file_option
@click.option(
    "--skip-checksum",
    is_flag=True,
    help="Restore an archive that has no sidecar or metadata (gzip CRC and integrity_check "
    "still apply).",
)
def restore_command(source: str, env_file: str | None, skip_checksum: bool) -> None:
    """Replace the database with the backup SOURCE: a file, a backup name, or an object key.

    Refuses while a server uses the database. The database it replaces is kept
    as <PATH_SQLITE>.before-restore.
    """
    settings = _settings(env_file)
    bars = _ProgressBars()
    try:
        result = restore_backup(settings, source, skip_checksum=skip_checksum, progress=bars)
    except BackupError as exc:
        raise click.ClickException(f"restore refused: {exc}") from None
    finally:
        bars.close()
    click.echo(
        f"Restored {result.source} into {result.database} "
        f"({result.task_count} tasks, schema {result.schema_version})"
    )
    if result.previous:
        click.echo(f"The database it replaced is kept as {result.previous}")
    if not result.key_checked and result.task_count:
        click.echo(
            "Note: no CIPHER_KEY (nor key file) was found to check that the tasks can be read; "
            "start the server with the key the backup was written with.",
            err=True,
        )


@main.command("rotate-key")
@env_file_option
def rotate_key_command(env_file: str | None) -> None:
    """Re-encrypt every task with CIPHER_KEY (reading with it or CIPHER_KEY_PREVIOUS).

    Refuses while a server uses the database. Afterwards CIPHER_KEY_PREVIOUS
    can be removed. Safe to run again: rows already on CIPHER_KEY are left as they are.
    """
    settings = _settings(env_file)
    try:
        result = rotate_key(settings)
    except RotationError as exc:
        raise click.ClickException(f"rotate-key refused: {exc}") from None
    click.echo(
        f"Re-encrypted {result.resealed} of {result.rows} tasks with the current CIPHER_KEY "
        f"({result.rows - result.resealed - len(result.unreadable)} already used it)"
    )
    if result.unreadable:
        shown = ", ".join(result.unreadable[:10])
        more = f" and {len(result.unreadable) - 10} more" if len(result.unreadable) > 10 else ""
        raise click.ClickException(
            f"{len(result.unreadable)} tasks open with neither CIPHER_KEY nor "
            f"CIPHER_KEY_PREVIOUS and were left as they are: {shown}{more}. "
            "Add the key they were written with to CIPHER_KEY_PREVIOUS and run rotate-key again."
        )
