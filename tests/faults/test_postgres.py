"""PostgreSQL going away under a running `serve` (every connection closed, none let in):
changes answer 503 with Retry-After meanwhile, the requests in flight finish and their
outcomes wait in memory, and once the database is back the scheduler resumes by itself
and records each outcome: nothing is dropped, nothing sent twice."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import SERVER, psql
from tests.served import Served, free_port
from tests.targets import Reply, Target, wait_until


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of its own (connections to it are cut in the test); dropped afterwards."""
    name = f"tasks_fault_{secrets.token_hex(4)}"
    psql(f"CREATE DATABASE {name}", "postgres")
    try:
        yield name
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", "postgres")


def cut_off(database: str) -> None:
    psql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false", "postgres")
    psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()",
        "postgres",
    )


def let_in(database: str) -> None:
    psql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true", "postgres")


def test_postgresql_going_away_answers_503_and_drops_no_outcome(
    tmp_path: Path, own_database: str, target: Target
) -> None:
    target.script("/slow", always=Reply(200, b"done", delay=1.0))
    served = Served(
        tmp_path, free_port(), "server.log", {"DATABASE_URL": f"{SERVER}/{own_database}"}
    )
    try:
        owner = served.owner("outage-owner")
        tasks = [served.task(owner, target.url("/slow"), executionDelay=1) for _ in range(5)]
        target.wait_for(5, "/slow")  # all five in flight, answered in a second

        cut_off(own_database)
        body = {"httpRequest": {"url": target.url("/later"), "method": "GET"}}
        refused = served.http.post("/v1/queues/register", json=body, headers=owner.headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "cannot take this change now" in refused.json()["message"]
        for _ in range(3):  # whatever the state of the pool's connections, never a 500
            read = served.http.get(f"/v1/queues/{tasks[0]['id']}", headers=owner.headers)
            assert read.status_code == 503, read.text
        assert served.http.get("/status").status_code == 200  # the process itself answers
        assert served.http.get("/health").json() == {"status": "ok"}
        ready = served.http.get("/ready")  # but a load balancer sends it nothing meanwhile
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["reason"].startswith("the database does not answer")
        # the five answers arrive while the database is away: kept, not dropped
        wait_until(lambda: "Could not record" in served.log(), timeout=10)

        let_in(own_database)
        wait_until(lambda: served.http.get("/ready").status_code == 200, timeout=15)
        for task in tasks:
            done = served.wait(owner, task["id"], lambda t: t["state"] != "RUNNING", timeout=30)
            assert (done["state"], done["statusCode"]) == ("SUCCESS", 200)
        assert len(target.arrivals_at("/slow")) == 5  # each sent once
        # and the scheduler goes on by itself
        after = served.http.post("/v1/queues/register", json=body, headers=owner.headers)
        assert after.status_code == 201, after.text
        target.wait_for(1, "/later", timeout=15)
    finally:
        let_in(own_database)
        served.kill()
