"""Hostile input, each answered with a precise 4xx: bytes that are not UTF-8, JSON nested
10,000 deep, numbers past every range, 1 MB strings, bodies past the limit (413 without
reading on), CR/LF in header names, and raw HTTP with CR, LF or NUL where they may not be.

Cases already covered elsewhere are not repeated here: invalid JSON, content types and
nesting up to 2,000 (test_errors.py), unknown fields and CR/LF in header values
(test_register_validation.py), repeated `limit` (test_errors.py).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Api, Owner, running_api

BIG = 3_000_000  # the body limit of the `roomy` server: a 1 MB string fits
MB = 1_000_000
URL = "http://127.0.0.1:9/cb"


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A server taking bodies up to 3 MB, so that what is wrong is the content, not the size."""
    with running_api(tmp_path_factory.mktemp("roomy"), max_size_body_request=BIG) as api:
        yield api


@pytest.fixture(scope="module")
def me(roomy: Api) -> Owner:
    return roomy.owner()


def assert_400(reply: httpx.Response) -> dict[str, str]:
    """The reply is a 400 in the one error shape; returns its `fields`."""
    assert reply.status_code == 400, reply.text[:500]
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["action"] and body["message"]
    fields: dict[str, str] = body["fields"]
    return fields


def post_raw(api: Api, owner: Owner | None, path: str, raw: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/json", **(owner.headers if owner else {})}
    return api.http.post(path, content=raw, headers=headers)


def task(**parts: Any) -> dict[str, Any]:
    request = {"url": URL, "method": "POST", **parts.pop("request", {})}
    return {"httpRequest": request, "config": {"executionDelay": 3_600_000}, **parts}


def listed(api: Api, owner: Owner) -> list[Any]:
    found: list[Any] = api.http.get("/v1/queues", headers=owner.headers).json()
    return found


# ---- bytes that are not UTF-8, and escapes that are not characters ----

NOT_UTF8 = {
    "invalid-byte": b"\xff",
    "overlong-slash": b"\xc0\xaf",
    "truncated-euro-sign": b"\xe2\x82",
    "surrogate-in-utf8": b"\xed\xa0\x80",
    "past-u+10ffff": b"\xf4\x90\x80\x80",
}


@pytest.mark.parametrize("bad", NOT_UTF8.values(), ids=NOT_UTF8.keys())
def test_invalid_utf8_inside_a_json_string_is_400(roomy: Api, me: Owner, bad: bytes) -> None:
    owner_body = b'{"name": "utf8-' + bad + b'-x"}'
    assert set(assert_400(post_raw(roomy, None, "/v1/owners/register", owner_body))) == {"body"}
    task_body = json.dumps(task(metadata={"k": "@"})).encode().replace(b"@", bad)
    assert set(assert_400(post_raw(roomy, me, "/v1/queues/register", task_body))) == {"body"}
    assert listed(roomy, me) == []


@pytest.mark.parametrize("escape", [r"\ud800", r"\udfff", r"\ud800\u0041", r"\udc00\ud800"])
def test_lone_surrogate_escapes_are_400(roomy: Api, me: Owner, escape: str) -> None:
    """Valid JSON text, but not a string of characters: it could not be stored or sent."""
    for field in ("metadata", "headers"):
        parts: dict[str, Any] = (
            {"metadata": {"k": "@"}}
            if field == "metadata"
            else {"request": {"headers": {"k": "@"}}}
        )
        raw = json.dumps(task(**parts)).encode().replace(b"@", escape.encode())
        assert set(assert_400(post_raw(roomy, me, "/v1/queues/register", raw))) == {"body"}
    assert listed(roomy, me) == []


# ---- JSON nested 10,000 deep ----

DEEP = {
    "arrays": b"[" * 10_000 + b"]" * 10_000,
    "objects": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "mixed": b'[{"a":' * 5_000 + b"1" + b"}]" * 5_000,
    "inside-a-task": json.dumps(task(request={"data": "@"}))
    .encode()
    .replace(b'"@"', b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
}


@pytest.mark.parametrize("raw", DEEP.values(), ids=DEEP.keys())
def test_json_nested_10000_deep_is_400(roomy: Api, me: Owner, raw: bytes) -> None:
    for owner, path in ((None, "/v1/owners/register"), (me, "/v1/queues/register")):
        fields = assert_400(post_raw(roomy, owner, path, raw))
        assert fields == {"body": "Invalid JSON: nested deeper than 32 levels"}
    assert roomy.http.get("/status").status_code == 200


# ---- numbers past every range ----

OUT_OF_RANGE = [
    # (where, the JSON number as written, the field the 400 names)
    ("config.retry", "18446744073709551616", "config.retry"),  # 2**64
    ("config.executionDelay", "1" + "0" * 30, "config.executionDelay"),
    ("config.executeAt", "100000000000000000000", "config.executeAt"),
    ("config.timeout", "-9223372036854775809", "config.timeout"),  # below int64
    ("config.redirectAttempts", "4294967296", "config.redirectAttempts"),
    ("config.keepAliveDuration", "1e3", "config.keepAliveDuration"),  # a float, even if whole
    ("config.ignoreStatusCode", "[4e2]", "config.ignoreStatusCode[0]"),
    ("config.proxy.port", "18446744073709551616", "config.proxy.port"),
    ("httpRequest.data.n", "18446744073709551616", "httpRequest.data.n"),
    ("config.retry", "1e400", "body"),  # no float can hold it: the JSON itself is refused
    ("httpRequest.data.n", "-1e400", "body"),
]


def with_number(where: str, number: str) -> bytes:
    """A task whose field at `where` is `number`, written exactly as given."""
    payload = task()
    holder = payload
    *parents, leaf = where.split(".")
    for part in parents:
        if part == "proxy":
            holder = holder.setdefault(part, {"protocol": "http", "host": "127.0.0.1"})
        elif part == "data":
            holder = holder.setdefault(part, {})
        else:
            holder = holder.setdefault(part, {})
    holder[leaf] = "@number@"
    return json.dumps(payload).encode().replace(b'"@number@"', number.encode())


@pytest.mark.parametrize(("where", "number", "named"), OUT_OF_RANGE)
def test_numbers_out_of_range_are_400_naming_the_field(
    roomy: Api, me: Owner, where: str, number: str, named: str
) -> None:
    fields = assert_400(post_raw(roomy, me, "/v1/queues/register", with_number(where, number)))
    assert set(fields) == {named}


@pytest.mark.parametrize(
    "query",
    ["limit=18446744073709551616", "offset=1" + "0" * 40, "limit=1e3", "offset=-0", "limit=0x10"],
)
def test_query_numbers_out_of_range_are_400(roomy: Api, me: Owner, query: str) -> None:
    name = query.split("=")[0]
    assert set(assert_400(roomy.http.get(f"/v1/queues?{query}", headers=me.headers))) == {name}


# ---- 1 MB strings ----

ONE_MB = "x" * MB
MB_STRINGS = {
    "httpRequest.url": task(request={"url": "http://127.0.0.1:9/" + ONE_MB}),
    "httpRequest.headers.k": task(request={"headers": {"k": ONE_MB}}),
    "httpRequest.query.k": task(request={"query": {"k": ONE_MB}}),
    "httpRequest.data": task(request={"data": ONE_MB}),
    "httpRequest.data.k": task(request={"data": {"k": ONE_MB}}),
    "httpRequest.authBasic.password": task(
        request={"authBasic": {"username": "u", "password": ONE_MB}}
    ),
    "config.userAgent": {**task(), "config": {"userAgent": ONE_MB}},
    "config.ca": {**task(), "config": {"ca": ONE_MB}},
    "metadata.k": task(metadata={"k": ONE_MB}),
}


@pytest.mark.parametrize(("named", "payload"), MB_STRINGS.items(), ids=MB_STRINGS.keys())
def test_1mb_string_is_400_naming_the_field(
    roomy: Api, me: Owner, named: str, payload: dict[str, Any]
) -> None:
    fields = assert_400(roomy.register(me, payload))
    assert set(fields) == {named}
    assert "length" in fields[named]
    assert listed(roomy, me) == []


def test_1mb_owner_name_is_400(roomy: Api) -> None:
    reply = roomy.http.post("/v1/owners/register", json={"name": ONE_MB})
    assert set(assert_400(reply)) == {"name"}


def test_1mb_string_on_the_default_limit_is_413(api: Api, owner: Owner) -> None:
    reply = api.register(owner, task(metadata={"k": ONE_MB}))
    assert reply.status_code == 413, reply.text
    assert str(api.settings.max_size_body_request) in reply.json()["message"]


# ---- a body over MAX_SIZE_BODY_REQUEST: 413, and the rest is never read ----


def raw_exchange(port: int, head: bytes, body_part: bytes = b"") -> tuple[bytes, bool]:
    """Send a request head and part of its body; return what came back and whether the
    server closed the connection (without the client ever sending the rest)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body_part)
        received = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                return received, True
            received += chunk
        return received, False


def test_declared_length_over_the_limit_is_413_before_the_body_is_sent(
    api: Api, owner: Owner
) -> None:
    port = int(api.base_url.rsplit(":", 1)[1])
    head = (
        "POST /v1/queues/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: {owner.headers['Authorization']}\r\n"
        f"X-Tasks-Owner-Id: {owner.id}\r\nContent-Length: 104857600\r\n\r\n"
    ).encode()
    received, closed = raw_exchange(port, head, b'{"httpRequest": ')
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), received[:300]
    assert b"connection: close" in rest.lower()
    assert closed, "the server must hang up rather than read (or wait for) 100 MB"
    assert listed(api, owner) == []


def test_chunked_body_over_the_limit_is_413_while_the_client_is_still_sending(
    api: Api,
) -> None:
    port = int(api.base_url.rsplit(":", 1)[1])
    head = (
        b"POST /v1/owners/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    over = api.settings.max_size_body_request + 1
    chunk = b'{"name": "' + b"a" * over
    # one chunk past the limit, and no final chunk: the body never ends
    received, closed = raw_exchange(port, head, b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert received.startswith(b"HTTP/1.1 413"), received[:300]
    assert closed


# ---- CR and LF in header names of a task ----


@pytest.mark.parametrize("record", ["headers", "query", "proxyHeaders"])
@pytest.mark.parametrize("name", ["X-Bad\r\nX-Evil", "X-Bad\n", "\rX", "X Bad", "X:Bad", "X\x00"])
def test_header_names_with_cr_lf_or_separators_are_400(
    roomy: Api, me: Owner, record: str, name: str
) -> None:
    values = {"X-Fine": "ok", name: "v"}
    payload = task(request={record: values}) if record != "proxyHeaders" else task()
    if record == "proxyHeaders":
        payload["config"]["proxyHeaders"] = values
    where = f"config.{record}" if record == "proxyHeaders" else f"httpRequest.{record}"
    fields = assert_400(roomy.register(me, payload))
    assert set(fields) == {f"{where}.{name}"}
    assert fields[f"{where}.{name}"].startswith("Invalid key")


# ---- raw HTTP with CR, LF or NUL where the protocol forbids them ----

RAW_REQUESTS = {
    "bare-cr-in-value": b"GET /status HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "bare-lf-splitting-a-value": b"GET /status HTTP/1.1\r\nHost: x\r\nX-A: a\nX-B: c\r\n\r\n",
    "nul-in-value": b"GET /status HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "cr-in-name": b"GET /status HTTP/1.1\r\nHost: x\r\nX-\rA: ab\r\n\r\n",
    "space-in-name": b"GET /status HTTP/1.1\r\nHost: x\r\nX A: ab\r\n\r\n",
    "two-lengths": (
        b"POST /v1/owners/register HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Content-Length: 3\r\n\r\n{}"
    ),
    "length-and-chunked": (
        b"POST /v1/owners/register HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("raw", RAW_REQUESTS.values(), ids=RAW_REQUESTS.keys())
def test_malformed_http_is_400_and_the_connection_closed(roomy: Api, raw: bytes) -> None:
    port = int(roomy.base_url.rsplit(":", 1)[1])
    received, closed = raw_exchange(port, raw)
    assert received.startswith(b"HTTP/1.1 400"), received[:300]
    assert closed
    assert roomy.http.get("/status").status_code == 200


# ---- repeated query parameters ----


@pytest.mark.parametrize(
    "query",
    [
        "offset=1&offset=2",
        "order=createdAt&order=estimateEndAt",
        "sort=asc&sort=desc",
        "state=RUNNING&state=PAUSED",
        "state=RUNNING&state=RUNNING",  # even when both say the same
    ],
)
def test_repeated_query_parameter_is_400(roomy: Api, me: Owner, query: str) -> None:
    name = query.split("=")[0]
    fields = assert_400(roomy.http.get(f"/v1/queues?{query}", headers=me.headers))
    assert fields == {name: "Repeated query parameter"}
