"""Task lifecycle through the HTTP API: every action in every state, timing of
pause/resume/execute, edit, list and the masked config, against a real server
and a real recording target."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ulid import ULID

import tests.conftest as conftest
from tasks_server.dispatch import capabilities
from tests.api.helpers import FAR, STATES, act, make_task, payload, request
from tests.conftest import BOTH_STORES, Api, Owner, assert_error
from tests.targets import Reply, Target, wait_until

pytestmark = BOTH_STORES


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sleep_until_ms(moment: float) -> None:
    """Wait for a wall-clock moment (short waits only: the tests choose it)."""
    wait_until(lambda: now_ms() >= moment, timeout=10, interval=0.005)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, Owner]]:
    """One server for the tests that only read or are refused (nothing fires)."""
    path: Path = tmp_path_factory.mktemp("shared")
    settings = conftest.make_settings(path)
    server = conftest.ServerThread(settings)
    server.start()
    api = Api(f"http://127.0.0.1:{server.port}", settings)
    yield api, api.owner()
    api.close()
    server.stop()


# ---- the action x state table (reference section 3.1, our codes) ----

ALLOWED: dict[str, dict[str, str]] = {
    # action -> {state it is allowed in: the state it leaves the task in}
    "execute": {"RUNNING": "RUNNING"},
    "pause": {"RUNNING": "PAUSED"},
    "resume": {"PAUSED": "RUNNING"},
    "revoke": {"RUNNING": "REVOKED", "PAUSED": "REVOKED"},
    "edit": {"RUNNING": "RUNNING", "PAUSED": "PAUSED"},
    "delete": {state: "GONE" for state in STATES},
    "get": {state: state for state in STATES},
}
MATRIX = [(action, state) for action in ALLOWED for state in STATES]


@pytest.mark.parametrize(("action", "state"), MATRIX, ids=[f"{a}-{s}" for a, s in MATRIX])
def test_action_in_state(api: Api, owner: Owner, target: Target, action: str, state: str) -> None:
    task = make_task(api, owner, target, state)
    reply = act(api, owner, action, task["id"])
    allowed = ALLOWED[action]
    if state not in allowed:
        body = assert_error(reply, 409)
        assert state in body["message"]
        after = api.get(owner, task["id"])
        assert after == task, "a refused action must leave the task unchanged"
        return
    assert reply.status_code == 200, reply.text
    if action == "delete":
        assert reply.json() == {"status": "Done"}
        assert_error(act(api, owner, "get", task["id"]), 404)
        return
    if action in ("get", "resume", "edit"):
        body = reply.json()
        assert body["id"] == task["id"]
        assert body["state"] == allowed[state]
    else:
        assert reply.json() == {"status": "Done"}
    after = api.get(owner, task["id"])
    if action == "execute":  # it runs at once: in flight, or already done
        assert after["state"] in ("RUNNING", "SUCCESS")
        assert api.wait_state(owner, task["id"], "SUCCESS")["attempts"] == 1
        return
    assert after["state"] == allowed[state]
    if action == "edit":
        assert after["metadata"] == {"tag": "x", "edited": "yes"}  # a merge patch
    if action == "get":
        assert after == task


ACTIONS = ("get", "config", "execute", "pause", "resume", "revoke", "edit", "delete")


@pytest.mark.parametrize("action", ACTIONS)
def test_unknown_id_is_404(shared: tuple[Api, Owner], action: str) -> None:
    api, owner = shared
    assert_error(act(api, owner, action, str(ULID())), 404)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("bad_id", ["invalid-queue-id", "191E27DB6911726081775249", "0" * 27])
def test_malformed_id_is_400(shared: tuple[Api, Owner], action: str, bad_id: str) -> None:
    api, owner = shared
    assert_error(act(api, owner, action, bad_id), 400)


def test_lowercase_id_is_the_same_task(api: Api, owner: Owner, target: Target) -> None:
    task = api.task(owner, payload(target.url()))
    assert api.get(owner, task["id"].lower())["id"] == task["id"]


@pytest.mark.parametrize("state", ["RUNNING", "PAUSED", "SUCCESS"])
def test_another_owners_task_is_404_everywhere(
    api: Api, owner: Owner, target: Target, state: str
) -> None:
    task = make_task(api, owner, target, state)
    intruder = api.owner("intruder")
    for action in ACTIONS:
        assert_error(act(api, intruder, action, task["id"]), 404)
    assert api.get(owner, task["id"]) == task
    listed = api.http.get("/v1/queues", headers=intruder.headers)
    assert listed.status_code == 200
    assert listed.json() == []
    owner_view = api.http.get(f"/v1/owners/{owner.name}", headers=owner.headers).json()
    assert owner_view["tasksInQueue"] == (1 if state in ("RUNNING", "PAUSED") else 0)


# ---- pause / resume ----


def test_paused_task_does_not_fire(api: Api, owner: Owner, target: Target) -> None:
    task = api.task(owner, payload(target.url(), delay=1200))
    reply = act(api, owner, "pause", task["id"])
    assert reply.status_code == 200
    assert reply.json() == {"status": "Done"}
    paused = api.get(owner, task["id"])
    assert paused["state"] == "PAUSED"
    assert paused["estimateEndAt"] > 0  # the pause time
    sleep_until_ms(task["estimateExecutionAt"] + 700)
    assert target.arrivals == []
    assert api.get(owner, task["id"])["state"] == "PAUSED"


def test_resume_returns_task_and_keeps_wall_clock_due_time(
    api: Api, owner: Owner, target: Target
) -> None:
    task = api.task(owner, payload(target.url(), delay=1500))
    assert act(api, owner, "pause", task["id"]).status_code == 200
    reply = act(api, owner, "resume", task["id"])
    assert reply.status_code == 200
    resumed = reply.json()
    assert resumed["id"] == task["id"]
    assert resumed["state"] == "RUNNING"
    assert resumed["estimateEndAt"] == 0
    assert resumed["estimateExecutionAt"] == task["estimateExecutionAt"]
    (arrival,) = target.wait_for(1, timeout=10)
    # neither at once nor shifted by the pause: at the registered time
    assert arrival.at_ms >= task["estimateExecutionAt"] - 2
    assert arrival.at_ms < task["estimateExecutionAt"] + 700
    assert api.wait_state(owner, task["id"], "SUCCESS")["attempts"] == 1


def test_task_whose_time_passed_while_paused_runs_at_once(
    api: Api, owner: Owner, target: Target
) -> None:
    task = api.task(owner, payload(target.url(), delay=1500))
    assert act(api, owner, "pause", task["id"]).status_code == 200
    sleep_until_ms(task["estimateExecutionAt"] + 200)
    assert target.arrivals == []
    resumed_at = now_ms()
    reply = act(api, owner, "resume", task["id"])
    assert reply.status_code == 200
    assert reply.json()["state"] == "RUNNING"
    (arrival,) = target.wait_for(1, timeout=10)
    # the original would wait the ~1.4 s that remained at the pause
    assert arrival.at_ms - resumed_at < 700
    assert api.wait_state(owner, task["id"], "SUCCESS")["statusCode"] == 200


def test_pause_aborts_request_in_flight(api: Api, owner: Owner, target: Target) -> None:
    target.script("/slow", Reply(200, b"late", delay=2.0))
    task = api.task(owner, payload(target.url("/slow"), delay=1))
    (first,) = target.wait_for(1, "/slow")
    assert act(api, owner, "pause", task["id"]).status_code == 200
    # past the moment the target answers: the late answer must count for nothing
    sleep_until_ms(first.at_ms + 2500)
    paused = api.get(owner, task["id"])
    assert paused["state"] == "PAUSED"
    assert paused["statusCode"] == 0
    assert paused["response"] is None
    # resumed, the aborted attempt is made again (its time has passed)
    assert act(api, owner, "resume", task["id"]).status_code == 200
    target.wait_for(2, "/slow")
    done = api.wait_state(owner, task["id"], "SUCCESS", "ERROR")
    assert done["state"] == "SUCCESS"
    assert done["response"] == "b2s="  # base64("ok"): the second answer, not "late"


class SilentTarget:
    """Accepts one connection, reads the request, never answers; notes the hang-up."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.received = threading.Event()
        self.hung_up = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/silent"

    def _serve(self) -> None:
        conn, _ = self._sock.accept()
        conn.settimeout(15)
        with conn:
            try:
                if conn.recv(65536):
                    self.received.set()
                while conn.recv(65536):
                    pass
                self.hung_up.set()
            except OSError:
                pass

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def silent() -> Iterator[SilentTarget]:
    server = SilentTarget()
    yield server
    server.close()


