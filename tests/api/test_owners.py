"""Owner endpoints: register, read, delete; name rules; how the key is kept."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from ulid import ULID

from tasks_server.config import Settings
from tests.conftest import BOTH_STORES, Api, Owner, assert_error, running_api
from tests.database import rows, table_names
from tests.targets import Target

pytestmark = BOTH_STORES

HOUR = 3_600_000
KEY = re.compile(r"^[A-Za-z0-9]{64}$")


def register(api: Api, body: Any) -> httpx.Response:
    return api.http.post("/v1/owners/register", json=body)


def far_task(api: Api, owner: Owner, url: str = "http://127.0.0.1:9/cb") -> dict[str, Any]:
    return api.task(
        owner, {"httpRequest": {"url": url, "method": "GET"}, "config": {"executionDelay": HOUR}}
    )


# ---- register ----


def test_register_returns_ulid_id_and_64_character_key(api: Api) -> None:
    before = int(time.time() * 1000)
    reply = register(api, {"name": "first-owner"})
    after = int(time.time() * 1000)
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert set(body) == {"id", "key"}
    owner_id = ULID.from_str(body["id"])  # raises if it is not a ULID
    assert str(owner_id) == body["id"]
    assert before - 5 <= owner_id.milliseconds <= after + 5
    assert KEY.match(body["key"]), body["key"]


def test_every_owner_gets_its_own_id_and_key(shared: Api) -> None:
    owners = [shared.owner() for _ in range(5)]
    assert len({o.id for o in owners}) == 5
    assert len({o.key for o in owners}) == 5


VALID_NAMES = [
    "abcde",  # 5 characters, the shortest
    "a" * 32,  # the longest
    "a1234",
    "my-owner",
    "a-b-c-d",
    "x0-9z",
    "owner-2024",
    "z" + "9" * 31,
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names_are_registered(shared: Api, name: str) -> None:
    owner = shared.owner(name)
    reply = shared.http.get(f"/v1/owners/{name}", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["name"] == name


INVALID_NAMES = [
    "abcd",  # 4 characters
    "a" * 33,  # 33 characters
    "",
    "1abcde",  # starts with a digit
    "-abcde",  # starts with a hyphen
    "abcde-",  # ends with a hyphen
    "abc--de",  # consecutive hyphens
    "Abcde",  # uppercase is refused, not lowercased
    "abcdE",
    "ABCDE",
    "abc de",
    "abc_de",
    "abc.de",
    "abcdé",
    "invalid name",
    "abcde\n",
]


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names_are_400_naming_the_field(shared: Api, name: str) -> None:
    body = assert_error(register(shared, {"name": name}), 400)
    assert set(body["fields"]) == {"name"}


@pytest.mark.parametrize("value", [123, None, True, ["abcde"], {"n": "abcde"}])
def test_name_of_the_wrong_type_is_400(shared: Api, value: Any) -> None:
    body = assert_error(register(shared, {"name": value}), 400)
    assert set(body["fields"]) == {"name"}


def test_duplicate_name_is_409(shared: Api) -> None:
    shared.owner("taken-name")
    body = assert_error(register(shared, {"name": "taken-name"}), 409)
    assert body["message"] == "Owner has already registered"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"name": "strict-one", "key": "x"}, {"key"}),
        ({"name": "strict-two", "tasksInQueueLimit": 5}, {"tasksInQueueLimit"}),
        ({}, {"name"}),
        ([], {"body"}),
        ("strict-three", {"body"}),
        (None, {"body"}),
    ],
)
def test_register_body_is_strict(shared: Api, body: Any, fields: set[str]) -> None:
    error = assert_error(register(shared, body), 400)
    assert set(error["fields"]) == fields
    # the refused request registered nothing: the name is still free
    if isinstance(body, dict) and "name" in body:
        shared.owner(body["name"])


# ---- read ----


def test_get_own_owner(api: Api) -> None:
    before = int(time.time() * 1000)
    owner = api.owner("reader-one")
    reply = api.http.get("/v1/owners/reader-one", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"id", "name", "createdAt", "tasksInQueue", "tasksInQueueLimit"}
    assert body["id"] == owner.id
    assert body["name"] == "reader-one"
    assert before - 5 <= body["createdAt"] <= int(time.time() * 1000) + 5
    assert ULID.from_str(owner.id).milliseconds == body["createdAt"]
    assert body["tasksInQueue"] == 0
    assert body["tasksInQueueLimit"] == 1000


def test_get_owner_counts_tasks_in_queue_and_shows_the_configured_limit(
    start_server: Callable[..., Api],
) -> None:
    api = start_server(max_tasks_in_queue=7)
    owner = api.owner("counting")
    far_task(api, owner)
    far_task(api, owner)
    body = api.http.get("/v1/owners/counting", headers=owner.headers).json()
    assert body["tasksInQueue"] == 2
    assert body["tasksInQueueLimit"] == 7


def test_get_another_owners_name_is_404(api: Api) -> None:
    mine = api.owner("mine-owner")
    api.owner("their-owner")
    assert_error(api.http.get("/v1/owners/their-owner", headers=mine.headers), 404)


def test_get_unknown_valid_name_is_404(api: Api, owner: Owner) -> None:
    assert_error(api.http.get("/v1/owners/unavailable-owner", headers=owner.headers), 404)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("name", ["test", "Owner-1", "-abcde", "abcde-", "ab--cd", "1abcde"])
def test_invalid_name_in_path_is_400(shared: Api, method: str, name: str) -> None:
    owner = shared.owner()
    reply = shared.http.request(method, f"/v1/owners/{name}", headers=owner.headers)
    body = assert_error(reply, 400)
    assert set(body["fields"]) == {"name"}
    # nothing was deleted
    assert shared.http.get(f"/v1/owners/{owner.name}", headers=owner.headers).status_code == 200


# ---- delete ----


def test_delete_own_owner(api: Api) -> None:
    owner = api.owner("short-lived")
    reply = api.http.delete("/v1/owners/short-lived", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"status": "Done"}
    # the owner is gone: its credentials no longer authenticate, and its name is free
    assert_error(api.http.get("/v1/owners/short-lived", headers=owner.headers), 403)
    again = api.owner("short-lived")
    assert again.id != owner.id


def test_delete_another_owners_name_is_404_and_deletes_nothing(api: Api) -> None:
    mine = api.owner("deleter")
    theirs = api.owner("victim-owner")
    assert_error(api.http.delete("/v1/owners/victim-owner", headers=mine.headers), 404)
    assert api.http.get("/v1/owners/victim-owner", headers=theirs.headers).status_code == 200
    assert api.http.get("/v1/owners/deleter", headers=mine.headers).status_code == 200


def test_delete_with_a_running_task_is_409(api: Api, owner: Owner) -> None:
    far_task(api, owner)
    body = assert_error(api.http.delete(f"/v1/owners/{owner.name}", headers=owner.headers), 409)
    assert "RUNNING" in body["message"]
    assert api.http.get(f"/v1/owners/{owner.name}", headers=owner.headers).status_code == 200


def test_delete_with_a_paused_task_is_409_until_it_is_revoked(api: Api, owner: Owner) -> None:
    task = far_task(api, owner)
    paused = api.http.patch(f"/v1/queues/{task['id']}/pause", headers=owner.headers)
    assert paused.status_code == 200, paused.text
    assert_error(api.http.delete(f"/v1/owners/{owner.name}", headers=owner.headers), 409)
    revoked = api.http.patch(f"/v1/queues/{task['id']}/revoke", headers=owner.headers)
    assert revoked.status_code == 200, revoked.text
    reply = api.http.delete(f"/v1/owners/{owner.name}", headers=owner.headers)
    assert reply.status_code == 200, reply.text


def task_ids_of(settings: Settings, owner_id: str) -> list[str]:
    return [row[0] for row in rows(settings, "SELECT id FROM task WHERE owner_id = ?", owner_id)]


def test_delete_removes_the_owners_finished_tasks(api: Api, target: Target) -> None:
    owner = api.owner("finisher")
    other = api.owner("bystander")
    done = api.task(owner, {"httpRequest": {"url": target.url("/cb"), "method": "GET"}})
    failed = api.task(owner, {"httpRequest": {"url": target.url("/cb/error"), "method": "GET"}})
    revoked = far_task(api, owner)
    kept = far_task(api, other)
    assert api.wait_state(owner, done["id"], "SUCCESS")["state"] == "SUCCESS"
    assert api.wait_state(owner, failed["id"], "ERROR")["state"] == "ERROR"
    revoke = api.http.patch(f"/v1/queues/{revoked['id']}/revoke", headers=owner.headers)
    assert revoke.status_code == 200, revoke.text
    assert len(task_ids_of(api.settings, owner.id)) == 3

    reply = api.http.delete("/v1/owners/finisher", headers=owner.headers)
    assert reply.status_code == 200, reply.text

    assert task_ids_of(api.settings, owner.id) == []
    for task in (done, failed, revoked):
        # the owner is gone, so its credentials are refused before any lookup
        assert_error(api.http.get(f"/v1/queues/{task['id']}", headers=owner.headers), 403)
        # and nobody else can see them
        assert_error(api.http.get(f"/v1/queues/{task['id']}", headers=other.headers), 404)
    # another owner's tasks are untouched
    assert task_ids_of(api.settings, other.id) == [kept["id"]]
    assert api.get(other, kept["id"])["state"] == "RUNNING"


# ---- the key at rest ----


def database_files(path_sqlite: str) -> list[Path]:
    base = Path(path_sqlite)
    return [p for p in (base, Path(f"{base}-wal"), Path(f"{base}-shm")) if p.exists()]


def test_key_is_stored_only_as_its_sha256_digest(api: Api) -> None:
    owner = api.owner("digest-owner")
    # some activity, so that every page the owner touches has been written
    assert api.http.get("/v1/owners/digest-owner", headers=owner.headers).status_code == 200
    far_task(api, owner)
    digest = hashlib.sha256(owner.key.encode()).digest()

    ((stored,),) = rows(api.settings, "SELECT key_digest FROM owner WHERE id = ?", owner.id)
    assert stored == digest
    # no column of any table holds the key in clear (text, bytes or hex)
    for table in table_names(api.settings):
        for row in rows(api.settings, f'SELECT * FROM "{table}"'):
            for value in row:
                if isinstance(value, bytes):
                    assert owner.key.encode() not in value
                elif isinstance(value, str):
                    assert owner.key not in value
                    assert owner.key.lower() not in value.lower()

    if not api.settings.database_url:  # SQLite: nor does any byte of its files
        raw = b"".join(path.read_bytes() for path in database_files(api.settings.path_sqlite))
        assert owner.key.encode() not in raw
        assert digest in raw  # the digest itself is what is kept


# ---- rotate the key ----


def test_rotate_key_returns_a_new_key_once_and_the_old_one_stops_working(
    shared: Api, target: Target
) -> None:
    owner = shared.owner()
    task = far_task(shared, owner, target.url("/cb"))
    reply = shared.http.post(f"/v1/owners/{owner.name}/rotate-key", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["cache-control"] == "no-store"
    body = reply.json()
    assert set(body) == {"id", "key"}
    assert body["id"] == owner.id
    assert KEY.match(body["key"]) and body["key"] != owner.key
    rotated = Owner(owner.id, body["key"], owner.name)
    for path in (f"/v1/owners/{owner.name}", "/v1/queues", f"/v1/queues/{task['id']}"):
        assert_error(shared.http.get(path, headers=owner.headers), 401)
        assert shared.http.get(path, headers=rotated.headers).status_code == 200
    # the old key cannot rotate again either; the owner's tasks are all still there
    again = shared.http.post(f"/v1/owners/{owner.name}/rotate-key", headers=owner.headers)
    assert_error(again, 401)
    assert [t["id"] for t in shared.http.get("/v1/queues", headers=rotated.headers).json()] == [
        task["id"]
    ]


def test_rotated_key_is_stored_only_as_its_digest(api: Api) -> None:
    owner = api.owner("rotating-owner")
    reply = api.http.post(f"/v1/owners/{owner.name}/rotate-key", headers=owner.headers)
    new_key = reply.json()["key"]
    ((stored,),) = rows(api.settings, "SELECT key_digest FROM owner WHERE id = ?", owner.id)
    assert stored == hashlib.sha256(new_key.encode()).digest()


def test_concurrent_rotations_with_one_key_give_exactly_one_new_key(shared: Api) -> None:
    owner = shared.owner()
    url = f"{shared.base_url}/v1/owners/{owner.name}/rotate-key"

    def rotate(_: int) -> httpx.Response:
        return httpx.post(url, headers=owner.headers, timeout=10)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(rotate, range(8)))
    winners = [reply for reply in replies if reply.status_code == 200]
    assert len(winners) == 1, [reply.status_code for reply in replies]
    assert {reply.status_code for reply in replies} - {200} <= {401}
    rotated = Owner(owner.id, winners[0].json()["key"], owner.name)
    assert shared.http.get(f"/v1/owners/{owner.name}", headers=rotated.headers).status_code == 200


@pytest.mark.parametrize("name", ["Invalid Name", "x", "-bad-"])
def test_rotate_key_with_an_invalid_name_is_400(shared: Api, name: str) -> None:
    owner = shared.owner()
    reply = shared.http.post(f"/v1/owners/{name}/rotate-key", headers=owner.headers)
    assert set(assert_error(reply, 400)["fields"]) == {"name"}
    assert shared.http.get(f"/v1/owners/{owner.name}", headers=owner.headers).status_code == 200


# ---- REGISTRATION_TOKEN ----

TOKEN = "registration-token-0123456789"


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A server whose owner registration needs REGISTRATION_TOKEN."""
    with running_api(tmp_path_factory.mktemp("closed"), registration_token=TOKEN) as api:
        yield api


