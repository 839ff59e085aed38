"""Numbered schema migrations (NNNN_name.sql), applied in order at start-up."""

from __future__ import annotations

import sqlite3
from importlib.resources import files

from tasks_server.model.timing import now_ms


def pending(dialect: str, applied: set[int]) -> list[tuple[int, str, str]]:
    """(version, name, sql) of each migration not yet applied, in order."""
    found = []
    for entry in files("tasks_server.store.migrations").joinpath(dialect).iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            if version not in applied:
                found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def apply_migrations(conn: sqlite3.Connection, dialect: str) -> list[str]:
    """Bring an SQLite database to the latest schema; returns the names applied."""
    conn.execute("BEGIN IMMEDIATE")  # one process migrates; others wait on the lock
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migration "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migration")}
        names = []
        for version, name, script in pending(dialect, applied):
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migration (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, now_ms()),
            )
            names.append(name)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return names


def _statements(script: str) -> list[str]:
    # sqlite3.complete_statement knows where a statement (even a trigger body) ends
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    return statements
