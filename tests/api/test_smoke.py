from tests.conftest import BOTH_STORES, Api, Owner
from tests.targets import Target

pytestmark = BOTH_STORES


def test_status(api: Api) -> None:
    reply = api.http.get("/status")
    assert reply.status_code == 200
    assert reply.text == "OK"


def test_task_runs_and_succeeds(api: Api, owner: Owner, target: Target) -> None:
    task = api.task(owner, {"httpRequest": {"url": target.url("/cb"), "method": "GET"}})
    assert task["state"] == "RUNNING"
    done = api.wait_state(owner, task["id"], "SUCCESS", "ERROR")
    assert done["state"] == "SUCCESS"
    assert done["statusCode"] == 200
    (arrival,) = target.wait_for(1, "/cb")
    assert arrival.header("X-Tasks-Queue-Id") == task["id"]
