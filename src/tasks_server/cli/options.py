"""What every command shares: the `--env-file` option and the settings it leads to."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tasks_server.config import Settings, SettingsError, load_settings
from tasks_server.runtime import set_up_logging

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

env_file_option: Callable[[F], F] = click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Read settings from this KEY=VALUE file; the environment wins.",
)


def settings_for(env_file: str | None, **overrides: object) -> Settings:
    """The settings of a command, every bad one reported in one usage error; logging set
    up, then a warning for each variable of the env file that is no setting."""
    try:
        settings, warnings = load_settings(env_file, **overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    set_up_logging(settings)
    for warning in warnings:
        log.warning(warning)
    return settings
