"""The dashboard as a person uses it, in Debian's Chromium driven by Playwright: sign in
(and a wrong key refused), the tasks table with its counts, filters and sort kept in the
URL and its pages, a task's attempts, pause and resume, the charts and the operator
view. The credentials stay in the tab's sessionStorage: never in a URL or a cookie.

DASHBOARD_SCREENSHOTS=docs/ writes a picture of each page there (the README's)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import Api, Owner
from tests.targets import Reply, Target

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ADMIN = "admin-token-for-the-browser-tests"
SCREENSHOTS = os.environ.get("DASHBOARD_SCREENSHOTS", "")

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # by its path: no browser download; as root, without Chromium's own sandbox
        found = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield found
        found.close()


@pytest.fixture
def server(start_server: Callable[..., Api]) -> Api:
    return start_server(admin_token=ADMIN)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="UTC")
    found = context.new_page()
    found.on("dialog", lambda dialog: dialog.accept())  # every confirmation: yes
    yield found
    context.close()


def picture(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / f"dashboard-{name}.png"), full_page=True)


def sign_in(page: Page, api: Api, owner: Owner) -> None:
    page.goto(f"{api.base_url}/dashboard")
    page.get_by_label("Owner ID").fill(owner.id)
    page.get_by_label("Key").fill(owner.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()


def task(api: Api, owner: Owner, url: str, **config: Any) -> str:
    body = {"httpRequest": {"url": url, "method": "POST"}, "config": config}
    task_id: str = api.task(owner, body)["id"]
    return task_id


def test_a_wrong_key_is_refused_and_said_so(page: Page, server: Api) -> None:
    owner = server.owner()
    page.goto(f"{server.base_url}/dashboard")
    page.get_by_label("Owner ID").fill(owner.id)
    page.get_by_label("Key").fill("x" * 64)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Not signed in")
    expect(page.get_by_label("Owner ID")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_sign_in_filter_sort_and_page_through_the_tasks(
    page: Page, server: Api, target: Target
) -> None:
    owner = server.owner()
    ids = [task(server, owner, target.url("/later"), executionDelay=600_000) for _ in range(53)]
    paused = ids[5]
    server.http.patch(f"/v1/queues/{paused}/pause", headers=owner.headers)
    elsewhere = task(server, owner, "http://localhost:9/x", executionDelay=600_000)
    sign_in(page, server, owner)
    picture(page, "tasks")

    # the credentials: in this tab's sessionStorage, nowhere else
    assert page.evaluate("sessionStorage.getItem('tasks.ownerId')") == owner.id
    assert page.context.cookies() == []
    assert owner.key not in page.url and owner.id not in page.url

    expect(page.locator(".counts [data-state=RUNNING] strong")).to_have_text("53")
    expect(page.locator(".counts [data-state=PAUSED] strong")).to_have_text("1")
    rows = page.locator("tr[data-task-id]")
    expect(rows).to_have_count(50)
    # newest first, as the API orders them (ties in a millisecond broken by id)
    newest = server.http.get("/v1/queues?sort=desc&limit=100", headers=owner.headers).json()
    order = [found["id"] for found in newest]
    assert set(order) == {*ids, elsewhere}
    assert [rows.nth(i).get_attribute("data-task-id") for i in range(50)] == order[:50]

    page.get_by_role("link", name="Next page").click()
    expect(rows).to_have_count(4)
    assert [rows.nth(i).get_attribute("data-task-id") for i in range(4)] == order[50:]

    page.get_by_label("State").select_option("PAUSED")
    page.get_by_label("Sort").select_option("asc")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-task-id") == paused
    assert "state=PAUSED" in page.url and "sort=asc" in page.url
    page.reload()  # the filters live in the URL
    expect(rows).to_have_count(1)
    expect(page.get_by_label("State")).to_have_value("PAUSED")

    page.get_by_label("State").select_option("")
    page.get_by_label("Target host").fill("LOCALHOST")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile("host=LOCALHOST"))  # (the page before had one row too)
    expect(page.locator(f"tr[data-task-id='{elsewhere}']")).to_be_visible()
    expect(rows).to_have_count(1)
    page.get_by_label("Target host").fill("")

    page.get_by_label("Task id").fill(ids[0].lower())
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(f"h1 [data-task-id='{ids[0]}']")).to_be_visible()


def test_a_task_shows_its_attempts_and_is_paused_and_resumed(
    page: Page, server: Api, target: Target
) -> None:
    owner = server.owner()
    target.script("/flaky", Reply(500, b"no"), always=Reply(200, b"yes"))
    done = task(server, owner, target.url("/flaky"), retry=2, retryInterval=50)
    server.wait_state(owner, done, "SUCCESS")
    later = task(server, owner, target.url("/later"), executionDelay=600_000)
    sign_in(page, server, owner)

    page.locator(f"tr[data-task-id='{done}'] a").click()
    attempts = page.locator(".timeline li")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("HTTP 200")
    expect(attempts.nth(1)).to_contain_text("HTTP 500")
    expect(attempts.nth(1).locator(".error")).to_have_text("HTTP 500")
    expect(attempts.nth(0).locator(".bar")).to_have_count(5)
    expect(page.locator("pre.request")).to_contain_text(target.url("/flaky"))
    picture(page, "task")

    page.goto(f"{server.base_url}/dashboard#/tasks/{later}")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".facts .state")).to_have_text("PAUSED")
    assert server.get(owner, later)["state"] == "PAUSED"
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".facts .state")).to_have_text("RUNNING")
    assert server.get(owner, later)["state"] == "RUNNING"
    page.get_by_label("Delay (ms from now)").fill("120000")
    page.get_by_role("button", name="Edit delay").click()
    expect(page.get_by_role("alert")).to_be_hidden()
    assert server.get(owner, later)["estimateExecutionAt"] > server.get(owner, later)["createdAt"]
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    reply = server.http.get(f"/v1/queues/{later}", headers=owner.headers)
    assert reply.status_code == 404


def test_an_action_refused_by_the_server_is_shown(page: Page, server: Api) -> None:
    owner = server.owner()
    gone = task(server, owner, "http://127.0.0.1:9/x", executionDelay=600_000)
    sign_in(page, server, owner)
    page.goto(f"{server.base_url}/dashboard#/tasks/{gone}")
    expect(page.get_by_role("button", name="Pause")).to_be_visible()
    server.http.patch(f"/v1/queues/{gone}/revoke", headers=owner.headers)  # meanwhile
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("alert")).to_contain_text("REVOKED")


def test_the_charts_and_the_operator_view(page: Page, server: Api, target: Target) -> None:
    owner = server.owner()
    target.script("/ok", always=Reply(200, b""))
    server.wait_state(owner, task(server, owner, target.url("/ok")), "SUCCESS")
    sign_in(page, server, owner)

    page.get_by_role("link", name="Activity").click()
    expect(page.locator("figure.chart")).to_have_count(3)
    expect(page.get_by_role("img", name="Attempts per minute")).to_be_visible()
    expect(page.locator("figure.chart").first).to_contain_text("Succeeded: 1")
    picture(page, "activity")

    page.get_by_role("link", name="Operator").click()
    page.get_by_label("Admin token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Open").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    page.get_by_label("Admin token").fill(ADMIN)
    page.get_by_role("button", name="Open").click()
    expect(page.locator("tr[data-instance-id]")).to_have_count(1)
    expect(page.locator(".counts")).to_contain_text("SUCCESS 1")
    picture(page, "operator")


def test_time_ranges_filter_and_stay_in_the_url(page: Page, server: Api) -> None:
    owner = server.owner()
    soon = task(server, owner, "http://127.0.0.1:9/x", executionDelay=60_000)
    later = task(server, owner, "http://127.0.0.1:9/x", executionDelay=7_200_000)
    due_soon = server.get(owner, soon)["estimateExecutionAt"]
    sign_in(page, server, owner)
    expect(page.locator("tr[data-task-id]")).to_have_count(2)
    # "Due from" a minute past the first one's due time: the second one alone
    page.get_by_label("Due from").fill(local_input(due_soon + 60_000))
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("tr[data-task-id]")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-task-id") == later
    assert "dueFrom=" in page.url
    page.reload()
    expect(rows).to_have_count(1)
    expect(page.get_by_label("Due from")).not_to_have_value("")


def local_input(ms: int) -> str:
    """What a datetime-local input takes, in the browser's zone (UTC here), to the second."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
