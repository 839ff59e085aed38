"""What is particular to the PostgreSQL store: the schema migrated once however many nodes
start together, and a database that is not there."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks_server.store.base import StoreMissing, StoreUnavailable
from tasks_server.store.postgres import PostgresStore
from tasks_server.store.postgres.migrate import latest_schema_version
from tests.conftest import make_settings
from tests.database import rows
from tests.pg import SERVER, fresh_schema


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as found:
        yield found


async def test_nodes_starting_together_migrate_once(url: str, tmp_path: Path) -> None:
    stores = [PostgresStore(url) for _ in range(6)]
    await asyncio.gather(*(store.open() for store in stores))
    await asyncio.gather(*(store.close() for store in stores))
    settings = make_settings(tmp_path, database_url=url)
    applied = rows(settings, "SELECT version FROM schema_migration ORDER BY version")
    assert applied == [(version,) for version in range(1, latest_schema_version() + 1)]


async def test_a_missing_database_is_told_apart_from_an_unreachable_server() -> None:
    with pytest.raises(StoreMissing):
        await PostgresStore(f"{SERVER}/no_such_database_here").open()
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        await PostgresStore("postgresql://postgres@127.0.0.1:1/tasks").open()
