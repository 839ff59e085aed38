"""Every attempt is kept in its task's history, with libcurl's timings, and the owner's
tasks are counted by state: GET /v1/queues/{id}/attempts and GET /v1/queues/stats, on
both stores."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

from tasks_server.config import Settings
from tests.conftest import BOTH_STORES, Api, Owner, assert_error
from tests.database import rows
from tests.pg import psql
from tests.targets import Reply, Target, wait_until

pytestmark = BOTH_STORES

STATES = ("RUNNING", "PAUSED", "SUCCESS", "ERROR", "REVOKED")


def register(api: Api, owner: Owner, url: str, **config: Any) -> dict[str, Any]:
    return api.task(owner, {"httpRequest": {"url": url, "method": "POST"}, "config": config})


def attempts(api: Api, owner: Owner, task_id: str, query: str = "") -> list[dict[str, Any]]:
    reply = api.http.get(f"/v1/queues/{task_id}/attempts{query}", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    found: list[dict[str, Any]] = reply.json()
    return found


def counts(api: Api, owner: Owner) -> dict[str, int]:
    reply = api.http.get("/v1/queues/stats", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    found: dict[str, int] = reply.json()
    return found


def test_each_attempt_is_kept_newest_first_with_its_status_timings_and_address(
    api: Api, owner: Owner, target: Target
) -> None:
    target.script("/x", Reply(500, b"no"), Reply(503, b"later"), Reply(200, b"fine"))
    task = register(api, owner, target.url("/x"), retry=2, retryInterval=50)
    api.wait_state(owner, task["id"], "SUCCESS")
    history = attempts(api, owner, task["id"])
    assert [a["number"] for a in history] == [3, 2, 1]
    assert [a["statusCode"] for a in history] == [200, 503, 500]
    assert [a["error"] for a in history] == [None, "HTTP 503", "HTTP 500"]
    assert [a["responseBytes"] for a in history] == [4, 5, 2]
    for attempt in history:
        assert attempt["httpVersion"] == "1.1"
        assert attempt["remoteAddress"] == f"127.0.0.1:{target.port}"
        assert attempt["dueAt"] <= attempt["startedAt"] <= attempt["endedAt"]
        timings = attempt["timings"]
        assert set(timings) == {"dnsMs", "connectMs", "tlsMs", "firstByteMs", "totalMs"}
        assert timings["tlsMs"] == 0  # plain HTTP
        assert 0 < timings["totalMs"] < 5000
        assert sum(timings[k] for k in ("dnsMs", "connectMs", "firstByteMs")) <= timings["totalMs"]
    # a retry is due when the previous attempt ended plus the interval
    assert history[1]["dueAt"] >= history[2]["endedAt"] + 50
    # pages: the newest first, then the ones below the last number seen
    assert [a["number"] for a in attempts(api, owner, task["id"], "?limit=2")] == [3, 2]
    assert [a["number"] for a in attempts(api, owner, task["id"], "?limit=2&before=2")] == [1]


def test_a_transport_failure_is_kept_with_libcurls_words(api: Api, owner: Owner) -> None:
    task = register(api, owner, "http://127.0.0.1:9/closed")
    done = api.wait_state(owner, task["id"], "ERROR")
    (only,) = attempts(api, owner, task["id"])
    assert only["statusCode"] == 0
    assert only["error"] == done["error"]
    assert "curl error 7" in only["error"]
    assert only["httpVersion"] is None


def test_only_the_newest_attempt_history_are_kept(
    start_server: Callable[..., Api], target: Target
) -> None:
    api = start_server(attempt_history=2)
    owner = api.owner()
    target.script("/x", always=Reply(500, b""))
    task = register(api, owner, target.url("/x"), retry=3, retryInterval=20)
    api.wait_state(owner, task["id"], "ERROR")
    assert [a["number"] for a in attempts(api, owner, task["id"])] == [4, 3]


def test_attempt_history_zero_keeps_none_and_the_outcome_still_lands(
    start_server: Callable[..., Api], target: Target
) -> None:
    api = start_server(attempt_history=0)
    owner = api.owner()
    target.script("/x", Reply(500, b""), Reply(200, b"ok"))
    task = register(api, owner, target.url("/x"), retry=1, retryInterval=20)
    done = api.wait_state(owner, task["id"], "SUCCESS")
    assert done["retryCount"] == 1
    assert attempts(api, owner, task["id"]) == []
    assert counts(api, owner)["SUCCESS"] == 1


def test_an_attempt_aborted_by_a_pause_is_kept_as_aborted(
    api: Api, owner: Owner, target: Target
) -> None:
    target.script("/slow", always=Reply(200, b"late", delay=30))
    task = register(api, owner, target.url("/slow"))
    wait_until(lambda: target.arrivals_at("/slow"), timeout=10)
    reply = api.http.patch(f"/v1/queues/{task['id']}/pause", headers=owner.headers)
    assert reply.status_code == 200, reply.text

    def aborted() -> list[dict[str, Any]] | None:
        found = attempts(api, owner, task["id"])
        return found or None

    (only,) = wait_until(aborted, timeout=10)
    assert only["error"] == "aborted"
    assert only["statusCode"] == 0
    assert api.get(owner, task["id"])["state"] == "PAUSED"


def test_the_history_goes_with_its_task_and_is_the_owners_alone(
    api: Api, owner: Owner, target: Target
) -> None:
    target.script("/x", always=Reply(200, b"ok"))
    task = register(api, owner, target.url("/x"))
    api.wait_state(owner, task["id"], "SUCCESS")
    other = api.owner()
    reply = api.http.get(f"/v1/queues/{task['id']}/attempts", headers=other.headers)
    assert_error(reply, 404, "Task not found")
    assert rows(api.settings, "SELECT count(*) FROM attempt WHERE task_id = ?", task["id"]) == [
        (1,)
    ]
    assert api.http.delete(f"/v1/queues/{task['id']}", headers=owner.headers).status_code == 200
    assert rows(api.settings, "SELECT count(*) FROM attempt WHERE task_id = ?", task["id"]) == [
        (0,)
    ]
    reply = api.http.get(f"/v1/queues/{task['id']}/attempts", headers=owner.headers)
    assert_error(reply, 404, "Task not found")


def test_bad_paging_is_named(api: Api, owner: Owner) -> None:
    task = register(api, owner, "http://127.0.0.1:9/x", executionDelay=60_000)
    for query, field in (("?limit=0", "limit"), ("?limit=101", "limit"), ("?before=x", "before")):
        reply = api.http.get(f"/v1/queues/{task['id']}/attempts{query}", headers=owner.headers)
        body = assert_error(reply, 400)
        assert field in body["fields"], body


def test_counts_follow_every_change_of_state(api: Api, owner: Owner, target: Target) -> None:
    target.script("/ok", always=Reply(200, b""))
    target.script("/bad", always=Reply(500, b""))
    assert counts(api, owner) == dict.fromkeys(STATES, 0)
    later = [register(api, owner, target.url("/ok"), executionDelay=600_000) for _ in range(4)]
    done = register(api, owner, target.url("/ok"))
    failed = register(api, owner, target.url("/bad"))
    api.wait_state(owner, done["id"], "SUCCESS")
    api.wait_state(owner, failed["id"], "ERROR")
    api.http.patch(f"/v1/queues/{later[0]['id']}/pause", headers=owner.headers)
    api.http.patch(f"/v1/queues/{later[1]['id']}/revoke", headers=owner.headers)
    api.http.delete(f"/v1/queues/{later[2]['id']}", headers=owner.headers)
    expected = {"RUNNING": 1, "PAUSED": 1, "SUCCESS": 1, "ERROR": 1, "REVOKED": 1}
    assert counts(api, owner) == expected
    assert counts(api, api.owner()) == dict.fromkeys(STATES, 0)  # another owner's: its own


def test_pages_follow_the_last_task_seen(api: Api, owner: Owner) -> None:
    ids = [
        register(api, owner, "http://127.0.0.1:9/x", executionDelay=600_000)["id"] for _ in range(7)
    ]
    for sort in ("asc", "desc"):
        whole = api.http.get(f"/v1/queues?limit=100&sort={sort}", headers=owner.headers).json()
        expected = [task["id"] for task in whole]  # one page: the order pages must follow
        assert sorted(expected) == sorted(ids)
        keys = [(task["createdAt"], task["id"]) for task in whole]
        assert keys == sorted(keys, reverse=sort == "desc")  # by time, ties by id
        seen: list[str] = []
        after = ""
        while True:
            query = f"?limit=3&sort={sort}" + (f"&after={after}" if after else "")
            page = api.http.get(f"/v1/queues{query}", headers=owner.headers).json()
            seen += [task["id"] for task in page]
            if len(page) < 3:
                break
            after = page[-1]["id"]
        assert seen == expected
    reply = api.http.get("/v1/queues?after=not-an-id", headers=owner.headers)
    assert "after" in assert_error(reply, 400)["fields"]


def test_lists_filter_on_created_and_due_time_ranges(api: Api, owner: Owner) -> None:
    tasks = []
    for delay in (300_000, 100_000, 200_000):
        tasks.append(register(api, owner, "http://127.0.0.1:9/x", executionDelay=delay))
        time.sleep(0.002)  # each in a millisecond of its own
    created = sorted(task["createdAt"] for task in tasks)
    assert len(set(created)) == 3

    def listed(query: str) -> list[str]:
        reply = api.http.get(f"/v1/queues?limit=100{query}", headers=owner.headers)
        assert reply.status_code == 200, reply.text
        return [task["id"] for task in reply.json()]

    ids = [task["id"] for task in tasks]
    assert listed(f"&createdFrom={created[1]}") == ids[1:]
    assert listed(f"&createdTo={created[1]}") == ids[:1]
    due = sorted(task["estimateExecutionAt"] for task in tasks)
    assert listed(f"&dueFrom={due[1]}&order=estimateExecutionAt") == [ids[2], ids[0]]
    assert listed(f"&dueTo={due[1]}&dueFrom={due[0]}") == [ids[1]]
    assert listed(f"&dueFrom={due[1]}&order=estimateExecutionAt&after={ids[2]}") == [ids[0]]
    reply = api.http.get("/v1/queues?createdFrom=yesterday", headers=owner.headers)
    assert "createdFrom" in assert_error(reply, 400)["fields"]


def test_lists_filter_on_the_target_host_and_an_edit_moves_it(api: Api, owner: Owner) -> None:
    here = register(api, owner, "http://127.0.0.1:9/a", executionDelay=600_000)["id"]
    there = register(api, owner, "http://LocalHost:9/b", executionDelay=600_000)["id"]

    def listed(host: str) -> list[str]:
        reply = api.http.get("/v1/queues", params={"host": host}, headers=owner.headers)
        assert reply.status_code == 200, reply.text
        return [task["id"] for task in reply.json()]

    assert listed("localhost") == [there]
    assert listed(" LOCALHOST ") == [there]
    assert listed("127.0.0.1") == [here]
    assert listed("example.com") == []
    edit = {"httpRequest": {"url": "http://127.0.0.1:9/moved", "method": "POST"}}
    reply = api.http.patch(f"/v1/queues/{there}", json=edit, headers=owner.headers)
    assert reply.status_code == 200, reply.text
    assert listed("127.0.0.1") == [here, there]
    assert listed("localhost") == []


def test_tasks_stored_before_the_host_column_get_theirs(
    start_server: Callable[..., Api], target: Target
) -> None:
    api = start_server()
    owner = api.owner()
    old = register(api, owner, target.url("/old"), executionDelay=600_000)["id"]
    forget_hosts(api.settings)
    again = start_server()  # its start fills them in

    def filled() -> bool:
        reply = again.http.get("/v1/queues?host=127.0.0.1", headers=owner.headers)
        return [task["id"] for task in reply.json()] == [old]

    wait_until(filled, timeout=10)


def forget_hosts(settings: Settings) -> None:
    """The rows as a server before the target_host column left them."""
    if settings.database_url:
        schema = settings.database_url.rsplit("search_path=", 1)[1]
        psql(f"UPDATE {schema}.task SET target_host = ''")
        return
    with closing(sqlite3.connect(settings.path_sqlite)) as conn, conn:
        conn.execute("UPDATE task SET target_host = ''")