@pytest.mark.parametrize("action", ["pause", "revoke", "delete"])
def test_action_closes_the_connection_of_a_request_in_flight(
    api: Api, owner: Owner, silent: SilentTarget, action: str
) -> None:
    task = api.task(owner, payload(silent.url(), delay=1))
    assert silent.received.wait(10)
    assert not silent.hung_up.wait(0.2)  # the request waits for its answer (timeout 30 s)
    assert act(api, owner, action, task["id"]).status_code == 200
    assert silent.hung_up.wait(3), f"{action} did not abort the request on the wire"


def test_pause_between_retries_then_resume_continues_retries(
    api: Api, owner: Owner, target: Target
) -> None:
    target.script("/flaky", Reply(500, b"no"), always=Reply(200, b"yes"))
    task = api.task(owner, payload(target.url("/flaky"), delay=1, retry=2, retryInterval=1200))
    waiting = wait_until(lambda: (t := api.get(owner, task["id"]))["retryCount"] == 1 and t)
    assert waiting["state"] == "RUNNING"
    assert waiting["statusCode"] == 500
    assert act(api, owner, "pause", task["id"]).status_code == 200
    sleep_until_ms(waiting["estimateNextRetryAt"] + 300)
    assert len(target.arrivals) == 1
    resumed = act(api, owner, "resume", task["id"]).json()
    assert resumed["retryCount"] == 1
    target.wait_for(2, "/flaky")
    done = api.wait_state(owner, task["id"], "SUCCESS", "ERROR")
    assert done["state"] == "SUCCESS"
    assert done["retryCount"] == 1
    assert target.arrivals[1].header("X-Tasks-Retry-Count") == "1"


