"""TasksClient and AsyncTasksClient against a real server: each test runs with both
(see conftest.py), every answer read back as the server's own structs."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest

from tasks_server.api.schemas import ListQuery
from tasks_server.client import (
    Config,
    HttpRequest,
    ListOptions,
    OwnerCreated,
    TaskCounts,
    TasksClient,
    TasksError,
    TaskView,
)
from tests.client.conftest import Connect, owner_name, wait_state
from tests.targets import Reply, Target

LATER = Config(execution_delay=600_000)  # never due while a test runs
MASK = "********"


def later(tasks: TasksClient, target: Target, count: int = 1) -> list[TaskView]:
    return [
        tasks.register(HttpRequest(url=target.url(), method="GET"), LATER) for _ in range(count)
    ]


def test_register_owner_answers_its_key_and_the_client_uses_it(connect: Connect) -> None:
    client = connect()
    owner = client.register_owner(owner_name())
    assert isinstance(owner, OwnerCreated)
    assert len(owner.id) == 26 and len(owner.key) == 64
    assert client.stats() == TaskCounts(RUNNING=0, PAUSED=0, SUCCESS=0, ERROR=0, REVOKED=0)
    # and another client with the same credentials is the same owner
    assert connect(owner.id, owner.key).stats().RUNNING == 0


def test_a_registered_task_is_delivered_and_its_attempt_kept(
    tasks: TasksClient, target: Target
) -> None:
    target.script("/hook", Reply(201, b"thanks"))
    task = tasks.register(
        HttpRequest(url=target.url("/hook"), method="POST", data={"hello": "world"}),
        Config(execution_delay=50),
        {"tag": "welcome"},
    )
    assert task.state == "RUNNING" and task.metadata == {"tag": "welcome"}
    done = wait_state(tasks, task.id, "SUCCESS", "ERROR")
    assert (done.state, done.status_code, done.attempts) == ("SUCCESS", 201, 1)
    assert base64.b64decode(done.response or "") == b"thanks"
    [arrival] = target.arrivals_at("/hook")
    assert json.loads(arrival.body) == {"hello": "world"}
    assert arrival.header("X-Tasks-Queue-Id") == task.id
    [attempt] = tasks.attempts(task.id)
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 201, None)
    assert attempt.remote_address == f"127.0.0.1:{target.port}"


def test_plain_mappings_are_taken_as_well_as_structs(tasks: TasksClient, target: Target) -> None:
    task = tasks.register(
        {"url": target.url("/plain"), "method": "PUT", "data": "text"}, {"retry": 2}
    )
    assert task.retry_limit == 2
    wait_state(tasks, task.id, "SUCCESS")
    assert target.arrivals_at("/plain")[0].body == b"text"


def test_attempts_are_newest_first_and_page_back(tasks: TasksClient, target: Target) -> None:
    target.script("/flaky", Reply(500, b"no"), Reply(503, b"later"), Reply(200, b"fine"))
    task = tasks.register(
        HttpRequest(url=target.url("/flaky"), method="GET"), Config(retry=2, retry_interval=20)
    )
    wait_state(tasks, task.id, "SUCCESS")
    history = tasks.attempts(task.id)
    assert [(a.number, a.status_code) for a in history] == [(3, 200), (2, 503), (1, 500)]
    assert [a.number for a in tasks.attempts(task.id, limit=1, before=3)] == [2]


def test_list_filters_orders_and_pages(tasks: TasksClient, target: Target) -> None:
    registered = [task.id for task in later(tasks, target, 5)]
    assert [t.id for t in tasks.list()] == registered  # createdAt, ascending
    assert [t.id for t in tasks.list(limit=2, offset=1)] == registered[1:3]
    assert [t.id for t in tasks.list(sort="desc", limit=2)] == registered[:-3:-1]
    assert [t.id for t in tasks.list(after=registered[2])] == registered[3:]
    tasks.pause(registered[0])
    assert [t.id for t in tasks.list(state="PAUSED")] == registered[:1]
    assert [t.id for t in tasks.list(host="127.0.0.1", state="RUNNING")] == registered[1:]


def test_iter_tasks_goes_through_every_page(tasks: TasksClient, target: Target) -> None:
    registered = [task.id for task in later(tasks, target, 7)]
    assert [t.id for t in tasks.iter_tasks(limit=3)] == registered
    assert [t.id for t in tasks.iter_tasks(limit=2, sort="desc")] == registered[::-1]
    assert [t.id for t in tasks.iter_tasks(limit=7)] == registered  # one full page, one empty
    assert [t.id for t in tasks.iter_tasks(state="SUCCESS")] == []


def test_deleting_tasks_while_iterating_still_sees_them_all(
    tasks: TasksClient, target: Target
) -> None:
    registered = [task.id for task in later(tasks, target, 7)]
    seen = []
    for task in tasks.iter_tasks(limit=2):
        tasks.delete(task.id)  # the last task of a page is where the next one starts
        seen.append(task.id)
    assert seen == registered
    assert tasks.list() == []


def test_config_is_the_stored_request_with_secrets_masked(
    tasks: TasksClient, target: Target
) -> None:
    task = tasks.register(
        {
            "url": target.url("/secret"),
            "method": "POST",
            "headers": {"Authorization": "Bearer abc", "X-Plain": "shown"},
            "authBasic": {"username": "me", "password": "hunter22"},
        },
        {"executionDelay": 600_000, "retry": 3},
    )
    stored = tasks.config(task.id)
    assert stored.http_request.url == target.url("/secret")
    assert stored.http_request.headers == {"Authorization": MASK, "X-Plain": "shown"}
    assert stored.http_request.auth_basic is not None
    assert stored.http_request.auth_basic.username == "me"
    assert stored.http_request.auth_basic.password == MASK
    assert (stored.config.retry, stored.config.timeout) == (3, 30000)  # defaults included


def test_edit_is_a_merge_patch(tasks: TasksClient, target: Target) -> None:
    task = tasks.register(
        HttpRequest(url=target.url("/a"), method="GET"), LATER, {"tag": "one", "team": "x"}
    )
    edited = tasks.edit(
        task.id,
        {
            "httpRequest": {"url": target.url("/b")},
            "config": {"retry": 4},
            "metadata": {"tag": None},
        },
    )
    assert (edited.retry_limit, edited.metadata) == (4, {"team": "x"})
    assert tasks.config(task.id).http_request.url == target.url("/b")


def test_pause_resume_execute_revoke_delete(tasks: TasksClient, target: Target) -> None:
    first, second = later(tasks, target, 2)
    tasks.pause(first.id)
    assert tasks.get(first.id).state == "PAUSED"
    resumed = tasks.resume(first.id)
    assert isinstance(resumed, TaskView) and resumed.state == "RUNNING"
    tasks.execute(first.id)
    assert wait_state(tasks, first.id, "SUCCESS").attempts == 1
    tasks.revoke(second.id)
    assert tasks.get(second.id).state == "REVOKED"
    counts = tasks.stats()
    assert (counts.SUCCESS, counts.REVOKED, counts.RUNNING) == (1, 1, 0)
    tasks.delete(second.id)
    with pytest.raises(TasksError) as gone:
        tasks.get(second.id)
    assert (gone.value.status, gone.value.message) == (404, "Task not found")


def test_an_action_the_state_forbids_is_a_409(tasks: TasksClient, target: Target) -> None:
    [task] = later(tasks, target)
    with pytest.raises(TasksError) as refused:
        tasks.resume(task.id)
    assert refused.value.status == 409
    assert refused.value.message == "Cannot resume a RUNNING task (needs PAUSED)"
    assert refused.value.action == "Do not retry without fixing the problem"
    assert refused.value.fields == {}


def test_bad_input_is_a_400_naming_each_field(tasks: TasksClient) -> None:
    with pytest.raises(TasksError) as bad:
        tasks.register(HttpRequest(url="not a url", method="GET"), {"retry": -1, "nope": 1})
    assert bad.value.status == 400
    assert bad.value.fields["httpRequest.url"] == "Expected an absolute http or https URL"
    assert set(bad.value.fields) >= {"httpRequest.url", "config.retry", "config.nope"}
    assert "httpRequest.url" in str(bad.value)
    with pytest.raises(TasksError) as bad_id:
        tasks.get("not-a-task-id")
    assert bad_id.value.status == 400 and "id" in bad_id.value.fields


def test_a_wrong_key_is_a_401_and_missing_credentials_a_403(
    connect: Connect, tasks: TasksClient
) -> None:
    assert tasks.owner_id is not None
    with pytest.raises(TasksError) as wrong:
        connect(tasks.owner_id, "A" * 64).stats()
    assert wrong.value.status == 401
    assert wrong.value.message == "The request did not include valid authentication"
    with pytest.raises(TasksError) as missing:
        connect().list()
    assert missing.value.status == 403


def test_a_taken_owner_name_is_a_409(connect: Connect) -> None:
    name = owner_name()
    connect().register_owner(name)
    with pytest.raises(TasksError) as taken:
        connect().register_owner(name)
    assert (taken.value.status, taken.value.message) == (409, "Owner has already registered")


def test_list_options_are_the_list_query_fields() -> None:
    # ListOptions restates ListQuery for typed keyword arguments: they must not drift apart
    assert set(ListOptions.__annotations__) == {f.name for f in msgspec.structs.fields(ListQuery)}
