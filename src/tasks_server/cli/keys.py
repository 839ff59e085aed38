"""`tasks-server rotate-key`: re-encrypt every task with the current CIPHER_KEY."""

from __future__ import annotations

import click

from tasks_server.cli.options import env_file_option, settings_for
from tasks_server.key_rotation import RotationError, rotate_key


@click.command("rotate-key")
@env_file_option
def rotate_key_command(env_file: str | None) -> None:
    """Re-encrypt every task with CIPHER_KEY (reading with it or CIPHER_KEY_PREVIOUS).

    Refuses while a server uses the database. Afterwards CIPHER_KEY_PREVIOUS
    can be removed. Safe to run again: rows already on CIPHER_KEY are left as they are.
    """
    settings = settings_for(env_file)
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
