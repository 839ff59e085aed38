"""Owner isolation, over every endpoint that names a task or an owner: owner B using owner
A's task id or name gets 404, and nothing of A's changes (task, stored request, owner, key),
in every task state.

The table below must list every such route of the app: a new endpoint that is not added
here fails `test_the_table_covers_every_route_that_names_a_task_or_an_owner`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tasks_server.api.routes import ROUTES
from tests.api.helpers import STATES, make_task
from tests.conftest import BOTH_STORES, Api, Owner
from tests.targets import Target

pytestmark = BOTH_STORES

# every endpoint naming a task or an owner: (method, path template, JSON body or None).
# The bodies would change A's things if they were let through.
EDIT = {
    "httpRequest": {"url": "http://127.0.0.1:9/intruder", "method": "POST", "data": "x"},
    "config": {"executionDelay": 1, "retry": 3},
    "metadata": {"tag": "intruder"},
}
ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/v1/queues/{task_id}", None),
    ("GET", "/v1/queues/{task_id}/config", None),
    ("GET", "/v1/queues/{task_id}/attempts", None),
    ("PATCH", "/v1/queues/{task_id}", EDIT),
    ("PATCH", "/v1/queues/{task_id}/pause", None),
    ("PATCH", "/v1/queues/{task_id}/resume", None),
    ("PATCH", "/v1/queues/{task_id}/revoke", None),
    ("POST", "/v1/queues/{task_id}/execute", None),
    ("DELETE", "/v1/queues/{task_id}", None),
    ("GET", "/v1/owners/{name}", None),
    ("POST", "/v1/owners/{name}/rotate-key", None),
    ("DELETE", "/v1/owners/{name}", None),
]


def test_the_table_covers_every_route_that_names_a_task_or_an_owner() -> None:
    routes = {
        (route.method, route.path)
        for route in ROUTES
        if "{task_id}" in route.path or "{name}" in route.path
    }
    assert routes == {(method, path) for method, path, _ in ENDPOINTS}


def call(api: Api, who: Owner, method: str, path: str, body: Any, a: Owner, task_id: str) -> Any:
    url = path.format(task_id=task_id, name=a.name)
    if body is None:
        return api.http.request(method, url, headers=who.headers)
    return api.http.request(method, url, json=body, headers=who.headers)


def snapshot(api: Api, a: Owner, task_id: str) -> dict[str, Any]:
    """Everything of A's that an intruder could change, read as A."""

    def read(path: str) -> Any:
        reply = api.http.get(path, headers=a.headers)
        assert reply.status_code == 200, reply.text  # also: A's key still works
        return reply.json()

    return {
        "task": read(f"/v1/queues/{task_id}"),
        "config": read(f"/v1/queues/{task_id}/config"),
        "owner": read(f"/v1/owners/{a.name}"),
        "list": read("/v1/queues"),
    }


@pytest.mark.parametrize("state", STATES)
def test_another_owners_task_and_name_are_404_on_every_endpoint(
    api: Api, target: Target, state: str
) -> None:
    a = api.owner("owner-a")
    b = api.owner("owner-b")
    task = make_task(api, a, target, state)
    arrivals = len(target.arrivals)
    before = snapshot(api, a, task["id"])
    for method, path, body in ENDPOINTS:
        reply: httpx.Response = call(api, b, method, path, body, a, task["id"])
        assert reply.status_code == 404, (method, path, reply.text)
        assert reply.json()["message"] in ("Task not found", "Owner not found")
    assert snapshot(api, a, task["id"]) == before
    assert len(target.arrivals) == arrivals, "an intruder's execute must not send A's request"
    # B sees none of it either, and B's own things are untouched by what it tried
    assert api.http.get("/v1/queues", headers=b.headers).json() == []
    assert api.http.get(f"/v1/owners/{b.name}", headers=b.headers).status_code == 200
