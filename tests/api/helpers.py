"""Helpers shared by the API tests: task payloads, lifecycle actions and tasks in each state."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Api, Owner
from tests.targets import Target

FAR = 3_600_000  # ms: a task that will not fall due during a test
STATES = ("RUNNING", "PAUSED", "SUCCESS", "ERROR", "REVOKED")


def request(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "method": "GET", **extra}


def payload(url: str, delay: int = FAR, **config: Any) -> dict[str, Any]:
    return {"httpRequest": request(url), "config": {"executionDelay": delay, **config}}


def act(api: Api, owner: Owner, action: str, task_id: str, body: Any = None) -> httpx.Response:
    """Call one lifecycle endpoint by name."""
    headers = owner.headers
    path = f"/v1/queues/{task_id}"
    if action == "get":
        return api.http.get(path, headers=headers)
    if action == "config":
        return api.http.get(f"{path}/config", headers=headers)
    if action == "delete":
        return api.http.delete(path, headers=headers)
    if action == "execute":
        return api.http.post(f"{path}/execute", headers=headers)
    if action == "edit":
        edit = body if body is not None else {"metadata": {"edited": "yes"}}
        return api.http.patch(path, json=edit, headers=headers)
    assert action in ("pause", "resume", "revoke"), action
    return api.http.patch(f"{path}/{action}", headers=headers)


def make_task(api: Api, owner: Owner, target: Target, state: str) -> dict[str, Any]:
    """A task of `owner` brought into `state` through the API."""
    if state in ("SUCCESS", "ERROR"):
        path = "/cb" if state == "SUCCESS" else "/cb/error"
        task = api.task(owner, {**payload(target.url(path), delay=1), "metadata": {"tag": "x"}})
        return api.wait_state(owner, task["id"], state)
    task = api.task(owner, {**payload(target.url("/cb")), "metadata": {"tag": "x"}})
    if state == "PAUSED":
        assert act(api, owner, "pause", task["id"]).status_code == 200
    elif state == "REVOKED":
        assert act(api, owner, "revoke", task["id"]).status_code == 200
    found = api.get(owner, task["id"])
    assert found["state"] == state
    return found