# ---- revoke ----


@pytest.mark.parametrize("state", ["RUNNING", "PAUSED"])
def test_revoke(api: Api, owner: Owner, target: Target, state: str) -> None:
    task = make_task(api, owner, target, state)
    reply = act(api, owner, "revoke", task["id"])
    assert reply.status_code == 200
    assert reply.json() == {"status": "Done"}
    revoked = api.get(owner, task["id"])
    assert revoked["state"] == "REVOKED"
    assert revoked["estimateEndAt"] > 0
    assert revoked["statusCode"] == 0
    assert revoked["response"] is None
    assert_error(act(api, owner, "resume", task["id"]), 409)
    assert_error(act(api, owner, "revoke", task["id"]), 409)


def test_revoke_in_flight_aborts_and_stays_revoked(api: Api, owner: Owner, target: Target) -> None:
    target.script("/slow", Reply(200, b"late", delay=1.0))
    task = api.task(owner, payload(target.url("/slow"), delay=1))
    (first,) = target.wait_for(1, "/slow")
    assert act(api, owner, "revoke", task["id"]).status_code == 200
    sleep_until_ms(first.at_ms + 1500)
    revoked = api.get(owner, task["id"])
    assert revoked["state"] == "REVOKED"
    assert revoked["statusCode"] == 0
    assert revoked["response"] is None
    assert len(target.arrivals) == 1


# ---- execute ----


def test_execute_far_future_task_runs_once_at_once(api: Api, owner: Owner, target: Target) -> None:
    task = api.task(owner, payload(target.url()))
    sent_at = now_ms()
    reply = act(api, owner, "execute", task["id"])
    assert reply.status_code == 200
    assert reply.json() == {"status": "Done"}
    (arrival,) = target.wait_for(1, timeout=5)
    assert arrival.at_ms - sent_at < 1000
    done = api.wait_state(owner, task["id"], "SUCCESS")
    assert done["estimateExecutionAt"] < task["estimateExecutionAt"]
    assert done["estimateExecutionAt"] >= sent_at - 1
    assert done["attempts"] == 1
    sleep_until_ms(arrival.at_ms + 300)
    assert len(target.arrivals) == 1
    assert_error(act(api, owner, "execute", task["id"]), 409)


