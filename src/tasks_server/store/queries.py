"""Named SQL statements, loaded from store/sql/<dialect>.sql."""

from __future__ import annotations

import re
from importlib.resources import files

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(dialect: str, fragments: dict[str, str]) -> dict[str, str]:
    """Statements by name; `{fragment}` markers are replaced by `fragments`."""
    text = files("tasks_server.store").joinpath("sql", f"{dialect}.sql").read_text()
    for marker, value in fragments.items():
        text = text.replace("{" + marker + "}", value)
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
