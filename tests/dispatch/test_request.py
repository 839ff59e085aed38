"""What a target receives for each request option, through the real API and real targets."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
import trustme

from tasks_server.model.spec import DEFAULT_USER_AGENT
from tests.conftest import Api, Owner
from tests.dispatch.helpers import FINAL, digest_params, netscape_cookies, run
from tests.targets import Arrival, H2Target, Reply, Target, tls_context


def sent_text(value: str) -> str:
    """A header value as the target got it (http.server reads headers as latin-1)."""
    return value.encode("latin-1").decode("utf-8")


def multipart_fields(arrival: Arrival) -> list[tuple[str, str]]:
    content_type = arrival.header("content-type") or ""
    assert content_type.startswith("multipart/form-data; boundary="), content_type
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + arrival.body
    )
    fields = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        fields.append((name, payload.decode()))
    return fields


# ---- method, url, query ----


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_method_without_body(api: Api, owner: Owner, target: Target, method: str) -> None:
    done = run(api, owner, {"url": target.url("/m"), "method": method.lower()})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/m")
    assert arrival.method == method
    assert arrival.body == b""
    if method in ("POST", "PUT", "PATCH"):
        # an empty body is announced as such, and is not dressed up as a form
        assert arrival.header("content-length") == "0"
        assert arrival.header("content-type") is None


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_drop_the_body(api: Api, owner: Owner, target: Target, method: str) -> None:
    done = run(api, owner, {"url": target.url("/m"), "method": method, "data": {"a": "b"}})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/m")
    assert arrival.method == method
    assert arrival.body == b""
    assert arrival.header("content-type") is None


def test_query_is_appended(api: Api, owner: Owner, target: Target) -> None:
    query = {"a": "1", "b": "x y&z=w", "c": "caf\u00e9"}
    done = run(api, owner, {"url": target.url("/q"), "method": "GET", "query": query})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/q")
    path, _, raw_query = arrival.path.partition("?")
    assert path == "/q"
    assert parse_qsl(raw_query) == list(query.items())


def test_query_joins_a_url_that_has_one(api: Api, owner: Owner, target: Target) -> None:
    url = target.url("/q?x=1&y=two")
    done = run(api, owner, {"url": url, "method": "GET", "query": {"a": "2"}})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/q")
    assert arrival.path == "/q?x=1&y=two&a=2"


def test_query_goes_before_a_fragment(api: Api, owner: Owner, target: Target) -> None:
    url = target.url("/q?x=1#section")
    done = run(api, owner, {"url": url, "method": "GET", "query": {"a": "2"}})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/q")
    assert arrival.path == "/q?x=1&a=2"


def test_non_ascii_path_is_percent_encoded(api: Api, owner: Owner, target: Target) -> None:
    done = run(api, owner, {"url": target.url("/caf\u00e9/\u00fc"), "method": "GET"})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.wait_for(1)
    assert arrival.path == "/caf%C3%A9/%C3%BC"


# ---- headers and user agent ----


def test_headers_are_sent_and_user_agent_comes_from_config(
    api: Api, owner: Owner, target: Target
) -> None:
    headers = {
        "X-One": "1",
        "X-Accent": "h\u00e9llo w\u00f6rld",
        "Accept": "application/xml",
        "User-Agent": "evil/1.0",
        "user-agent": "evil/2.0",
        "X-Forwarded-User-Agent": "evil/3.0",
    }
    done = run(
        api,
        owner,
        {"url": target.url("/h"), "method": "GET", "headers": headers},
        {"userAgent": "MyAgent/7.0 (test)"},
    )
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/h")
    assert arrival.header("x-one") == "1"
    assert sent_text(arrival.header("x-accent") or "") == "h\u00e9llo w\u00f6rld"
    assert arrival.header_values("accept") == ["application/xml"]
    assert arrival.header_values("user-agent") == ["MyAgent/7.0 (test)"]
    assert arrival.header("x-forwarded-user-agent") is None
    assert arrival.header("expect") is None


def test_default_user_agent(api: Api, owner: Owner, target: Target) -> None:
    done = run(api, owner, {"url": target.url("/ua"), "method": "GET"})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/ua")
    assert arrival.header_values("user-agent") == [DEFAULT_USER_AGENT]


# ---- the three body kinds ----


def test_json_object_body(api: Api, owner: Owner, target: Target) -> None:
    data = {
        "zeta": "last-key-first",
        "text": "caf\u00e9 \u2713",
        "n": 42,
        "x": 1.5,
        "neg": -7,
        "yes": True,
        "no": False,
        "nothing": None,
        "empty": "",
        "nested": {"deep": {"key": "value"}, "k": 1},
    }
    done = run(api, owner, {"url": target.url("/j"), "method": "POST", "data": data})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/j")
    assert arrival.header_values("content-type") == ["application/json"]
    assert arrival.header("content-length") == str(len(arrival.body))
    sent = json.loads(arrival.body)
    assert sent == data
    assert list(sent) == list(data)  # key order kept
    assert list(sent["nested"]) == ["deep", "k"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_json_body_with_other_methods(api: Api, owner: Owner, target: Target, method: str) -> None:
    done = run(api, owner, {"url": target.url("/j"), "method": method, "data": {"a": 1}})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/j")
    assert arrival.method == method
    assert json.loads(arrival.body) == {"a": 1}
    assert arrival.header("content-type") == "application/json"


def test_users_content_type_wins(api: Api, owner: Owner, target: Target) -> None:
    request = {
        "url": target.url("/j"),
        "method": "POST",
        "data": {"a": 1},
        "headers": {"content-type": "application/vnd.api+json"},
    }
    done = run(api, owner, request)
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/j")
    assert arrival.header_values("content-type") == ["application/vnd.api+json"]
    assert json.loads(arrival.body) == {"a": 1}


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_multipart_fields(api: Api, owner: Owner, target: Target, method: str) -> None:
    fields = [
        {"name": "plain", "value": "1"},
        {"name": "file", "value": "@/etc/passwd"},
        {"name": "include", "value": "</etc/hostname"},
        {"name": "accent", "value": "h\u00e9llo"},
        {"name": "plain", "value": "again"},
    ]
    done = run(api, owner, {"url": target.url("/f"), "method": method, "data": fields})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/f")
    assert arrival.method == method
    assert multipart_fields(arrival) == [(f["name"], f["value"]) for f in fields]
    assert b"root:" not in arrival.body  # never the content of a server file


def test_raw_string_sent_byte_for_byte(api: Api, owner: Owner, target: Target) -> None:
    data = "line one\r\nline two\t{not json} caf\u00e9 \u2603 %41 + &a=b "
    done = run(api, owner, {"url": target.url("/s"), "method": "POST", "data": data})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/s")
    assert arrival.body == data.encode("utf-8")
    assert arrival.header_values("content-type") == ["text/plain; charset=utf-8"]


@pytest.mark.parametrize("data", ["@/etc/passwd", "@/etc/hostname", "<@/etc/passwd", "@"])
def test_raw_string_with_at_is_never_a_file(
    api: Api, owner: Owner, target: Target, data: str
) -> None:
    done = run(api, owner, {"url": target.url("/s"), "method": "PUT", "data": data})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/s")
    assert arrival.body == data.encode()


def test_non_ascii_everywhere_is_sent_and_the_scheduler_lives_on(
    api: Api, owner: Owner, target: Target
) -> None:
    """pycurl refuses non-ASCII `str`: one such task must neither fail nor stop the others."""
    request = {
        "url": target.url("/u"),
        "method": "POST",
        "headers": {"X-Name": "J\u00fcrgen"},
        "data": [{"name": "city", "value": "K\u00f6ln"}],
        "cookie": [{"name": "c", "value": "\u00e9t\u00e9"}],
        "authBasic": {"username": "j\u00fcrgen", "password": "p\u00e4ss"},
    }
    done = run(api, owner, request, {"userAgent": "Agent \u00e9 1.0"})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/u")
    assert sent_text(arrival.header("x-name") or "") == "J\u00fcrgen"
    assert sent_text(arrival.header("user-agent") or "") == "Agent \u00e9 1.0"
    assert sent_text(arrival.header("cookie") or "") == "c=\u00e9t\u00e9"
    expected = base64.b64encode("j\u00fcrgen:p\u00e4ss".encode()).decode()
    assert arrival.header("authorization") == f"Basic {expected}"
    assert multipart_fields(arrival) == [("city", "K\u00f6ln")]
    after = run(api, owner, {"url": target.url("/after"), "method": "GET"})
    assert after["state"] == "SUCCESS", after


def test_undecodable_cookie_file_fails_the_attempt_not_the_scheduler(
    api: Api, owner: Owner, target: Target
) -> None:
    reply = api.register(
        owner, {"httpRequest": {"url": target.url("/c"), "method": "GET", "cookie": "abcde"}}
    )
    if reply.status_code == 400:
        assert "httpRequest.cookie" in reply.json()["fields"]
    else:
        assert reply.status_code == 201, reply.text
        done = api.wait_state(owner, reply.json()["id"], *FINAL)
        assert done["state"] == "ERROR", done
        assert done["statusCode"] == 0
        assert done["error"]
    after = run(api, owner, {"url": target.url("/after"), "method": "GET"})
    assert after["state"] == "SUCCESS", after


# ---- cookies ----


def test_cookie_array_becomes_one_cookie_header(api: Api, owner: Owner, target: Target) -> None:
    cookies = [{"name": "session", "value": "abc123"}, {"name": "theme", "value": "dark=1"}]
    done = run(api, owner, {"url": target.url("/c"), "method": "GET", "cookie": cookies})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/c")
    assert arrival.header_values("cookie") == ["session=abc123; theme=dark=1"]


# ---- redirects ----


def redirect_chain(target: Target, hops: int) -> None:
    """/r1 -> /r2 -> ... -> /r{hops+1}, which answers 200 "final"."""
    for n in range(1, hops + 1):
        target.script(f"/r{n}", always=Reply(302, b"moved", {"Location": f"/r{n + 1}"}))
    target.script(f"/r{hops + 1}", always=Reply(200, b"final"))


def test_redirects_are_followed(api: Api, owner: Owner, target: Target) -> None:
    redirect_chain(target, 3)
    done = run(api, owner, {"url": target.url("/r1"), "method": "GET"})
    assert done["state"] == "SUCCESS", done
    assert done["statusCode"] == 200
    assert base64.b64decode(done["response"]) == b"final"
    assert [a.path for a in target.arrivals] == ["/r1", "/r2", "/r3", "/r4"]
    assert all(a.header("x-tasks-queue-id") == done["id"] for a in target.arrivals)


@pytest.mark.parametrize(("limit", "state"), [(3, "SUCCESS"), (2, "ERROR")])
def test_redirect_attempts_limit(
    api: Api, owner: Owner, target: Target, limit: int, state: str
) -> None:
    redirect_chain(target, 3)
    done = run(api, owner, {"url": target.url("/r1"), "method": "GET"}, {"redirectAttempts": limit})
    assert done["state"] == state, done
    paths = [a.path for a in target.arrivals]
    if state == "SUCCESS":
        assert paths == ["/r1", "/r2", "/r3", "/r4"]
    else:
        assert paths == ["/r1", "/r2", "/r3"]
        assert "redirect" in done["error"].lower()


def test_redirect_attempts_zero_follows_none(api: Api, owner: Owner, target: Target) -> None:
    redirect_chain(target, 1)
    done = run(
        api,
        owner,
        {"url": target.url("/r1"), "method": "GET"},
        {"location": True, "redirectAttempts": 0},
    )
    assert done["state"] == "ERROR", done
    assert [a.path for a in target.arrivals] == ["/r1"]
    assert "redirect" in done["error"].lower()


def test_location_false_takes_the_redirect_as_the_answer(
    api: Api, owner: Owner, target: Target
) -> None:
    redirect_chain(target, 1)
    done = run(api, owner, {"url": target.url("/r1"), "method": "GET"}, {"location": False})
    assert done["state"] == "SUCCESS", done
    assert done["statusCode"] == 302
    assert done["error"] is None
    assert base64.b64decode(done["response"]) == b"moved"
    assert [a.path for a in target.arrivals] == ["/r1"]


# ---- TLS ----


def test_untrusted_certificate_fails_with_tls_error(api: Api, owner: Owner, https: Target) -> None:
    done = run(
        api,
        owner,
        {"url": https.url("/t"), "method": "GET"},
        {"retry": 1, "retryInterval": 50},
    )
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0
    assert "certificate" in done["error"].lower(), done["error"]
    assert done["attempts"] == 2  # a TLS failure is retried like any failure
    assert done["retryCount"] == 1
    assert https.arrivals == []  # no request got through the failed handshake


def test_insecure_accepts_the_certificate(api: Api, owner: Owner, https: Target) -> None:
    done = run(
        api,
        owner,
        {"url": https.url("/t"), "method": "POST", "data": {"a": 1}},
        {"insecure": True},
    )
    assert done["state"] == "SUCCESS", done
    assert done["error"] is None
    (arrival,) = https.arrivals_at("/t")
    assert json.loads(arrival.body) == {"a": 1}


# ---- HTTP versions ----


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_http_1_versions(api: Api, owner: Owner, target: Target, version: str) -> None:
    done = run(api, owner, {"url": target.url("/v"), "method": "GET"}, {"httpVersion": version})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/v")
    assert arrival.protocol == f"HTTP/{version}"


@pytest.fixture
def h2_tls_target(ca: trustme.CA) -> Iterator[H2Target]:
    server = H2Target(ssl_context=tls_context(ca))
    yield server
    server.close()


def test_http2_over_tls(api: Api, owner: Owner, h2_tls_target: H2Target) -> None:
    h2_tls_target.script("/two", Reply(201, b"made over h2"))
    request = {
        "url": h2_tls_target.url("/two"),
        "method": "POST",
        "query": {"q": "1"},
        "headers": {"X-Custom": "yes"},
        "data": {"over": "h2"},
    }
    done = run(api, owner, request, {"httpVersion": "2", "insecure": True})
    assert done["state"] == "SUCCESS", done
    assert done["statusCode"] == 201
    assert base64.b64decode(done["response"]) == b"made over h2"
    (arrival,) = h2_tls_target.arrivals_at("/two")
    assert arrival.protocol == "HTTP/2"
    assert arrival.method == "POST"
    assert arrival.path == "/two?q=1"
    assert arrival.header("x-custom") == "yes"
    assert arrival.header("x-tasks-queue-id") == done["id"]
    assert arrival.header("content-type") == "application/json"
    assert json.loads(arrival.body) == {"over": "h2"}


def test_http_1_1_cannot_talk_to_an_http2_only_target(
    api: Api, owner: Owner, h2_tls_target: H2Target
) -> None:
    """The control for the test above: the h2 target refuses HTTP/1.1."""
    done = run(
        api,
        owner,
        {"url": h2_tls_target.url("/two"), "method": "GET"},
        {"httpVersion": "1.1", "insecure": True},
    )
    assert done["state"] == "ERROR", done
    assert h2_tls_target.arrivals == []


def test_http2_prior_knowledge_in_clear(api: Api, owner: Owner) -> None:
    server = H2Target()
    try:
        done = run(
            api,
            owner,
            {"url": server.url("/h2c"), "method": "GET"},
            {"httpVersion": "2-prior-knowledge"},
        )
        assert done["state"] == "SUCCESS", done
        (arrival,) = server.arrivals_at("/h2c")
        assert arrival.protocol == "HTTP/2"
        assert arrival.header("x-tasks-queue-id") == done["id"]
    finally:
        server.close()


# ---- IP version ----


@pytest.fixture
def target6() -> Iterator[Target]:
    server = Target(host="::1")
    yield server
    server.close()


def test_ip_version_6(api: Api, owner: Owner, target6: Target) -> None:
    done = run(api, owner, {"url": target6.url("/six"), "method": "GET"}, {"ipVersion": 6})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target6.arrivals_at("/six")
    assert arrival.header("x-tasks-queue-id") == done["id"]


@pytest.mark.parametrize(("version", "state"), [(6, "SUCCESS"), (4, "ERROR")])
def test_ip_version_picks_the_address_of_a_name(
    api: Api, owner: Owner, target6: Target, version: int, state: str
) -> None:
    """libcurl resolves "localhost" to 127.0.0.1 and ::1; only ::1 has the target."""
    url = f"http://localhost:{target6.port}/six"
    done = run(api, owner, {"url": url, "method": "GET"}, {"ipVersion": version})
    assert done["state"] == state, done
    if state == "SUCCESS":
        assert len(target6.arrivals_at("/six")) == 1
    else:
        assert done["statusCode"] == 0
        assert "connect" in done["error"].lower(), done["error"]
        assert target6.arrivals == []


# ---- authentication ----


def basic_responder(user: str, password: str) -> Any:
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def respond(arrival: Arrival) -> Reply:
        if arrival.header("authorization") == expected:
            return Reply(200, b"welcome")
        return Reply(401, b"who are you", {"WWW-Authenticate": 'Basic realm="t"'})

    return respond


@pytest.mark.parametrize(("password", "state"), [("s3cr:et", "SUCCESS"), ("wrong", "ERROR")])
def test_auth_basic(api: Api, owner: Owner, target: Target, password: str, state: str) -> None:
    target.respond("/basic", basic_responder("alice", "s3cr:et"))
    done = run(
        api,
        owner,
        {
            "url": target.url("/basic"),
            "method": "GET",
            "authBasic": {"username": "alice", "password": password},
        },
    )
    assert done["state"] == state, done
    assert done["statusCode"] == (200 if state == "SUCCESS" else 401)
    (arrival,) = target.arrivals_at("/basic")  # basic is sent up front, no challenge
    assert (arrival.header("authorization") or "").startswith("Basic ")


def digest_responder(user: str, password: str, realm: str = "tasks@test") -> Any:
    nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
    challenge = {
        "WWW-Authenticate": f'Digest realm="{realm}", qop="auth", nonce="{nonce}", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41", algorithm=MD5'
    }

    def respond(arrival: Arrival) -> Reply:
        header = arrival.header("authorization") or ""
        if not header.startswith("Digest "):
            return Reply(401, b"challenge", challenge)
        params = digest_params(header, arrival.method, user, password, realm, nonce)
        if params and params.get("nonce") == nonce and params.get("uri") == arrival.path:
            return Reply(200, b"digest ok")
        return Reply(401, b"bad digest", challenge)

    return respond


@pytest.mark.parametrize(("password", "state"), [("Circle Of Life", "SUCCESS"), ("x", "ERROR")])
def test_auth_digest(api: Api, owner: Owner, target: Target, password: str, state: str) -> None:
    target.respond("/digest", digest_responder("Mufasa", "Circle Of Life"))
    done = run(
        api,
        owner,
        {
            "url": target.url("/digest"),
            "method": "POST",
            "query": {"x": "1"},
            "data": "payload",
            "authDigest": {"username": "Mufasa", "password": password},
        },
    )
    assert done["state"] == state, done
    first, second = target.arrivals_at("/digest")
    assert first.header("authorization") is None  # digest answers a challenge
    assert (second.header("authorization") or "").startswith("Digest ")
    assert second.body == b"payload"  # the body is sent again with the credentials
    if state == "SUCCESS":
        assert base64.b64decode(done["response"]) == b"digest ok"
    else:
        assert done["statusCode"] == 401


# ---- X-Tasks-* headers ----


def test_tasks_headers_on_first_attempt_and_retries(api: Api, owner: Owner, target: Target) -> None:
    target.script("/x", Reply(500), Reply(503))
    task = api.task(
        owner,
        {
            "httpRequest": {"url": target.url("/x"), "method": "GET"},
            "config": {"retry": 2, "retryInterval": 100, "retryExponential": False},
        },
    )
    done = api.wait_state(owner, task["id"], *FINAL)
    assert done["state"] == "SUCCESS", done
    first, second, third = target.arrivals_at("/x")
    for arrival in (first, second, third):
        assert arrival.header_values("x-tasks-queue-id") == [task["id"]]
    assert first.header("x-tasks-retry-count") is None
    assert first.header("x-tasks-retry-limit") is None
    assert first.header("x-tasks-estimate-next-retry-at") is None
    previous = first
    for number, arrival in enumerate((second, third), start=1):
        assert arrival.header_values("x-tasks-retry-count") == [str(number)]
        assert arrival.header_values("x-tasks-retry-limit") == ["2"]
        planned = int(arrival.header("x-tasks-estimate-next-retry-at") or "0")
        # the planned time of this very retry: after the previous arrival, and not later
        # than this one (ms granularity)
        assert previous.at_ms + 100 <= planned + 1, (previous.at_ms, planned)
        assert planned <= arrival.at_ms + 1, (planned, arrival.at_ms)
        previous = arrival


def test_users_headers_named_like_ours_are_never_replaced(
    api: Api, owner: Owner, target: Target
) -> None:
    target.script("/x", Reply(500))
    headers = {"X-Tasks-Queue-Id": "mine", "x-tasks-retry-count": "my-count"}
    task = api.task(
        owner,
        {
            "httpRequest": {"url": target.url("/x"), "method": "GET", "headers": headers},
            "config": {"retry": 1, "retryInterval": 50},
        },
    )
    done = api.wait_state(owner, task["id"], *FINAL)
    assert done["state"] == "SUCCESS", done
    first, second = target.arrivals_at("/x")
    for arrival in (first, second):
        assert arrival.header_values("x-tasks-queue-id") == ["mine"]
    assert first.header_values("x-tasks-retry-count") == ["my-count"]
    assert second.header_values("x-tasks-retry-count") == ["my-count"]
    # ours still fill in what the user did not set
    assert second.header_values("x-tasks-retry-limit") == ["1"]
    assert second.header("x-tasks-estimate-next-retry-at") is not None


def test_cookie_file_sends_its_matching_cookies(api: Api, owner: Owner, target: Target) -> None:
    cookie = netscape_cookies(
        "127.0.0.1\tFALSE\t/\tFALSE\t0\tfrom_file\tyes",
        "other.example\tFALSE\t/\tFALSE\t0\telsewhere\tno",
    )
    done = run(api, owner, {"url": target.url("/c"), "method": "GET", "cookie": cookie})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/c")
    assert arrival.header_values("cookie") == ["from_file=yes"]


def test_cookies_never_leak_to_the_next_task(api: Api, owner: Owner, target: Target) -> None:
    """Handles are reused; a task's cookies (given or set by the target) stay with it."""
    target.script("/set", Reply(200, b"ok", {"Set-Cookie": "planted=by-target; Path=/"}))
    cookie = netscape_cookies("127.0.0.1\tFALSE\t/\tFALSE\t0\tsecret\tof-first-owner")
    first = run(api, owner, {"url": target.url("/set"), "method": "GET", "cookie": cookie})
    assert first["state"] == "SUCCESS", first
    other = api.owner()
    for n in range(3):
        done = run(api, other, {"url": target.url(f"/next{n}"), "method": "GET"})
        assert done["state"] == "SUCCESS", done
    for n in range(3):
        (arrival,) = target.arrivals_at(f"/next{n}")
        assert arrival.header("cookie") is None, arrival.header("cookie")