def test_execute_at_the_due_instant_runs_exactly_once(
    api: Api, owner: Owner, target: Target
) -> None:
    task = api.task(owner, payload(target.url(), delay=50))
    reply = act(api, owner, "execute", task["id"])
    # whether the timer or the execute came first, the task runs now, and once
    assert reply.status_code == 200, reply.text
    target.wait_for(1, timeout=5)
    sleep_until_ms(max(task["estimateExecutionAt"], target.arrivals[0].at_ms) + 500)
    assert len(target.arrivals) == 1
    done = api.wait_state(owner, task["id"], "SUCCESS")
    assert done["attempts"] == 1


def test_execute_while_in_flight_does_not_send_twice(
    api: Api, owner: Owner, target: Target
) -> None:
    target.script("/slow", Reply(200, b"ok", delay=0.6))
    task = api.task(owner, payload(target.url("/slow"), delay=1))
    target.wait_for(1, "/slow")
    reply = act(api, owner, "execute", task["id"])
    assert reply.status_code == 200, reply.text
    done = api.wait_state(owner, task["id"], "SUCCESS", "ERROR")
    assert done["state"] == "SUCCESS"
    sleep_until_ms(now_ms() + 300)
    assert len(target.arrivals) == 1
    assert done["attempts"] == 1


def test_execute_between_retries_runs_the_retry_now(api: Api, owner: Owner, target: Target) -> None:
    task = api.task(owner, payload(target.url("/cb/error"), delay=1, retry=1, retryInterval=FAR))
    waiting = wait_until(lambda: (t := api.get(owner, task["id"]))["retryCount"] == 1 and t)
    assert waiting["state"] == "RUNNING"
    assert act(api, owner, "execute", task["id"]).status_code == 200
    target.wait_for(2, "/cb/error", timeout=5)
    done = api.wait_state(owner, task["id"], "ERROR")
    assert done["statusCode"] == 404
    assert done["retryCount"] == 1
    assert done["attempts"] == 2


# ---- delete ----


@pytest.mark.parametrize("state", STATES)
def test_delete_in_every_state(api: Api, owner: Owner, target: Target, state: str) -> None:
    task = make_task(api, owner, target, state)
    reply = act(api, owner, "delete", task["id"])
    assert reply.status_code == 200
    assert reply.json() == {"status": "Done"}
    for action in ACTIONS:
        assert_error(act(api, owner, action, task["id"]), 404)
    assert api.http.get("/v1/queues", headers=owner.headers).json() == []


def test_deleted_task_does_not_fire(api: Api, owner: Owner, target: Target) -> None:
    task = api.task(owner, payload(target.url(), delay=1000))
    assert act(api, owner, "delete", task["id"]).status_code == 200
    sleep_until_ms(task["estimateExecutionAt"] + 500)
    assert target.arrivals == []


# ---- edit ----


def test_edit_paused_task_then_resume_sends_new_request(
    api: Api, owner: Owner, target: Target
) -> None:
    task = api.task(
        owner,
        {
            "httpRequest": request(target.url("/old"), headers={"X-Old": "1"}),
            "config": {"executionDelay": 1000},
            "metadata": {"keep": "me"},
        },
    )
    assert act(api, owner, "pause", task["id"]).status_code == 200
    edit = {"httpRequest": {"url": target.url("/new"), "method": "post", "data": "hello"}}
    edit["httpRequest"]["headers"] = {"X-New": "2", "X-Old": None}
    reply = act(api, owner, "edit", task["id"], edit)
    assert reply.status_code == 200, reply.text
    edited = reply.json()
    assert edited["state"] == "PAUSED"
    assert edited["metadata"] == {"keep": "me"}
    assert edited["estimateExecutionAt"] == task["estimateExecutionAt"]
    config = act(api, owner, "config", task["id"]).json()
    assert config["httpRequest"]["url"] == target.url("/new")
    assert config["httpRequest"]["method"] == "POST"
    assert config["httpRequest"]["headers"] == {"X-New": "2"}
    sleep_until_ms(task["estimateExecutionAt"] + 300)
    assert target.arrivals == []
    assert act(api, owner, "resume", task["id"]).status_code == 200
    (arrival,) = target.wait_for(1, timeout=5)
    assert arrival.path == "/new"
    assert arrival.method == "POST"
    assert arrival.body == b"hello"
    assert arrival.header("X-New") == "2"
    assert arrival.header("X-Old") is None
    assert api.wait_state(owner, task["id"], "SUCCESS")["statusCode"] == 200


