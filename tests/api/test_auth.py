"""Authentication: Bearer key + X-Tasks-Owner-Id; 403 for bad shape (naming the header) or
unknown owner, 401 for a wrong key; checked before anything in the request is validated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from ulid import ULID

from tasks_server.api.auth import (
    MALFORMED_KEY,
    MALFORMED_OWNER_ID,
    MISSING_KEY,
    MISSING_OWNER_ID,
    OWNER_NAME_AS_ID,
)
from tests.conftest import Api, Owner, assert_error

# an unknown owner and a wrong key: the original's words, which say nothing more
MESSAGE_401 = "The request did not include valid authentication"
MESSAGE_403 = "The server did not accept valid authentication"
NO_CREDENTIALS = f"{MISSING_KEY}. {MISSING_OWNER_ID}"
# a well-formed task id that names no task
UNKNOWN_TASK = str(ULID())

# every endpoint that needs credentials: (method, path, JSON body or None)
AUTHENTICATED: list[tuple[str, str, Any]] = [
    ("GET", "/v1/owners/{name}", None),
    ("DELETE", "/v1/owners/{name}", None),
    (
        "POST",
        "/v1/queues/register",
        {"httpRequest": {"url": "http://127.0.0.1:9/x", "method": "GET"}},
    ),
    ("GET", "/v1/queues", None),
    ("GET", "/v1/queues/{task}", None),
    ("GET", "/v1/queues/{task}/config", None),
    ("PATCH", "/v1/queues/{task}", {"metadata": {"a": "b"}}),
    ("DELETE", "/v1/queues/{task}", None),
    ("PATCH", "/v1/queues/{task}/pause", None),
    ("PATCH", "/v1/queues/{task}/resume", None),
    ("PATCH", "/v1/queues/{task}/revoke", None),
    ("POST", "/v1/queues/{task}/execute", None),
]


def call(
    api: Api, method: str, path: str, body: Any, headers: dict[str, str], owner: Owner
) -> httpx.Response:
    url = path.format(name=owner.name, task=UNKNOWN_TASK)
    if body is None:
        return api.http.request(method, url, headers=headers)
    return api.http.request(method, url, json=body, headers=headers)


def _both(authorization: str, owner_id: str) -> dict[str, str]:
    return {"Authorization": authorization, "X-Tasks-Owner-Id": owner_id}


# header sets that miss a part or have the wrong shape, by name, and what the 403 says
MALFORMED: dict[str, tuple[Callable[[Owner], dict[str, str]], str]] = {
    "none": (lambda o: {}, NO_CREDENTIALS),
    "only-owner-id": (lambda o: {"X-Tasks-Owner-Id": o.id}, MISSING_KEY),
    "only-authorization": (lambda o: {"Authorization": f"Bearer {o.key}"}, MISSING_OWNER_ID),
    "authorization-empty": (lambda o: _both("", o.id), MISSING_KEY),
    "bearer-alone": (lambda o: _both("Bearer", o.id), MALFORMED_KEY),
    "bearer-invalid": (lambda o: _both("Bearer invalid", o.id), MALFORMED_KEY),
    "no-scheme": (lambda o: _both(o.key, o.id), MALFORMED_KEY),
    "lowercase-scheme": (lambda o: _both(f"bearer {o.key}", o.id), MALFORMED_KEY),
    "basic-scheme": (lambda o: _both(f"Basic {o.key}", o.id), MALFORMED_KEY),
    "two-spaces": (lambda o: _both(f"Bearer  {o.key}", o.id), MALFORMED_KEY),
    "trailing-text": (lambda o: _both(f"Bearer {o.key} x", o.id), MALFORMED_KEY),
    "key-65-chars": (lambda o: _both(f"Bearer {o.key}x", o.id), MALFORMED_KEY),
    "key-63-chars": (lambda o: _both(f"Bearer {o.key[:-1]}", o.id), MALFORMED_KEY),
    "key-with-hyphen": (lambda o: _both(f"Bearer {o.key[:-1]}-", o.id), MALFORMED_KEY),
    "owner-id-empty": (lambda o: _both(f"Bearer {o.key}", ""), MISSING_OWNER_ID),
    "owner-id-invalid": (lambda o: _both(f"Bearer {o.key}", "not/an/id"), MALFORMED_OWNER_ID),
    "owner-id-25-chars": (lambda o: _both(f"Bearer {o.key}", o.id[:-1]), MALFORMED_OWNER_ID),
    "owner-id-27-chars": (lambda o: _both(f"Bearer {o.key}", o.id + "0"), MALFORMED_OWNER_ID),
    # I, L, O and U are not Crockford base32
    "owner-id-with-u": (lambda o: _both(f"Bearer {o.key}", "U" + o.id[1:]), MALFORMED_OWNER_ID),
    "owner-id-with-o": (lambda o: _both(f"Bearer {o.key}", o.id[:-1] + "O"), MALFORMED_OWNER_ID),
    "owner-name-as-id": (lambda o: _both(f"Bearer {o.key}", o.name), OWNER_NAME_AS_ID),
    "both-malformed": (
        lambda o: _both(f"Basic {o.key}", "x"),
        f"{MALFORMED_KEY}. {MALFORMED_OWNER_ID}",
    ),
}


@pytest.mark.parametrize(("make", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_missing_or_malformed_credentials_are_403_naming_the_header(
    shared: Api, me: Owner, make: Callable[[Owner], dict[str, str]], message: str
) -> None:
    reply = shared.http.get(f"/v1/owners/{me.name}", headers=make(me))
    assert_error(reply, 403, message)
    # the same request with good credentials is fine: only the headers were wrong
    assert shared.http.get(f"/v1/owners/{me.name}", headers=me.headers).status_code == 200


def test_messages_name_the_header_and_what_it_takes() -> None:
    assert "Authorization" in MISSING_KEY and "Bearer <key>" in MISSING_KEY
    assert "Authorization" in MALFORMED_KEY and "64 letters and digits" in MALFORMED_KEY
    assert "X-Tasks-Owner-Id" in MISSING_OWNER_ID
    assert "X-Tasks-Owner-Id" in MALFORMED_OWNER_ID and "26-character ULID" in MALFORMED_OWNER_ID
    assert "X-Tasks-Owner-Id" in OWNER_NAME_AS_ID and "not its name" in OWNER_NAME_AS_ID


def test_an_owner_name_as_id_says_the_same_whether_the_owner_exists(shared: Api, me: Owner) -> None:
    """The hint is about the header's shape: it tells nobody which names are taken."""
    bodies = [
        shared.http.get("/v1/queues", headers=_both(f"Bearer {me.key}", name)).json()
        for name in (me.name, "nobody-has-this-name")
    ]
    assert bodies[0] == bodies[1]
    assert bodies[0]["message"] == OWNER_NAME_AS_ID


