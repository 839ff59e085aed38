"""What is kept, behind the Store protocol (base.py); the settings say which store."""

from __future__ import annotations

from tasks_server.config import Settings
from tasks_server.store.base import Snapshots, Store
from tasks_server.store.sqlite import SqliteSnapshots, SqliteStore


def open_store(settings: Settings) -> Store:
    """The store the settings name (today: SQLite at PATH_SQLITE); call its `open` next."""
    return SqliteStore(settings.path_sqlite)


def open_snapshots(settings: Settings) -> Snapshots:
    """Snapshots of the database the settings name, for backups and restores."""
    return SqliteSnapshots(settings.path_sqlite)
