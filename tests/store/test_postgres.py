"""What is particular to the PostgreSQL store: the schema migrated once however many nodes
start together, a database that is not there, and the owners each node keeps for
authentication forgotten when another node changes them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tasks_server.model.lifecycle import State
from tasks_server.model.records import OwnerRow
from tasks_server.store.base import StoreMissing, StoreUnavailable
from tasks_server.store.postgres import PostgresStore
from tasks_server.store.postgres.migrate import latest_schema_version
from tests.conftest import make_settings
from tests.database import rows
from tests.pg import SERVER, fresh_schema, psql
from tests.store.helpers import owner_row, task_row


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


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


@pytest.fixture
async def two_nodes(url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore, OwnerRow]]:
    first, second = PostgresStore(url), PostgresStore(url)
    await first.open()
    await second.open()
    owner = owner_row()
    await first.create_owner(owner)
    try:
        yield first, second, owner
    finally:
        await first.close()
        await second.close()


async def test_a_key_replaced_on_one_node_stops_working_on_the_others(
    two_nodes: tuple[PostgresStore, PostgresStore, OwnerRow],
) -> None:
    first, second, owner = two_nodes
    assert await second.get_owner(owner.id, cached=True) == owner  # now kept by the second
    new_digest = b"\x01" * 32
    assert await first.replace_owner_key(owner.id, owner.key_digest, new_digest)
    assert (await first.get_owner(owner.id, cached=True) or owner).key_digest == new_digest

    async def second_knows() -> bool:
        found = await second.get_owner(owner.id, cached=True)
        return found is not None and found.key_digest == new_digest

    await eventually(second_knows)


async def test_an_owner_deleted_on_one_node_is_gone_on_the_others(
    two_nodes: tuple[PostgresStore, PostgresStore, OwnerRow],
) -> None:
    first, second, owner = two_nodes
    assert await second.get_owner(owner.id, cached=True) == owner
    await first.delete_owner(owner.id, owner.name)

    async def second_forgot() -> bool:
        return await second.get_owner(owner.id, cached=True) is None

    await eventually(second_forgot)


async def test_owners_are_read_again_while_the_other_nodes_cannot_be_heard(
    two_nodes: tuple[PostgresStore, PostgresStore, OwnerRow], url: str
) -> None:
    """A change made behind the servers' back is seen by a node once its LISTEN connection
    is lost (it might have missed announcements), and owners are read, not kept, meanwhile."""
    _, second, owner = two_nodes
    assert await second.get_owner(owner.id, cached=True) == owner
    schema = url.rsplit("search_path=", 1)[1]
    psql(f"UPDATE {schema}.owner SET name = 'renamed' WHERE id = '{owner.id}'")
    kept = await second.get_owner(owner.id, cached=True)
    assert kept is not None and kept.name == owner.name  # the copy kept: nothing was said
    psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE query LIKE 'LISTEN%{schema}%'"
    )

    async def read_again() -> bool:
        found = await second.get_owner(owner.id, cached=True)
        return found is not None and found.name == "renamed"

    await eventually(read_again)


async def test_count_deltas_fold_into_one_row_per_owner_and_state(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    try:
        owner = owner_row()
        await store.create_owner(owner)
        for _ in range(5):
            await store.insert_task(task_row(owner.id), 100)
        before = await store.count_tasks(owner.id)
        assert before[State.RUNNING] == 5
        assert len(psql(f"SELECT 1 FROM {schema_of(url)}.task_count").splitlines()) >= 2
        await store.fold_task_counts()
        assert await store.count_tasks(owner.id) == before
        folded = psql(f"SELECT owner_id, state, tasks FROM {schema_of(url)}.task_count")
        assert folded.splitlines() == [f"{owner.id}|RUNNING|5"]
    finally:
        await store.close()


def schema_of(url: str) -> str:
    return url.rsplit("search_path=", 1)[1]