def test_an_unknown_owner_and_a_wrong_key_say_no_more_than_before(shared: Api, me: Owner) -> None:
    unknown = _both(f"Bearer {me.key}", str(ULID()))
    wrong_key = _both(f"Bearer {'A' * 64}", me.id)
    assert_error(shared.http.get("/v1/queues", headers=unknown), 403, MESSAGE_403)
    assert_error(shared.http.get("/v1/queues", headers=wrong_key), 401, MESSAGE_401)


@pytest.mark.parametrize(("method", "path", "body"), AUTHENTICATED)
def test_every_endpoint_needs_credentials(
    shared: Api, me: Owner, method: str, path: str, body: Any
) -> None:
    assert_error(call(shared, method, path, body, {}, me), 403, NO_CREDENTIALS)


@pytest.mark.parametrize(("method", "path", "body"), AUTHENTICATED)
def test_every_endpoint_refuses_a_wrong_key_with_401(
    shared: Api, me: Owner, method: str, path: str, body: Any
) -> None:
    wrong = {"Authorization": f"Bearer {'A' * 64}", "X-Tasks-Owner-Id": me.id}
    assert_error(call(shared, method, path, body, wrong, me), 401, MESSAGE_401)


def test_unknown_owner_is_403(shared: Api, me: Owner) -> None:
    headers = {"Authorization": f"Bearer {me.key}", "X-Tasks-Owner-Id": str(ULID())}
    assert_error(shared.http.get(f"/v1/owners/{me.name}", headers=headers), 403, MESSAGE_403)