MISSING_TOKEN = "The Authorization header is missing or empty: send `Bearer <REGISTRATION_TOKEN>`"
MALFORMED_TOKEN = "The Authorization header must be `Bearer <REGISTRATION_TOKEN>`"


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, MISSING_TOKEN),
        ("", MISSING_TOKEN),
        ("Bearer", MALFORMED_TOKEN),
        (f"Basic {TOKEN}", MALFORMED_TOKEN),
        (f"bearer {TOKEN}", MALFORMED_TOKEN),
        (f"Bearer  {TOKEN}", MALFORMED_TOKEN),
        ("Bearer a b", MALFORMED_TOKEN),
    ],
)
def test_registration_without_the_token_is_403_naming_the_header(
    closed: Api, authorization: str | None, message: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    reply = closed.http.post("/v1/owners/register", json={"name": "no-token"}, headers=headers)
    assert_error(reply, 403, message)


@pytest.mark.parametrize("token", [TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "x" * 64])
def test_registration_with_a_wrong_token_is_401(closed: Api, token: str) -> None:
    reply = closed.http.post(
        "/v1/owners/register",
        json={"name": "wrong-token"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_error(reply, 401, "The REGISTRATION_TOKEN in the Authorization header is not valid")
    assert reply.headers["www-authenticate"].startswith("Bearer")


def test_registration_with_the_token_is_201_and_the_owner_works(closed: Api) -> None:
    reply = closed.http.post(
        "/v1/owners/register",
        json={"name": "has-token"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert reply.status_code == 201, reply.text
    body = reply.json()
    owner = Owner(body["id"], body["key"], "has-token")
    assert closed.http.get("/v1/owners/has-token", headers=owner.headers).status_code == 200
    # the registration token is not an owner key: it opens nothing else
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Tasks-Owner-Id": owner.id}
    assert_error(closed.http.get("/v1/owners/has-token", headers=headers), 403)


def test_token_is_checked_before_the_body(closed: Api) -> None:
    for raw in (b"{not json", b'{"name": "X"}', b"x" * 100_000):
        reply = closed.http.post(
            "/v1/owners/register", content=raw, headers={"Content-Type": "application/json"}
        )
        assert_error(reply, 403)


def test_without_a_token_registration_is_open_whatever_the_headers(shared: Api) -> None:
    reply = shared.http.post(
        "/v1/owners/register", json={"name": "open-door"}, headers={"Authorization": "Bearer x"}
    )
    assert reply.status_code == 201, reply.text
