"""Tasks due together are claimed together: each is sent once."""

from __future__ import annotations

import time

from tests.conftest import BOTH_STORES, Api, Owner
from tests.targets import Target

pytestmark = BOTH_STORES

COUNT = 96  # one claim takes them all


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_tasks_due_together_are_each_sent_once(api: Api, owner: Owner, target: Target) -> None:
    due = now_ms() + 1500  # after all are registered: one claim takes them together
    ids = [
        api.task(
            owner,
            {
                "httpRequest": {"url": target.url(f"/batch/{n}"), "method": "GET"},
                "config": {"executeAt": due},
            },
        )["id"]
        for n in range(COUNT)
    ]
    target.wait_for(COUNT, timeout=20)
    for task_id in ids:
        assert api.wait_state(owner, task_id, "SUCCESS")["attempts"] == 1
    paths = sorted(arrival.path for arrival in target.arrivals)
    assert paths == sorted(f"/batch/{n}" for n in range(COUNT))  # each exactly once
