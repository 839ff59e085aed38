"""`tasks-server backup`, `backups` and `restore`: the backup commands."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, ClassVar

import click

from tasks_server.backup.commands import create_backup, list_backups, restore_backup
from tasks_server.backup.info import BackupError
from tasks_server.cli.options import env_file_option, settings_for
from tasks_server.crypto import KEY_FILE_NAME


def _size(count: int) -> str:
    amount = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            break
        amount /= 1024
    return f"{count} B" if unit == "B" else f"{amount:.1f} {unit}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.command("backup")
@env_file_option
def backup_command(env_file: str | None) -> None:
    """Take one backup now (BACKUP_METHOD_SQLITE) and print where it went."""
    settings = settings_for(env_file)
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


@click.command("backups")
@env_file_option
def backups_command(env_file: str | None) -> None:
    """List the backups of this database, newest first."""
    settings = settings_for(env_file)
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


@click.command("restore")
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
    settings = settings_for(env_file)
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
