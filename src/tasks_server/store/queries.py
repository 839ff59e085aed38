"""Named SQL statements: `-- name: x` blocks of a store's sql/<file>.sql."""

from __future__ import annotations

import re
from importlib.resources import files

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(package: str, name: str, fragments: dict[str, str] | None = None) -> dict[str, str]:
    """Statements by name from `package`'s sql/`name`.sql; `{fragment}` markers are
    replaced by `fragments`."""
    text = files(package).joinpath("sql", f"{name}.sql").read_text()
    for marker, value in (fragments or {}).items():
        text = text.replace("{" + marker + "}", value)
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
