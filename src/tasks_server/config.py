"""Every setting of the server, read once from the environment into one struct."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec


class SettingsError(ValueError):
    """An environment variable has a value the server cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 9420
    path_sqlite: str = ".data/tasks.db"
    cipher_key: str = ""
    log: bool = False
    max_size_body_request: int = 32768
    max_size_data_response: int = 32768
    max_tasks_in_queue: int = 1000
    max_in_flight: int = 1000
    shutdown_grace_ms: int = 10_000
    instance_stale_ms: int = 3_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Parse the variables of ENV_TABLE from `env` (default: os.environ).

        Empty values count as unset. `overrides` (field names) win over the environment.
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for variable, field, parse in ENV_TABLE:
            raw = source.get(variable, "").strip()
            if not raw:
                continue
            try:
                values[field] = parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{variable}={raw!r}: {exc}") from None
        values.update(overrides)
        return cls(**values)

    @property
    def data_dir(self) -> Path:
        return Path(self.path_sqlite).parent


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected 1 or 0")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("expected an integer >= 1")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("expected a port number 1..65535")
    return value


# environment variable -> Settings field -> parser
ENV_TABLE: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("HOST", "host", str),
    ("PORT", "port", _port),
    ("PATH_SQLITE", "path_sqlite", str),
    ("CIPHER_KEY", "cipher_key", str),
    ("LOG", "log", _flag),
    ("MAX_SIZE_BODY_REQUEST", "max_size_body_request", _positive_int),
    ("MAX_SIZE_DATA_RESPONSE", "max_size_data_response", _positive_int),
    ("MAX_TASKS_IN_QUEUE", "max_tasks_in_queue", _positive_int),
    ("MAX_IN_FLIGHT", "max_in_flight", _positive_int),
    ("SHUTDOWN_GRACE_MS", "shutdown_grace_ms", _non_negative_int),
    ("INSTANCE_STALE_MS", "instance_stale_ms", _positive_int),
)


def read_env_file(path: str) -> dict[str, str]:
    """Read KEY=VALUE lines (blank lines and # comments skipped, optional quotes)."""
    values: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            raise SettingsError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values
