"""Numbered schema migrations: each store keeps `migrations/NNNN_name.sql` in its own
dialect and applies those not yet recorded, in order, when it opens."""

from __future__ import annotations

from importlib.resources import files


def pending(package: str, applied: set[int]) -> list[tuple[int, str, str]]:
    """(version, name, sql) of each migration of `package` not yet applied, in order."""
    found = []
    for entry in files(package).joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            if version not in applied:
                found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def latest_version(package: str) -> int:
    """The schema version the migrations of `package` lead to."""
    return max(version for version, _, _ in pending(package, set()))
