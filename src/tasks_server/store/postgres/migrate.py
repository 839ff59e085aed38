"""The PostgreSQL schema: numbered migrations (migrations/NNNN_name.sql) applied in order,
by one node at a time however many start together (a transaction-scoped advisory lock)."""

from __future__ import annotations

import asyncpg

from tasks_server.model.timing import now_ms
from tasks_server.store.migrations import latest_version, pending

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
PACKAGE = __package__ or "tasks_server.store.postgres"
# one lock per schema: Tasks Servers in other schemas of the database migrate apart
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('tasks_server:migrate:' || current_schema()))"


async def is_migrated(conn: Connection) -> bool:
    """Whether this schema holds a Tasks Server database (some migration applied)."""
    table = await conn.fetchval("SELECT to_regclass('schema_migration')")
    return table is not None and bool(await conn.fetchval("SELECT count(*) FROM schema_migration"))


async def apply_migrations(conn: Connection) -> list[str]:
    """Bring the schema to the latest version; returns the names applied."""
    names = []
    async with conn.transaction():
        await conn.execute(_LOCK)  # the others wait here, then find nothing left to do
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migration "
            "(version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)"
        )
        applied = {row[0] for row in await conn.fetch("SELECT version FROM schema_migration")}
        for version, name, script in pending(PACKAGE, applied):
            await conn.execute(script)
            await conn.execute(
                "INSERT INTO schema_migration (version, name, applied_at) VALUES ($1, $2, $3)",
                version,
                name,
                now_ms(),
            )
            names.append(name)
    return names


def latest_schema_version() -> int:
    return latest_version(PACKAGE)