def test_another_owners_key_is_401(shared: Api, me: Owner) -> None:
    other = shared.owner()
    headers = {"Authorization": f"Bearer {other.key}", "X-Tasks-Owner-Id": me.id}
    assert_error(shared.http.get(f"/v1/owners/{me.name}", headers=headers), 401, MESSAGE_401)


def test_key_differing_in_case_only_is_401(shared: Api, me: Owner) -> None:
    flipped = me.key.swapcase()
    if flipped == me.key:  # a key of digits only: astronomically unlikely
        pytest.skip("key has no letters")
    headers = {"Authorization": f"Bearer {flipped}", "X-Tasks-Owner-Id": me.id}
    assert_error(shared.http.get(f"/v1/owners/{me.name}", headers=headers), 401, MESSAGE_401)


def test_valid_credentials_are_accepted(shared: Api, me: Owner) -> None:
    reply = shared.http.get(f"/v1/owners/{me.name}", headers=me.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["id"] == me.id


def test_owner_id_is_case_insensitive(shared: Api, me: Owner) -> None:
    headers = {"Authorization": f"Bearer {me.key}", "X-Tasks-Owner-Id": me.id.lower()}
    reply = shared.http.get(f"/v1/owners/{me.name}", headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["id"] == me.id


def test_header_names_are_case_insensitive(shared: Api, me: Owner) -> None:
    headers = {"authorization": f"Bearer {me.key}", "x-tasks-owner-id": me.id}
    assert shared.http.get(f"/v1/owners/{me.name}", headers=headers).status_code == 200


def test_register_owner_needs_no_credentials(shared: Api) -> None:
    reply = shared.http.post("/v1/owners/register", json={"name": "no-credentials"})
    assert reply.status_code == 201, reply.text


def test_deleted_owners_credentials_are_403(shared: Api, me: Owner) -> None:
    assert shared.http.delete(f"/v1/owners/{me.name}", headers=me.headers).status_code == 200
    assert_error(shared.http.get("/v1/queues", headers=me.headers), 403, MESSAGE_403)


# ---- authentication comes before any validation of the request ----

INVALID_BODY = {"httpRequest": {"url": "ftp://nowhere", "method": "HEAD"}, "bogus": 1}


def test_bad_credentials_win_over_an_invalid_body(shared: Api, me: Owner) -> None:
    wrong = {"Authorization": f"Bearer {'A' * 64}", "X-Tasks-Owner-Id": me.id}
    url = "/v1/queues/register"
    assert_error(shared.http.post(url, json=INVALID_BODY), 403)
    assert_error(shared.http.post(url, json=INVALID_BODY, headers=wrong), 401)
    assert_error(shared.http.post(url, content=b"{not json", headers=wrong), 401)
    # with good credentials the same body is the problem
    reply = shared.http.post(url, json=INVALID_BODY, headers=me.headers)
    assert reply.status_code == 400, reply.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/owners/BAD"),
        ("DELETE", "/v1/owners/x"),
        ("GET", "/v1/queues/not-a-task-id"),
        ("GET", "/v1/queues/not-a-task-id/config"),
        ("PATCH", "/v1/queues/not-a-task-id/pause"),
        ("DELETE", "/v1/queues/not-a-task-id"),
        ("GET", "/v1/queues?limit=10000"),
        ("GET", "/v1/queues?bogus=1"),
    ],
)
def test_bad_credentials_win_over_an_invalid_path_or_query(
    shared: Api, me: Owner, method: str, path: str
) -> None:
    wrong = {"Authorization": f"Bearer {'A' * 64}", "X-Tasks-Owner-Id": me.id}
    assert_error(shared.http.request(method, path), 403)
    assert_error(shared.http.request(method, path, headers=wrong), 401)
    reply = shared.http.request(method, path, headers=me.headers)
    assert reply.status_code == 400, reply.text


def test_bad_credentials_win_over_a_too_large_body(shared: Api, me: Owner) -> None:
    big = b'{"pad": "' + b"x" * (shared.settings.max_size_body_request + 10) + b'"}'
    url = "/v1/queues/register"
    headers = {"Content-Type": "application/json"}
    assert_error(shared.http.post(url, content=big, headers=headers), 403)
    reply = shared.http.post(url, content=big, headers={**headers, **me.headers})
    assert reply.status_code == 413, reply.text
