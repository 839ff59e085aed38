"""Command line: `tasks-server serve`, `backup`, `backups`, `restore`, `rotate-key`, `migrate`.

One module per command group; each reads the same settings (environment, or
`--env-file FILE`) through options.py.
"""

from __future__ import annotations

import click

from tasks_server import __version__
from tasks_server.cli.backup import backup_command, backups_command, restore_command
from tasks_server.cli.keys import rotate_key_command
from tasks_server.cli.migrate import migrate_command
from tasks_server.cli.serve import serve


@click.group()
@click.version_option(__version__, prog_name="Tasks Server")
def main() -> None:
    """Tasks Server: HTTP requests scheduled for later, stored durably, retried."""


for command in (
    serve,
    backup_command,
    backups_command,
    restore_command,
    rotate_key_command,
    migrate_command,
):
    main.add_command(command)
