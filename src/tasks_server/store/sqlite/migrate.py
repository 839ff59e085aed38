"""The SQLite schema: its numbered migrations (migrations/NNNN_name.sql) applied in order."""

from __future__ import annotations

import sqlite3

from tasks_server.model.timing import now_ms
from tasks_server.store.migrations import latest_version, pending

PACKAGE = __package__ or "tasks_server.store.sqlite"


def apply_migrations(conn: sqlite3.Connection) -> list[str]:
    """Bring an SQLite database to the latest schema; returns the names applied."""
    conn.execute("BEGIN IMMEDIATE")  # one process migrates; others wait on the lock
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migration "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migration")}
        names = []
        for version, name, script in pending(PACKAGE, applied):
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


def latest_schema_version() -> int:
    return latest_version(PACKAGE)


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
