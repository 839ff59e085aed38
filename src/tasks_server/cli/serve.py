"""`tasks-server serve`: the API and the scheduler until SIGTERM or SIGINT."""

from __future__ import annotations

import click

from tasks_server import runtime
from tasks_server.cli.options import env_file_option, settings_for
from tasks_server.config import SettingsError


@click.command()
@click.option("--host", default=None, help="Address to listen on (HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (PORT, default 9420).")
@env_file_option
def serve(host: str | None, port: int | None, env_file: str | None) -> None:
    """Run the API and the scheduler in one process until SIGTERM or SIGINT."""
    settings = settings_for(env_file, host=host, port=port)
    try:
        runtime.serve(settings)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    except runtime.StartError as exc:
        raise click.ClickException(str(exc)) from None
