"""Where a benchmarked server keeps its tasks: an SQLite file of its own, or a PostgreSQL
database of its own (BENCH_POSTGRES, default the machine's server with trust auth)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from tasks_server.config import Settings

POSTGRES = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
CIPHER_KEY = "bench-cipher-key"
KINDS = ("sqlite", "postgres")


def psql(sql: str, database: str = "postgres") -> str:
    done = subprocess.run(
        ["psql", f"{POSTGRES}/{database}", "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


class Database:
    """A fresh, empty database of `kind`; `close` removes it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.dir = Path(tempfile.mkdtemp(prefix="bench-"))
        self.path = self.dir / "tasks.db"
        self.name = ""
        self.url = ""
        # the harness polls counts every 50 ms: a psql process (and a new backend) per poll
        # took a fifth of a core from the server under test
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: asyncpg.Connection | None = None
        if kind == "postgres":
            self.name = f"bench_{secrets.token_hex(4)}"
            psql(f"CREATE DATABASE {self.name}")
            self.url = f"{POSTGRES}/{self.name}"

    def env(self) -> dict[str, str]:
        """The environment that points a server at this database."""
        found = {"PATH_SQLITE": str(self.path), "CIPHER_KEY": CIPHER_KEY}
        if self.url:
            found["DATABASE_URL"] = self.url
        return found

    def settings(self) -> Settings:
        return Settings(path_sqlite=str(self.path), database_url=self.url, cipher_key=CIPHER_KEY)

    def value(self, sql: str) -> Any:
        """The one value `sql` selects."""
        if self.url:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            if self._conn is None:
                self._conn = self._loop.run_until_complete(asyncpg.connect(self.url))
            found = self._loop.run_until_complete(self._conn.fetchval(sql))
            return None if found is None else float(found)
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql).fetchone()[0]

    def task_count(self) -> int:
        if not self.url and not self.path.exists():
            return 0
        return int(self.value("SELECT count(*) FROM task"))

    def created_span_s(self) -> float:
        """Seconds between the first and the last registration, by the server's own clock."""
        span = self.value("SELECT max(created_at) - min(created_at) FROM task") or 0
        return max(0.001, float(span) / 1000)

    def bytes_per_task(self, count: int) -> float:
        """Bytes the database takes per task (its files, or the task table with indexes)."""
        if self.url:
            psql("CHECKPOINT", self.name)
            return float(self.value("SELECT pg_total_relation_size('task')")) / count
        files = sum(p.stat().st_size for p in self.dir.glob("tasks.db*"))
        return files / count

    def close(self) -> None:
        if self._loop is not None:
            if self._conn is not None:
                self._loop.run_until_complete(self._conn.close())
                self._conn = None
            self._loop.close()
            self._loop = None
        if self.name:
            psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        shutil.rmtree(self.dir, ignore_errors=True)
