"""The one error shape, body limits, unknown routes and methods, ?pretty and /status."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ulid import ULID

from tests.conftest import Api, Owner, ServerThread, assert_error, make_settings

LIMIT = 1024
TASK = {"httpRequest": {"url": "http://127.0.0.1:9/cb", "method": "GET"}}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A server whose request bodies may be at most LIMIT bytes."""
    settings = make_settings(tmp_path_factory.mktemp("small"), max_size_body_request=LIMIT)
    server = ServerThread(settings)
    server.start()
    api = Api(f"http://127.0.0.1:{server.port}", settings)
    yield api
    api.close()
    server.stop()


# ---- bodies that are not JSON ----

NOT_JSON = [b"{", b"{not json}", b"", b"{'name': 'single-quotes'}", b'{"name": "x",}', b"\xff\xfe"]


@pytest.mark.parametrize("raw", NOT_JSON)
def test_invalid_json_is_400_naming_the_body(shared: Api, me: Owner, raw: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    body = assert_error(shared.http.post("/v1/owners/register", content=raw, headers=headers), 400)
    assert set(body["fields"]) == {"body"}
    reply = shared.http.post("/v1/queues/register", content=raw, headers={**headers, **me.headers})
    assert set(assert_error(reply, 400)["fields"]) == {"body"}


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "text/json"],
)
def test_non_json_content_type_is_400(shared: Api, me: Owner, content_type: str) -> None:
    raw = json.dumps(TASK).encode()
    reply = shared.http.post(
        "/v1/queues/register", content=raw, headers={"Content-Type": content_type, **me.headers}
    )
    body = assert_error(reply, 400)
    assert set(body["fields"]) == {"headers.Content-Type"}
    # nothing was registered
    assert shared.http.get("/v1/queues", headers=me.headers).json() == []


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/x+json",
    ],
)
def test_json_content_types_are_accepted(shared: Api, me: Owner, content_type: str) -> None:
    raw = json.dumps(TASK).encode()
    reply = shared.http.post(
        "/v1/queues/register", content=raw, headers={"Content-Type": content_type, **me.headers}
    )
    assert reply.status_code == 201, reply.text


# ---- MAX_SIZE_BODY_REQUEST ----


def padded_owner(name: str, size: int) -> bytes:
    """A valid registration body of exactly `size` bytes (JSON whitespace as padding)."""
    raw = json.dumps({"name": name}).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def test_body_over_the_limit_is_413(small: Api) -> None:
    raw = padded_owner("too-large", LIMIT + 1)
    reply = small.http.post(
        "/v1/owners/register", content=raw, headers={"Content-Type": "application/json"}
    )
    body = assert_error(reply, 413)
    assert str(LIMIT) in body["message"]
    # nothing was registered: the name is still free
    small.owner("too-large")


