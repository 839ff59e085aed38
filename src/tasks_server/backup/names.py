"""Backup names: `<stem>-YYYYMMDDTHHMMSSZ[-n].db.gz[.enc]`, newest first by their time."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

_STAMP = "%Y%m%dT%H%M%SZ"


def backup_name(stem: str, at_ms: int, encrypted: bool, n: int = 0) -> str:
    """`tasks-20250125T040752Z.db.gz`; `-n` after the time when that second is taken."""
    suffix = f"-{n}" if n else ""
    return f"{stem}-{stamp(at_ms)}{suffix}.db.gz{'.enc' if encrypted else ''}"


def stamp(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime(_STAMP)


def _name_pattern(stem: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(stem)}-(\d{{8}}T\d{{6}}Z)(?:-(\d+))?\.db\.gz(?:\.enc)?$")


def newest_first(stem: str, names: Iterable[str]) -> list[str]:
    pattern = _name_pattern(stem)
    keyed = []
    for name in names:
        found = pattern.match(name)
        if found:
            keyed.append(((found.group(1), int(found.group(2) or 0)), name))
    return [name for _, name in sorted(keyed, reverse=True)]
