"""Shared fixtures: a real server (uvicorn in a thread, real SQLite file) and real targets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tasks_server.app import create_app
from tasks_server.config import Settings
from tasks_server.runtime import server_options
from tests.pg import fresh_schema
from tests.store.helpers import STORES
from tests.targets import Target, wait_until


@dataclass
class Owner:
    id: str
    key: str
    name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "X-Tasks-Owner-Id": self.id}


class Api:
    """A running server and an HTTP client for it, with helpers for common calls."""

    def __init__(self, base_url: str, settings: Settings) -> None:
        self.base_url = base_url
        self.settings = settings
        self.http = httpx.Client(base_url=base_url, timeout=10)
        self._owners = 0

    def owner(self, name: str | None = None) -> Owner:
        self._owners += 1
        name = name or f"owner-{self._owners}"
        reply = self.http.post("/v1/owners/register", json={"name": name})
        assert reply.status_code == 201, reply.text
        body = reply.json()
        return Owner(body["id"], body["key"], name)

    def register(self, owner: Owner, payload: dict[str, Any]) -> httpx.Response:
        return self.http.post("/v1/queues/register", json=payload, headers=owner.headers)

    def task(self, owner: Owner, payload: dict[str, Any]) -> dict[str, Any]:
        """Register a task that must be accepted; returns its task object."""
        reply = self.register(owner, payload)
        assert reply.status_code == 201, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def get(self, owner: Owner, task_id: str) -> dict[str, Any]:
        reply = self.http.get(f"/v1/queues/{task_id}", headers=owner.headers)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def wait_state(
        self, owner: Owner, task_id: str, *states: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll the task until its state is one of `states`; return the task object."""

        def reached() -> dict[str, Any] | None:
            task = self.get(owner, task_id)
            return task if task["state"] in states else None

        found: dict[str, Any] = wait_until(reached, timeout=timeout)
        return found

    def close(self) -> None:
        self.http.close()


class ServerThread:
    """uvicorn serving the real app on a free loopback port, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(settings),
            log_level="warning",
            access_log=False,
            lifespan="on",
            **server_options(settings),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        wait_until(lambda: self._server.started or not self._thread.is_alive(), timeout=15)
        if not self._server.started:
            raise RuntimeError("server did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "path_sqlite": str(tmp_path / "data" / "tasks.db"),
        "cipher_key": "test-cipher-key",
        "shutdown_grace_ms": 1000,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running(settings: Settings) -> Iterator[Api]:
    """A real server on `settings` for the length of one `with` block."""
    server = ServerThread(settings)
    server.start()
    api = Api(f"http://127.0.0.1:{server.port}", settings)
    try:
        yield api
    finally:
        api.close()
        server.stop()


@pytest.fixture(scope="module")
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store under a test's servers: SQLite, or each of STORES in the modules marked
    with BOTH_STORES."""
    return str(getattr(request, "param", "sqlite"))


BOTH_STORES = pytest.mark.both_stores


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """In a module marked BOTH_STORES, each test with a server runs once on each store."""
    marked = metafunc.definition.get_closest_marker("both_stores") is not None
    if marked and "store_kind" in metafunc.fixturenames:
        metafunc.parametrize("store_kind", STORES, indirect=True, scope="module")


@contextmanager
def database_url_for(store_kind: str) -> Iterator[str]:
    """DATABASE_URL of a fresh database of `store_kind` ("" for SQLite: PATH_SQLITE)."""
    if store_kind == "postgres":
        with fresh_schema() as url:
            yield url
    else:
        yield ""


@pytest.fixture
def database_url(store_kind: str) -> Iterator[str]:
    """The test's database on its store (one for every server the test starts)."""
    with database_url_for(store_kind) as url:
        yield url


@contextmanager
def running_api(directory: Path, store_kind: str = "sqlite", **overrides: Any) -> Iterator[Api]:
    """A server on a fresh database (SQLite: in `directory`), with Settings overrides, for
    one `with` block (a module-scoped fixture shares one between the tests of a file)."""
    with (
        database_url_for(store_kind) as url,
        running(make_settings(directory, database_url=url, **overrides)) as api,
    ):
        yield api


def assert_error(reply: httpx.Response, status: int, message: str | None = None) -> dict[str, Any]:
    """The reply is our JSON error shape with this status (and message); returns its body."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = reply.json()
    assert isinstance(body["action"], str) and body["action"]
    assert isinstance(body["message"], str) and body["message"]
    if message is not None:
        assert body["message"] == message
    return body


@pytest.fixture
def start_server(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Api]]:
    """Start a server with Settings overrides (field names); stopped after the test. Every
    server of a test runs on the same database."""
    running: list[tuple[ServerThread, Api]] = []

    def start(**overrides: Any) -> Api:
        settings = make_settings(tmp_path, **{"database_url": database_url, **overrides})
        server = ServerThread(settings)
        server.start()
        api = Api(f"http://127.0.0.1:{server.port}", settings)
        running.append((server, api))
        return api

    yield start
    for server, api in reversed(running):
        api.close()
        server.stop()


@pytest.fixture
def api(start_server: Callable[..., Api]) -> Api:
    """A server with default settings on a fresh database."""
    return start_server()


@pytest.fixture
def owner(api: Api) -> Owner:
    return api.owner()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.close()
