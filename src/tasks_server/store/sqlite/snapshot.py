"""The SQLite database as one file, for backups: taken with SQLite's online backup API
while servers keep writing, and put back in place only when nothing uses it."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from tasks_server.files import fsync_dir
from tasks_server.model.records import InstanceRow
from tasks_server.model.timing import now_ms
from tasks_server.store import instances, queries
from tasks_server.store.base import InUse, SnapshotError, SnapshotFacts
from tasks_server.store.sqlite.migrate import latest_schema_version

_Q = queries.load(__package__ or "tasks_server.store.sqlite", "snapshot")


class SqliteSnapshots:
    """Snapshots of the database file at `path` (see store.base.Snapshots)."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)

    @property
    def database(self) -> str:
        return str(self._path)

    @property
    def stem(self) -> str:
        return self._path.stem

    def scratch_dir(self) -> Path:
        directory = self._path.parent
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def take(self, into: Path) -> SnapshotFacts:
        """One read transaction copies every page: a consistent database even while the
        server writes, as a single file (no WAL)."""
        if not self._path.exists():
            raise SnapshotError(f"no database at {self._path}")
        with (
            closing(sqlite3.connect(self._path, timeout=30)) as source,
            closing(sqlite3.connect(into)) as copy,
        ):
            source.backup(copy, pages=-1)  # all pages in one step: no restart on writes
            copy.execute("PRAGMA journal_mode = DELETE")
            return _read_facts(copy)

    def check(self, candidate: Path) -> SnapshotFacts:
        with closing(sqlite3.connect(candidate)) as conn:
            try:
                problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            except sqlite3.DatabaseError as exc:
                raise SnapshotError(
                    f"the backup is not a readable SQLite database ({exc})"
                ) from None
            if problems != ["ok"]:
                raise SnapshotError(
                    f"the backup fails PRAGMA integrity_check: {'; '.join(problems[:5])}"
                )
            facts = _read_facts(conn)
        if facts.schema_version > latest_schema_version():
            raise SnapshotError(
                f"the backup has schema version {facts.schema_version}, newer than this "
                f"Tasks Server knows ({latest_schema_version()}): upgrade it first"
            )
        return facts

    def sealed_sample(self, candidate: Path) -> tuple[str, bytes] | None:
        with closing(sqlite3.connect(candidate)) as conn:
            row = conn.execute(_Q["any_task_payload"]).fetchone()
        return (row[0], row[1]) if row is not None else None

    def refuse_if_served(self, stale_ms: int) -> None:
        if not self._path.exists():
            return
        with closing(sqlite3.connect(self._path)) as conn:
            _refuse_if_served(conn, self.database, stale_ms)

    def swap_in(self, candidate: Path, stale_ms: int) -> Path | None:
        """The old database becomes `<name>.before-restore`; the servers that were running
        when the backup was taken are forgotten (they are not running on it now)."""
        with closing(sqlite3.connect(candidate, isolation_level=None)) as conn:
            conn.execute(_Q["forget_instances"])
        database = self._path
        previous = database.with_name(database.name + ".before-restore")
        if not database.exists():
            _move_side_files(database, previous)  # a WAL without its database would corrupt ours
            os.replace(candidate, database)
            fsync_dir(database.parent)
            return None
        with closing(sqlite3.connect(database, timeout=0, isolation_level=None)) as conn:
            _refuse_if_served(conn, self.database, stale_ms)
            try:
                # leaving WAL needs every other connection closed: a server (or any other
                # program) with the database open makes this fail
                mode = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
                conn.execute("BEGIN EXCLUSIVE")  # and nobody opens it while we swap
            except sqlite3.OperationalError as exc:
                raise SnapshotError(
                    f"{database} is in use ({exc}): stop every server and program using it first"
                ) from None
            except sqlite3.DatabaseError:
                mode = "delete"  # unreadable (maybe why we restore): it is moved aside as it is
            if mode != "delete":
                raise SnapshotError(f"{database} is in use: its journal mode stays {mode}")
            os.replace(database, previous)
            _move_side_files(database, previous)
            os.replace(candidate, database)
            fsync_dir(database.parent)
            if conn.in_transaction:
                conn.execute("COMMIT")
        return previous


def _read_facts(conn: sqlite3.Connection) -> SnapshotFacts:
    try:
        version = conn.execute(_Q["schema_version"]).fetchone()[0]
        count = conn.execute(_Q["task_count"]).fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise SnapshotError(f"not a Tasks Server database ({exc})") from None
    return SnapshotFacts(int(version or 0), int(count))


def _refuse_if_served(conn: sqlite3.Connection, database: str, stale_ms: int) -> None:
    """InUse when servers heart-beat into this database (the rule of store.instances)."""
    try:
        rows = [InstanceRow(*row) for row in conn.execute(_Q["list_instances"])]
    except sqlite3.DatabaseError:
        return  # no instance table (no server ever ran on it), or not a database at all
    now = now_ms()
    live = [row for row in rows if instances.is_alive(row, now, stale_ms)]
    if live:
        raise InUse(database, [instances.describe(row) for row in live])


def _move_side_files(database: Path, previous: Path) -> None:
    for suffix in ("-wal", "-shm", "-journal"):
        side = database.with_name(database.name + suffix)
        if side.exists():
            os.replace(side, previous.with_name(previous.name + suffix))
