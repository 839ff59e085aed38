"""`tasks-server migrate --to postgresql://...`: move an SQLite install to PostgreSQL."""

from __future__ import annotations

import asyncio

import click

from tasks_server.cli.options import env_file_option, settings_for
from tasks_server.config import parse_database_url, redact_url
from tasks_server.crypto import KEY_FILE_NAME
from tasks_server.store.postgres.transfer import TransferError, copy_sqlite_to_postgres


@click.command("migrate")
@click.option(
    "--to",
    "url",
    required=True,
    metavar="URL",
    help="The PostgreSQL database to copy into (empty): postgresql://user:pass@host:5432/db",
)
@env_file_option
def migrate_command(url: str, env_file: str | None) -> None:
    """Copy the SQLite database (PATH_SQLITE) into an empty PostgreSQL database.

    Owners, tasks (sealed as they are: keep the same CIPHER_KEY) and backup runs are
    copied in one transaction, then the counts and a sample of payloads are checked.
    Refuses while a server uses the SQLite database.
    """
    settings = settings_for(env_file)
    if settings.database_url:
        raise click.UsageError(
            "migrate copies the SQLite database at PATH_SQLITE: run it without DATABASE_URL"
        )
    try:
        parse_database_url(url)
    except ValueError as exc:
        raise click.UsageError(f"--to: {exc}") from None
    try:
        result = asyncio.run(
            copy_sqlite_to_postgres(settings.path_sqlite, url, settings.instance_stale_ms)
        )
    except TransferError as exc:
        raise click.ClickException(f"migrate refused: {exc}") from None
    click.echo(
        f"Copied {result.owners} owners, {result.tasks} tasks and {result.backup_runs} backup "
        f"runs from {settings.path_sqlite} into {redact_url(url)} "
        f"({result.in_flight} in flight there are due again; counts checked, "
        f"{result.sampled} payloads compared)"
    )
    key = (
        "the same CIPHER_KEY"
        if settings.cipher_key
        else f"CIPHER_KEY set to the content of {settings.data_dir / KEY_FILE_NAME}"
    )
    click.echo(f"Next: start every node with DATABASE_URL={redact_url(url)} and {key}.")
