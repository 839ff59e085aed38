"""A real server shared by the module's tests, and clients of both kinds for it.

The tests are written once against TasksClient; the `connect` fixture runs each
of them twice, once with TasksClient and once with AsyncTasksClient driven
through `Blocking`, so both clients answer to the same checks.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import pytest

from tasks_server.client import AsyncTasksClient, TasksClient, TaskView
from tests.conftest import Api, running_api
from tests.targets import wait_until

Connect = Callable[..., TasksClient]
_names = itertools.count()


def owner_name() -> str:
    """A name no other owner of the shared server has."""
    return f"client-owner-{next(_names)}"


def wait_state(tasks: TasksClient, task_id: str, *states: str) -> TaskView:
    """Poll the task until it is in one of `states` (10 s at the most)."""

    def reached() -> TaskView | None:
        task = tasks.get(task_id)
        return task if task.state in states else None

    found: TaskView = wait_until(reached, interval=0.02)
    return found


class Blocking:
    """An AsyncTasksClient whose methods are run to completion on `loop`, one at a time;
    its async iterators become plain ones, as lazy."""

    def __init__(self, client: AsyncTasksClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def run(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if inspect.isasyncgen(result):
                return self._iterate(result)
            return self._loop.run_until_complete(result)

        return run

    def _iterate(self, items: AsyncIterator[Any]) -> Iterator[Any]:
        while True:
            try:
                yield self._loop.run_until_complete(anext(items))
            except StopAsyncIteration:
                return


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_kind: str) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("client"), store_kind) as api:
        yield api


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest, server: Api) -> Iterator[Connect]:
    """Open clients of the test's kind (closed after it): connect(owner_id, key, base_url=
    the shared server, **options)."""
    loop = asyncio.new_event_loop()
    opened: list[Any] = []

    def open_client(*args: Any, base_url: str | None = None, **options: Any) -> TasksClient:
        url = base_url or server.base_url
        if request.param == "sync":
            client: Any = TasksClient(url, *args, **options)
        else:
            client = Blocking(AsyncTasksClient(url, *args, **options), loop)
        opened.append(client)
        return cast(TasksClient, client)

    yield open_client
    for client in opened:
        client.close()
    loop.close()


@pytest.fixture
def tasks(connect: Connect) -> TasksClient:
    """A client of a fresh owner on the shared server."""
    client = connect()
    client.register_owner(owner_name())
    return client
