"""Each client used as its own kind of code uses it: `with`, `async with`, `async for`,
several requests in flight at once on one AsyncTasksClient."""

from __future__ import annotations

import asyncio

import pytest

from tasks_server.client import AsyncTasksClient, Config, HttpRequest, TasksClient
from tests.client.conftest import owner_name
from tests.conftest import Api
from tests.targets import Target


async def test_async_with_gather_and_async_for(server: Api, target: Target) -> None:
    async with AsyncTasksClient(server.base_url) as tasks:
        await tasks.register_owner(owner_name())
        request = HttpRequest(url=target.url("/async"), method="GET")
        registered = await asyncio.gather(
            *(tasks.register(request, Config(execution_delay=600_000)) for _ in range(5))
        )
        ids = sorted(task.id for task in registered)  # ids grow with their creation time
        assert [task.id async for task in tasks.iter_tasks(limit=2)] == ids
        await asyncio.gather(*(tasks.execute(task_id) for task_id in ids))
        target.wait_for(5, "/async")
        assert sorted(a.header("X-Tasks-Queue-Id") or "" for a in target.arrivals) == ids


def test_with_closes_the_client(server: Api) -> None:
    with TasksClient(server.base_url) as tasks:
        tasks.register_owner(owner_name())
        assert tasks.list() == []
    with pytest.raises(RuntimeError, match="closed"):
        tasks.stats()


async def test_close_ends_the_async_client(server: Api) -> None:
    tasks = AsyncTasksClient(server.base_url)
    await tasks.close()
    with pytest.raises(RuntimeError, match="closed"):
        await tasks.register_owner(owner_name())