def test_credentials_and_cookies_stay_with_the_first_host_on_redirect(
    api: Api, owner: Owner, target: Target
) -> None:
    elsewhere = Target()
    try:
        target.script("/r", always=Reply(302, b"", {"Location": elsewhere.url("/landed")}))
        request = {
            "url": target.url("/r"),
            "method": "GET",
            "cookie": [{"name": "session", "value": "s1"}],
            "authBasic": {"username": "u", "password": "p"},
            "headers": {"X-Other": "kept"},
        }
        done = run(api, owner, request)
        assert done["state"] == "SUCCESS", done
        (first,) = target.arrivals_at("/r")
        (landed,) = elsewhere.arrivals_at("/landed")
        assert first.header("cookie") == "session=s1"
        assert (first.header("authorization") or "").startswith("Basic ")
        assert landed.header("cookie") is None
        assert landed.header("authorization") is None
        assert landed.header("x-other") == "kept"
        assert landed.header("x-tasks-queue-id") == done["id"]
    finally:
        elsewhere.close()


def test_attempts_run_concurrently(api: Api, owner: Owner, target: Target) -> None:
    count, delay = 30, 0.4
    target.script("/slow", always=Reply(200, b"slow", delay=delay))
    payload = {"httpRequest": {"url": target.url("/slow"), "method": "GET"}}
    tasks = [api.task(owner, payload) for _ in range(count)]
    arrivals = target.wait_for(count, "/slow", timeout=15)
    ends = []
    for task in tasks:
        done = api.wait_state(owner, task["id"], *FINAL)
        assert done["state"] == "SUCCESS", done
        ends.append(done["estimateEndAt"])
    # one after the other would take count x delay = 12 s
    total = max(ends) - arrivals[0].at_ms
    assert total < count * delay * 1000 / 3, total


def test_non_ascii_host_is_sent_in_idna_form(api: Api, owner: Owner, target: Target) -> None:
    """libcurl resolves any *.localhost name to the loopback address itself."""
    url = f"http://B\u00fccher.localhost:{target.port}/idn"
    done = run(api, owner, {"url": url, "method": "GET"})
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/idn")
    assert arrival.header("host") == f"xn--bcher-kva.localhost:{target.port}"