def test_edit_running_task_with_new_delay_reschedules(
    api: Api, owner: Owner, target: Target
) -> None:
    task = api.task(owner, payload(target.url()))
    before = now_ms()
    reply = act(api, owner, "edit", task["id"], {"config": {"executionDelay": 400}})
    assert reply.status_code == 200, reply.text
    edited = reply.json()
    assert edited["state"] == "RUNNING"
    assert before + 400 <= edited["estimateExecutionAt"] <= now_ms() + 400
    (arrival,) = target.wait_for(1, timeout=5)
    assert arrival.at_ms >= edited["estimateExecutionAt"] - 2
    assert arrival.at_ms < edited["estimateExecutionAt"] + 700
    assert api.wait_state(owner, task["id"], "SUCCESS")["attempts"] == 1


def test_edit_delay_of_a_task_registered_with_execute_at(
    api: Api, owner: Owner, target: Target
) -> None:
    task = api.task(
        owner, {"httpRequest": request(target.url()), "config": {"executeAt": now_ms() + FAR}}
    )
    reply = act(api, owner, "edit", task["id"], {"config": {"executionDelay": 300}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["estimateExecutionAt"] <= now_ms() + 300
    target.wait_for(1, timeout=5)


def test_edit_running_task_with_new_execute_at(api: Api, owner: Owner, target: Target) -> None:
    task = api.task(owner, payload(target.url()))
    execute_at = now_ms() + 800
    reply = act(api, owner, "edit", task["id"], {"config": {"executeAt": execute_at}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["estimateExecutionAt"] == execute_at
    (arrival,) = target.wait_for(1, timeout=5)
    assert arrival.at_ms >= execute_at - 2


def test_edit_retry_options_keep_the_due_time(api: Api, owner: Owner, target: Target) -> None:
    task = api.task(owner, payload(target.url("/cb/error")))
    reply = act(api, owner, "edit", task["id"], {"config": {"retry": 1, "retryInterval": 100}})
    assert reply.status_code == 200, reply.text
    edited = reply.json()
    assert edited["retryLimit"] == 1
    assert edited["estimateExecutionAt"] == task["estimateExecutionAt"]
    assert act(api, owner, "execute", task["id"]).status_code == 200
    target.wait_for(2, "/cb/error", timeout=5)
    done = api.wait_state(owner, task["id"], "ERROR")
    assert done["retryCount"] == 1


@pytest.mark.parametrize(
    ("registered", "edit", "exponential"),
    [
        ({"retry": 1}, {"retry": 3}, True),
        ({"retry": 0}, {"retry": 2}, True),
        ({"retry": 1}, {"retry": 3, "retryExponential": False}, False),
        ({"retry": 3, "retryExponential": False}, {"retry": 5}, False),
        ({"retry": 3}, {"retry": 1}, False),
    ],
)
def test_edit_retry_count_takes_exponential_as_a_registration_would(
    shared: tuple[Api, Owner],
    target: Target,
    registered: dict[str, Any],
    edit: dict[str, Any],
    exponential: bool,
) -> None:
    api, owner = shared
    task = api.task(owner, payload(target.url("/x"), **registered))
    assert act(api, owner, "edit", task["id"], {"config": edit}).status_code == 200
    config = act(api, owner, "config", task["id"]).json()["config"]
    assert (config["retry"], config["retryExponential"]) == (edit["retry"], exponential)


@pytest.mark.parametrize(
    ("edit", "fields"),
    [
        (
            {"httpRequest": {"url": "ftp://example.com/x", "method": "FETCH"}},
            {"httpRequest.url", "httpRequest.method"},
        ),
        ({"config": {"retry": -1, "timeout": 5}}, {"config.retry", "config.timeout"}),
        ({"config": {"executeAt": 1000}}, {"config.executeAt"}),
        ({"config": {"executionDelay": "soon"}}, {"config.executionDelay"}),
        ({"config": {"bogus": 1}}, {"config.bogus"}),
        ({"httpRequest": {"headers": {"X-A": ""}}}, {"httpRequest.headers.X-A"}),
        ({"metadata": {"k": "v" * 600}}, {"metadata.k"}),
        ({"other": 1}, {"other"}),
        ({"config": 5}, {"config"}),
    ],
)
def test_edit_is_validated_like_register(
    shared: tuple[Api, Owner], target: Target, edit: dict[str, Any], fields: set[str]
) -> None:
    api, owner = shared
    task = api.task(owner, payload(target.url()))
    body = assert_error(act(api, owner, "edit", task["id"], edit), 400)
    assert set(body["fields"]) == fields, body
    assert api.get(owner, task["id"]) == task


def test_edit_with_empty_or_non_object_body_is_400(
    shared: tuple[Api, Owner], target: Target
) -> None:
    api, owner = shared
    task = api.task(owner, payload(target.url()))
    for edit in ({}, [], "x"):
        assert_error(act(api, owner, "edit", task["id"], edit), 400)


@pytest.mark.parametrize("state", ["SUCCESS", "ERROR", "REVOKED"])
def test_edit_finished_task_is_409(api: Api, owner: Owner, target: Target, state: str) -> None:
    task = make_task(api, owner, target, state)
    assert_error(act(api, owner, "edit", task["id"], {"config": {"executionDelay": 10}}), 409)
    assert api.get(owner, task["id"]) == task


def test_edit_in_flight_is_409(api: Api, owner: Owner, target: Target) -> None:
    target.script("/slow", Reply(200, b"ok", delay=1.0))
    task = api.task(owner, payload(target.url("/slow"), delay=1))
    target.wait_for(1, "/slow")
    body = assert_error(act(api, owner, "edit", task["id"], {"metadata": {"a": "b"}}), 409)
    assert "flight" in body["message"]
    done = api.wait_state(owner, task["id"], "SUCCESS")
    assert done["metadata"] is None


# ---- list ----


def _distinct_ms(previous: int) -> None:
    wait_until(lambda: now_ms() > previous, interval=0.001)


def ids(reply: httpx.Response) -> list[str]:
    assert reply.status_code == 200, reply.text
    return [item["id"] for item in reply.json()]


def test_list_order_sort_state_limit_offset(api: Api, owner: Owner, target: Target) -> None:
    # createdAt: t1 < t2 < t3; estimateExecutionAt: t2 < t3 < t1;
    # estimateEndAt: t3 (0, running) < t2 (its end) < t1 (pause time, later)
    t1 = api.task(owner, payload(target.url(), delay=2 * FAR))
    _distinct_ms(t1["createdAt"])
    t2 = api.task(owner, payload(target.url(), delay=1))
    _distinct_ms(t2["createdAt"])
    t3 = api.task(owner, payload(target.url(), delay=FAR))
    end2 = api.wait_state(owner, t2["id"], "SUCCESS")["estimateEndAt"]
    _distinct_ms(end2)
    assert act(api, owner, "pause", t1["id"]).status_code == 200
    other = api.owner("other-owner")
    api.task(other, payload(target.url()))

    def listed(query: str) -> list[str]:
        return ids(api.http.get(f"/v1/queues?{query}", headers=owner.headers))

    a, b, c = t1["id"], t2["id"], t3["id"]
    assert listed("") == [a, b, c]
    assert listed("order=createdAt") == [a, b, c]
    assert listed("order=createdAt&sort=desc") == [c, b, a]
    assert listed("order=estimateExecutionAt") == [b, c, a]
    assert listed("order=estimateExecutionAt&sort=DESC") == [a, c, b]
    assert listed("order=estimateEndAt&sort=Asc") == [c, b, a]
    assert listed("order=estimateEndAt&sort=desc") == [a, b, c]
    assert listed("limit=2") == [a, b]
    assert listed("limit=1&offset=1") == [b]
    assert listed("limit=2&offset=2") == [c]
    assert listed("offset=3") == []
    assert listed("offset=1001") == []
    assert listed("offset=123456789") == []
    assert listed("limit=1000") == [a, b, c]
    assert listed("state=paused") == [a]
    assert listed("state=Success") == [b]
    assert listed("state=RUNNING") == [c]
    assert listed("state=error") == []
    assert listed("state=running&order=createdAt&sort=desc&limit=5&offset=0") == [c]
    items = api.http.get("/v1/queues", headers=owner.headers).json()
    assert items[1] == api.get(owner, b)  # list items are full task objects


def test_list_default_limit_is_10(api: Api, owner: Owner, target: Target) -> None:
    made = [api.task(owner, payload(target.url()))["id"] for _ in range(11)]
    listed = ids(api.http.get("/v1/queues", headers=owner.headers))
    assert len(listed) == 10
    assert set(listed) <= set(made)
    assert len(ids(api.http.get("/v1/queues?limit=11", headers=owner.headers))) == 11


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=10000", "limit"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("order=createdat", "order"),
        ("order=id", "order"),
        ("sort=up", "sort"),
        ("state=DONE", "state"),
        ("bogus=1", "bogus"),
        ("limit=1&limit=2", "limit"),
        ("state=RUNNING&state=PAUSED", "state"),
    ],
)
def test_list_bad_query_is_400(shared: tuple[Api, Owner], query: str, field: str) -> None:
    api, owner = shared
    body = assert_error(api.http.get(f"/v1/queues?{query}", headers=owner.headers), 400)
    assert field in body["fields"], body


def test_list_fresh_owner_is_empty(api: Api, owner: Owner) -> None:
    reply = api.http.get(
        "/v1/queues?limit=20&offset=0&order=createdAt&sort=asc&state=SUCCESS",
        headers=owner.headers,
    )
    assert reply.status_code == 200
    assert reply.json() == []


# ---- config ----

CERT_B64 = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmNlcnQKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
KEY_B64 = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCnNlY3JldC1rZXkKLS0tLS1FTkQgUFJJVkFURSBLRVktLS0tLQo="
SECRETS = (
    "pw-basic-S3CR3T",
    "pw-digest-S3CR3T",
    "pw-ntlm-S3CR3T",
    "Bearer-S3CR3T-token",
    "cookie-S3CR3T",
    "pw-cert-S3CR3T",
    KEY_B64,
    "pw-proxy-basic-S3CR3T",
    "pw-proxy-digest-S3CR3T",
    "pw-proxy-ntlm-S3CR3T",
    "Basic-proxy-S3CR3T",
    "pw-trusted-S3CR3T",
    "aws-key-S3CR3T",
    "aws-secret-S3CR3T",
)


def test_config_shows_stored_request_with_secrets_masked(
    api: Api, owner: Owner, target: Target
) -> None:
    spec = {
        "httpRequest": {
            "url": target.url("/configured"),
            "method": "post",
            "query": {"page": "2"},
            "headers": {"Authorization": "Bearer-S3CR3T-token", "X-Visible": "shown"},
            "data": {"name": "value", "nested": {"n": 1}},
            "cookie": [{"name": "sid", "value": "cookie-S3CR3T"}],
            "authBasic": {"username": "alice", "password": "pw-basic-S3CR3T"},
            "authDigest": {"username": "bob", "password": "pw-digest-S3CR3T"},
            "authNtlm": {"username": "carol", "password": "pw-ntlm-S3CR3T"},
            "authAwsSigv4": {
                "provider1": "aws",
                "provider2": "amz",
                "region": "eu-west-1",
                "service": "s3",
                "key": "aws-key-S3CR3T",
                "secret": "aws-secret-S3CR3T",
            },
        },
        "config": {
            "executionDelay": FAR,
            "retry": 3,
            "retryInterval": 500,
            "timeout": 5000,
            "cert": {"value": CERT_B64, "password": "pw-cert-S3CR3T"},
            "key": KEY_B64,
            "locationTrusted": {"username": "dave", "password": "pw-trusted-S3CR3T"},
            "proxy": {"protocol": "HTTP", "host": "proxy.example", "port": 3128},
            "proxyHeaders": {"Proxy-Authorization": "Basic-proxy-S3CR3T", "X-Via": "p"},
            "proxyAuthBasic": {"username": "pat", "password": "pw-proxy-basic-S3CR3T"},
            "proxyAuthDigest": {"username": "pit", "password": "pw-proxy-digest-S3CR3T"},
            "proxyAuthNtlm": {"username": "pot", "password": "pw-proxy-ntlm-S3CR3T"},
        },
        "metadata": {"tag": "config-test"},
    }
    if not capabilities.NTLM:  # then refused with 400 (tests/dispatch/test_auth.py)
        del spec["httpRequest"]["authNtlm"], spec["config"]["proxyAuthNtlm"]
    task = api.task(owner, spec)
    reply = act(api, owner, "config", task["id"])
    assert reply.status_code == 200, reply.text
    for secret in SECRETS:
        assert secret not in reply.text, secret
    view = reply.json()
    req, config = view["httpRequest"], view["config"]
    # what is not secret is shown as stored (canonical forms)
    assert req["url"] == target.url("/configured")
    assert req["method"] == "POST"
    assert req["query"] == {"page": "2"}
    assert req["data"] == {"name": "value", "nested": {"n": 1}}
    assert req["headers"]["X-Visible"] == "shown"
    assert req["authBasic"]["username"] == "alice"
    assert req["authDigest"]["username"] == "bob"
    assert req["authAwsSigv4"]["region"] == "eu-west-1"
    assert req["cookie"][0]["name"] == "sid"
    assert config["executionDelay"] == FAR
    assert config["retry"] == 3
    assert config["retryInterval"] == 500
    assert config["timeout"] == 5000
    assert config["cert"]["value"] == CERT_B64
    assert config["proxy"] == {"protocol": "http", "host": "proxy.example", "port": 3128}
    assert config["proxyHeaders"]["X-Via"] == "p"
    assert config["proxyAuthBasic"]["username"] == "pat"
    assert config["locationTrusted"]["username"] == "dave"
    # defaults are shown too
    assert config["httpVersion"] == "1.1"
    assert config["redirectAttempts"] == 8
    # secrets are masked, in place
    masked = [
        req["headers"]["Authorization"],
        req["cookie"][0]["value"],
        req["authBasic"]["password"],
        req["authDigest"]["password"],
        req["authAwsSigv4"]["key"],
        req["authAwsSigv4"]["secret"],
        config["cert"]["password"],
        config["key"],
        config["locationTrusted"]["password"],
        config["proxyHeaders"]["Proxy-Authorization"],
        config["proxyAuthBasic"]["password"],
        config["proxyAuthDigest"]["password"],
    ]
    if capabilities.NTLM:
        masked += [req["authNtlm"]["password"], config["proxyAuthNtlm"]["password"]]
    assert set(masked) == {"********"}
    assert "metadata" not in view


def test_config_masks_cookie_file_and_lowercase_auth_header(
    api: Api, owner: Owner, target: Target
) -> None:
    spec = {
        "httpRequest": {
            **request(target.url()),
            "headers": {"authorization": "Basic-S3CR3T", "x-api-key": "apikey-S3CR3T"},
            "cookie": "c2lkPWNvb2tpZS1maWxlLVMzQ1IzVA==",
        },
        "config": {"executionDelay": FAR},
    }
    task = api.task(owner, spec)
    reply = act(api, owner, "config", task["id"])
    assert reply.status_code == 200
    for secret in ("Basic-S3CR3T", "apikey-S3CR3T", "c2lkPWNvb2tpZS1maWxlLVMzQ1IzVA=="):
        assert secret not in reply.text
    assert reply.json()["httpRequest"]["cookie"] == "********"


def test_config_masks_credential_query_parameters(api: Api, owner: Owner, target: Target) -> None:
    query = {"page": "3", "api_key": "qk-S3CR3T", "access_token": "qt-S3CR3T"}
    task = api.task(
        owner, {**payload(target.url()), "httpRequest": request(target.url(), query=query)}
    )
    reply = act(api, owner, "config", task["id"])
    assert "S3CR3T" not in reply.text
    assert reply.json()["httpRequest"]["query"] == {
        "page": "3",
        "api_key": "********",
        "access_token": "********",
    }


def test_config_of_finished_task_is_still_readable(api: Api, owner: Owner, target: Target) -> None:
    task = make_task(api, owner, target, "SUCCESS")
    view = act(api, owner, "config", task["id"]).json()
    assert view["httpRequest"]["url"] == target.url("/cb")
    assert view["config"]["executionDelay"] == 1