def test_body_at_the_limit_is_accepted(small: Api) -> None:
    raw = padded_owner("just-fits", LIMIT)
    reply = small.http.post(
        "/v1/owners/register", content=raw, headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 201, reply.text


def test_chunked_body_over_the_limit_is_413(small: Api) -> None:
    """No Content-Length to trust: the server counts while it reads."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "chunked-big", "pad": "'
        for _ in range(8):
            yield b"x" * 256
        yield b'"}'

    reply = small.http.post(
        "/v1/owners/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in reply.request.headers
    assert_error(reply, 413)


def test_chunked_body_under_the_limit_is_read(small: Api) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": '
        yield b'"chunked-small"}'

    reply = small.http.post(
        "/v1/owners/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 201, reply.text


def test_task_body_over_the_limit_is_413(small: Api) -> None:
    owner = small.owner()
    payload = {
        "httpRequest": {"url": "http://127.0.0.1:9/cb", "method": "POST", "data": "x" * LIMIT}
    }
    assert_error(small.register(owner, payload), 413)
    assert small.http.get("/v1/queues", headers=owner.headers).json() == []


def test_limit_follows_the_setting(start_server: Callable[..., Api]) -> None:
    api = start_server(max_size_body_request=64)
    raw = padded_owner("sixty-five", 65)
    headers = {"Content-Type": "application/json"}
    assert_error(api.http.post("/v1/owners/register", content=raw, headers=headers), 413)
    raw = padded_owner("sixty-four", 64)
    assert api.http.post("/v1/owners/register", content=raw, headers=headers).status_code == 201


# ---- routes and methods ----


@pytest.mark.parametrize(
    "path",
    ["/", "/nope", "/v1", "/v1/owners", "/v2/queues", "/v1/queues/x/y/z", "/status/x"],
)
def test_unknown_route_is_404_json(shared: Api, path: str) -> None:
    assert_error(shared.http.get(path), 404)


def test_unknown_task_action_is_404_json(shared: Api, me: Owner) -> None:
    reply = shared.http.patch(f"/v1/queues/{ULID()}/explode", headers=me.headers)
    assert_error(reply, 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/owners/register"),
        ("POST", "/status"),
        ("DELETE", "/v1/queues"),
        ("POST", "/v1/queues/{task}"),
        ("GET", "/v1/queues/{task}/pause"),
        ("GET", "/v1/queues/{task}/execute"),
        ("PATCH", "/v1/queues/{task}/config"),
    ],
)
def test_wrong_method_is_405_json(shared: Api, method: str, path: str) -> None:
    reply = shared.http.request(method, path.format(task=ULID()))
    assert_error(reply, 405)
    assert method not in reply.headers["allow"].split(", ")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/queues/register", "POST"),  # used to be read as a task id: a 400
        ("DELETE", "/v1/queues/register", "POST"),
        ("PATCH", "/v1/queues/stats", "GET, HEAD"),
        ("DELETE", "/v1/queues/stats", "GET, HEAD"),
        ("PUT", "/v1/queues/{task}", "DELETE, GET, HEAD, PATCH"),  # every method of the path
        ("POST", "/v1/owners/{name}", "DELETE, GET, HEAD"),
        ("GET", "/v1/owners/{name}/rotate-key", "POST"),
        ("OPTIONS", "/v1/queues", "GET, HEAD"),
        ("HEAD", "/v1/queues/register", "POST"),
    ],
)
def test_a_known_path_with_a_wrong_method_is_405_with_allow(
    shared: Api, me: Owner, method: str, path: str, allowed: str
) -> None:
    path = path.format(task=ULID(), name=me.name)
    reply = shared.http.request(method, path, headers=me.headers)
    assert reply.status_code == 405, reply.text
    assert reply.headers["allow"] == allowed
    if method != "HEAD":  # a HEAD answer has no body
        assert_error(reply, 405, f"{method} is not allowed on {path} (allowed: {allowed})")


def test_literal_paths_still_answer_and_bad_task_ids_are_still_400(shared: Api, me: Owner) -> None:
    assert shared.http.get("/v1/queues/stats", headers=me.headers).status_code == 200
    reply = shared.http.head("/v1/queues/stats", headers=me.headers)
    assert (reply.status_code, reply.content) == (200, b"")
    for path in ("/v1/queues/registe", "/v1/queues/stats/config", "/v1/queues/register/pause"):
        method = "PATCH" if path.endswith("pause") else "GET"
        reply = shared.http.request(method, path, headers=me.headers)
        assert set(assert_error(reply, 400)["fields"]) == {"id"}, path


def test_an_owner_named_like_a_literal_path_is_still_found(shared: Api) -> None:
    """Owner names may be words: /v1/owners/register is an owner's path for GET."""
    owner = shared.owner("register")
    reply = shared.http.get("/v1/owners/register", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["name"] == "register"


# ---- ?pretty ----


def test_pretty_indents_json_responses(shared: Api, me: Owner) -> None:
    plain = shared.http.get(f"/v1/owners/{me.name}", headers=me.headers)
    pretty = shared.http.get(f"/v1/owners/{me.name}?pretty", headers=me.headers)
    assert pretty.status_code == 200
    assert "\n" not in plain.text
    assert pretty.json() == plain.json()
    assert pretty.text.startswith('{\n    "id": ')
    assert pretty.text == json.dumps(plain.json(), indent=4)


def test_pretty_with_a_value_and_on_lists(shared: Api, me: Owner) -> None:
    shared.task(me, {**TASK, "config": {"executionDelay": 3_600_000}})
    reply = shared.http.get("/v1/queues?pretty=1&limit=5", headers=me.headers)
    assert reply.status_code == 200, reply.text
    assert reply.text.startswith("[\n    {\n        ")
    assert len(reply.json()) == 1


def test_pretty_indents_error_bodies_too(shared: Api) -> None:
    reply = shared.http.post("/v1/owners/register?pretty", json={"name": "X"})
    body = assert_error(reply, 400)
    assert reply.text == json.dumps(body, indent=4)


# ---- /status ----


def test_status_is_200_ok(shared: Api) -> None:
    reply = shared.http.get("/status")
    assert reply.status_code == 200
    assert reply.text == "OK"
    assert reply.headers["content-type"].startswith("text/plain")


# ---- never a 500 for a client's mistake ----


@pytest.mark.parametrize(
    "value",
    [
        "12 Feb x 12:12:12 +9999999999",  # overflowed the RFC 2822 parser's integers
        "Tue, 01 Jan 2030 00:00:00 +99999999999999999999",
        "0001-01-01T00:00:00+23:59",
        "\x00",
    ],
)
def test_strange_dates_are_400_not_500(shared: Api, me: Owner, value: str) -> None:
    payload = {**TASK, "config": {"executeAt": value}}
    body = assert_error(shared.register(me, payload), 400)
    assert set(body["fields"]) == {"config.executeAt"}


@pytest.mark.parametrize("depth", [33, 2000])
def test_deeply_nested_json_is_400_not_500(shared: Api, me: Owner, depth: int) -> None:
    """2000 levels used to escape msgspec as RecursionError: a 500."""
    headers = {"Content-Type": "application/json"}
    for raw in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        reply = shared.http.post("/v1/owners/register", content=raw, headers=headers)
        assert assert_error(reply, 400)["fields"] == {
            "body": "Invalid JSON: nested deeper than 32 levels"
        }
        reply = shared.http.post(
            "/v1/queues/register", content=raw, headers={**headers, **me.headers}
        )
        assert set(assert_error(reply, 400)["fields"]) == {"body"}


def nested(levels: int) -> Any:
    """An object `levels` deep: {"a": {"a": ... 1}}."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("levels", "named"), [(32, "metadata.k"), (33, "body")])
def test_nesting_up_to_32_levels_is_parsed(shared: Api, me: Owner, levels: int, named: str) -> None:
    """At 32 levels the body is read and the field is what is wrong; at 33 the JSON is."""
    payload = {**TASK, "metadata": {"k": nested(levels - 2)}}  # body and metadata: 2 levels
    assert set(assert_error(shared.register(me, payload), 400)["fields"]) == {named}


# ---- query parameters (GET /v1/queues) ----


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=10000", "limit"),  # acceptance case 39
        ("limit=0", "limit"),
        ("limit=²", "limit"),  # str.isdigit() says yes, int() says no: used to be a 500
        ("limit=١٢", "limit"),  # Arabic-Indic digits are not a number here
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("limit=-1", "limit"),
        ("offset=-1", "offset"),
        ("offset=99999999999999999", "offset"),
        ("limit=5&limit=6", "limit"),
        ("order=created", "order"),
        ("sort=up", "sort"),
        ("state=DONE", "state"),
        ("bogus=1", "bogus"),
    ],
)
def test_bad_list_query_is_400_naming_the_parameter(
    shared: Api, me: Owner, query: str, named: str
) -> None:
    reply = shared.http.get(f"/v1/queues?{query}", headers=me.headers)
    assert set(assert_error(reply, 400)["fields"]) == {named}


@pytest.mark.parametrize(
    ("query", "named", "values"),
    [
        ("order=created", "order", "createdAt, estimateEndAt, estimateExecutionAt"),
        ("sort=up", "sort", "asc, desc"),
        ("sort=1", "sort", "asc, desc"),  # digits are read as a number: still a choice
        ("state=DONE", "state", "RUNNING, PAUSED, SUCCESS, ERROR, REVOKED"),
    ],
)
def test_a_bad_enum_parameter_lists_the_values(
    shared: Api, me: Owner, query: str, named: str, values: str
) -> None:
    reply = shared.http.get(f"/v1/queues?{query}", headers=me.headers)
    body = assert_error(reply, 400, f"{named}: Expected one of: {values}")
    assert body["fields"] == {named: f"Expected one of: {values}"}


def test_several_bad_parameters_are_named_in_the_message(shared: Api, me: Owner) -> None:
    reply = shared.http.get("/v1/queues?order=x&sort=y&limit=0", headers=me.headers)
    body = assert_error(reply, 400, "Invalid fields: limit, order, sort")
    assert set(body["fields"]) == {"limit", "order", "sort"}


@pytest.mark.parametrize(
    "query",
    [
        "",
        "limit=1000&offset=0&order=createdAt&sort=asc&state=SUCCESS",  # acceptance case 38
        "sort=DESC&state=running&order=estimateExecutionAt",
        "offset=123456789",
        "pretty",
    ],
)
def test_good_list_query_is_200(shared: Api, me: Owner, query: str) -> None:
    reply = shared.http.get(f"/v1/queues?{query}", headers=me.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json() == []


def test_client_leaving_mid_body_is_not_logged_as_an_error(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import socket
    import time

    api = start_server()
    owner = api.owner()
    host, port = api.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/queues/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {owner.key}\r\nX-Tasks-Owner-Id: {owner.id}\r\n".encode()
            + b'Content-Length: 1000\r\n\r\n{"httpRequest"'
        )
        time.sleep(0.2)  # let the server start reading the body before we leave
    time.sleep(0.3)  # and notice that we left
    assert api.http.get("/status").status_code == 200
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
