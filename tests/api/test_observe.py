"""What an operator watches: /health, /ready, Prometheus /metrics (the figures moving as
tasks run, no ids in labels, METRICS_TOKEN, never throttled), the server's last hour
(/v1/activity) and the operator view across owners (ADMIN_TOKEN), on both stores."""

from __future__ import annotations

import re
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BOTH_STORES, Api, Owner, assert_error
from tests.targets import Reply, Target, wait_until

pytestmark = BOTH_STORES

TOKEN = "metrics-token-0123456789"
ADMIN = "admin-token-0123456789abcdef"


def samples(api: Api, headers: dict[str, str] | None = None) -> dict[str, float]:
    """`name{labels}` -> value of one scrape."""
    reply = api.http.get("/metrics", headers=headers or {})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def test_health_and_ready_answer_ok(api: Api) -> None:
    assert api.http.get("/health").json() == {"status": "ok"}
    ready = api.http.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}


def test_metrics_move_as_tasks_run(api: Api, owner: Owner, target: Target) -> None:
    target.script("/ok", always=Reply(200, b"fine"))
    target.script("/bad", always=Reply(502, b"no"))
    before = samples(api)
    assert before["tasks_registered_total"] == 0
    assert before['tasks{state="RUNNING"}'] == 0
    for path in ("/ok", "/ok", "/bad"):
        api.task(owner, {"httpRequest": {"url": target.url(path), "method": "GET"}})
    later = api.task(
        owner,
        {
            "httpRequest": {"url": target.url("/ok"), "method": "GET"},
            "config": {"executionDelay": 600_000},
        },
    )

    def settled() -> dict[str, float] | None:
        found = samples(api)
        return found if found.get('tasks{state="SUCCESS"}') == 2 else None

    after = wait_until(settled, timeout=15)
    wait_until(lambda: samples(api).get('tasks{state="ERROR"}') == 1, timeout=15)
    after = samples(api)
    assert after["tasks_registered_total"] == 4
    assert after['tasks_attempts_total{outcome="success",status_class="2xx"}'] == 2
    assert after['tasks_attempts_total{outcome="failure",status_class="5xx"}'] == 1
    assert after["tasks_dispatch_lateness_seconds_count"] == 3
    assert after["tasks_attempt_duration_seconds_count"] == 3
    assert after['tasks{state="RUNNING"}'] == 1
    assert after["tasks_due_backlog"] == 0
    assert after["tasks_oldest_due_age_seconds"] == 0
    assert after["tasks_in_flight"] == 0
    assert after["instances_alive"] == 1
    assert after["store_commit_seconds_count"] >= 1
    assert after["store_group_size_count"] >= 1
    text = api.http.get("/metrics").text
    for secret in (owner.id, later["id"], str(target.port)):
        assert secret not in text  # no task, owner or URL in any label


def test_a_due_backlog_shows_its_size_and_age(start_server: Callable[..., Api]) -> None:
    api = start_server(max_in_flight=1)
    owner = api.owner()
    slow = Target()
    try:
        slow.script("/slow", always=Reply(200, b"", delay=5))
        for _ in range(3):
            api.task(owner, {"httpRequest": {"url": slow.url("/slow"), "method": "GET"}})

        def waiting() -> dict[str, float] | None:
            found = samples(api)
            return found if found["tasks_due_backlog"] == 2 else None

        found = wait_until(waiting, timeout=10)
        assert found["tasks_in_flight"] == 1
        assert 0 < found["tasks_oldest_due_age_seconds"] < 30
    finally:
        slow.close()


def test_metrics_token_is_asked_when_set(start_server: Callable[..., Api]) -> None:
    api = start_server(metrics_token=TOKEN)
    missing = api.http.get("/metrics")
    assert "Authorization header is missing" in assert_error(missing, 401)["message"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    malformed = api.http.get("/metrics", headers={"Authorization": f"Token {TOKEN}"})
    assert assert_error(malformed, 401)["message"] == (
        "The Authorization header must be `Bearer <METRICS_TOKEN>`"
    )
    wrong = api.http.get("/metrics", headers={"Authorization": "Bearer wrong-token-123456"})
    assert assert_error(wrong, 401)["message"] == (
        "The METRICS_TOKEN in the Authorization header is not valid"
    )
    assert "tasks_registered_total" in samples(api, {"Authorization": f"Bearer {TOKEN}"})


def test_probes_and_metrics_are_never_throttled(start_server: Callable[..., Api]) -> None:
    api = start_server(max_throttle_request=2, max_throttle_time_window=60_000)
    for _ in range(10):
        assert api.http.get("/metrics").status_code == 200
        assert api.http.get("/health").status_code == 200
        assert api.http.get("/ready").status_code == 200
    throttled = [api.http.get("/v1/queues/stats").status_code for _ in range(5)]
    assert 429 in throttled  # while the API is


def test_the_last_hour_counts_attempts_a_minute_at_a_time(
    api: Api, owner: Owner, target: Target
) -> None:
    target.script("/ok", always=Reply(200, b""))
    task = api.task(owner, {"httpRequest": {"url": target.url("/ok"), "method": "GET"}})
    api.wait_state(owner, task["id"], "SUCCESS")
    reply = api.http.get("/v1/activity", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    points = reply.json()
    assert sum(point["succeeded"] for point in points) == 1
    assert sum(point["failed"] for point in points) == 0
    last = points[-1]
    assert set(last) == {
        "minute",
        "succeeded",
        "failed",
        "latenessP50Ms",
        "latenessP99Ms",
        "backlog",
    }
    assert last["minute"] % 60_000 == 0
    assert any(point["latenessP99Ms"] is not None for point in points)
    assert_error(api.http.get("/v1/activity"), 403)


def test_the_operator_view_needs_the_admin_token(
    start_server: Callable[..., Api], target: Target
) -> None:
    off = start_server()
    reply = off.http.get("/v1/admin/overview", headers={"Authorization": f"Bearer {ADMIN}"})
    assert_error(reply, 404)
    api = start_server(admin_token=ADMIN)
    missing = assert_error(api.http.get("/v1/admin/overview"), 401)
    assert missing["message"] == (
        "The Authorization header is missing or empty: send `Bearer <ADMIN_TOKEN>`"
    )
    wrong = {"Authorization": "Bearer not-the-admin-token-1234"}
    refused = assert_error(api.http.get("/v1/admin/overview", headers=wrong), 401)
    assert "ADMIN_TOKEN" in refused["message"]
    owner = api.owner()
    api.task(
        owner,
        {
            "httpRequest": {"url": target.url("/x"), "method": "GET"},
            "config": {"executionDelay": 600_000},
        },
    )
    reply = api.http.get("/v1/admin/overview", headers={"Authorization": f"Bearer {ADMIN}"})
    assert reply.status_code == 200, reply.text
    view = reply.json()
    assert view["tasks"]["RUNNING"] == 1
    assert view["dueBacklog"] == 0
    # both servers of this test run on the same database, each with its scheduler
    assert len(view["instances"]) == 2
    assert all(re.fullmatch(r"[0-9A-Z]{26}", i["id"]) for i in view["instances"])
    assert all(i["inFlight"] == 0 for i in view["instances"])
    assert view["backups"] == []
