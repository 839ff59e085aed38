"""The embedded store on one SQLite file: the store, its writer, its schema, its snapshots."""

from tasks_server.store.sqlite.snapshot import SqliteSnapshots
from tasks_server.store.sqlite.store import SqliteStore

__all__ = ["SqliteSnapshots", "SqliteStore"]
