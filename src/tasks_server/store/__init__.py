"""What is kept, behind the Store protocol (base.py); the settings say which store."""

from __future__ import annotations

from tasks_server.config import Settings
from tasks_server.observer import NO_OBSERVER, Observer
from tasks_server.store.base import SnapshotError, Snapshots, Store
from tasks_server.store.postgres import PostgresStore
from tasks_server.store.sqlite import SqliteSnapshots, SqliteStore


def open_store(settings: Settings, observer: Observer = NO_OBSERVER) -> Store:
    """The store the settings name: PostgreSQL at DATABASE_URL, else SQLite at PATH_SQLITE.
    Nothing is connected or created until its `open`. Its commits are told to `observer`."""
    if settings.database_url:
        return PostgresStore(settings.database_url, observer)
    return SqliteStore(settings.path_sqlite, observer)


POSTGRES_BACKUPS = (
    "backup, backups and restore work on the SQLite store; a PostgreSQL database is backed "
    "up with PostgreSQL's own tools: pg_dump --format=custom (restored with pg_restore), or "
    "your provider's point-in-time recovery"
)


def open_snapshots(settings: Settings) -> Snapshots:
    """Snapshots of the database the settings name, for backups and restores;
    SnapshotError on PostgreSQL (POSTGRES_BACKUPS says what to use instead)."""
    if settings.database_url:
        raise SnapshotError(POSTGRES_BACKUPS)
    return SqliteSnapshots(settings.path_sqlite)
