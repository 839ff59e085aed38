"""A PostgreSQL schema of its own for each test, in one database of the machine's server
(TASKS_TEST_POSTGRES, default postgresql://postgres@127.0.0.1:5432: trust auth)."""

from __future__ import annotations

import functools
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

SERVER = os.environ.get("TASKS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DATABASE = "tasks_server_test"


def psql(sql: str, database: str = DATABASE) -> str:
    """Run `sql` with psql; its output (unaligned, tuples only)."""
    done = subprocess.run(
        ["psql", f"{SERVER}/{database}", "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@functools.cache
def test_database() -> str:
    """The database the tests' schemas live in, created on first use."""
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", "postgres"):
        psql(f"CREATE DATABASE {DATABASE}", "postgres")
    return DATABASE


@contextmanager
def fresh_schema() -> Iterator[str]:
    """The URL of a new, empty schema (dropped afterwards) as a server's DATABASE_URL."""
    database = test_database()
    schema = f"t_{secrets.token_hex(6)}"
    psql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{SERVER}/{database}?search_path={schema}"
    finally:
        psql(f"DROP SCHEMA {schema} CASCADE")
