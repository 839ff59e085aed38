"""POST /v1/queues/register: every field of the payload, its range, default and transforms.

Valid values are checked by reading back the stored request (GET /v1/queues/:id/config);
invalid ones by the 400 body naming exactly the bad field by its path.
"""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tasks_server.dispatch import capabilities
from tests.conftest import Api, Owner

HOUR = 3_600_000
URL = "http://127.0.0.1:9/cb"  # never called: tasks here wait an hour
MAX_SAFE = 2**53 - 1
MASK = "********"
B64 = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
Y2100 = 4_102_444_800_000  # 2100-01-01T00:00:00Z
DEFAULT_USER_AGENT = "Tasks-Server/1.0 (compatible; Linux x86_64; +http://tasks-server)"
SAME = object()  # "stored as submitted"


def base() -> dict[str, Any]:
    return {"httpRequest": {"url": URL, "method": "POST"}, "config": {"executionDelay": HOUR}}


def put(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `payload` with `value` at the dotted `path` (objects created on the way)."""
    payload = copy.deepcopy(payload)
    *parents, leaf = path.split(".")
    node = payload
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return payload


def at(document: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        document = document[part]
    return document


def stored_config(api: Api, owner: Owner, task_id: str) -> dict[str, Any]:
    reply = api.http.get(f"/v1/queues/{task_id}/config", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    assert set(body) == {"httpRequest", "config"}
    return body


def bad_fields(reply: httpx.Response) -> dict[str, str]:
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert isinstance(body["action"], str) and body["action"]
    assert isinstance(body["message"], str) and body["message"]
    fields: dict[str, str] = body["fields"]
    assert all(isinstance(m, str) and m for m in fields.values()), fields
    return fields


def ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def tz(hours: int, minutes: int = 0) -> timezone:
    return timezone(timedelta(hours=hours, minutes=minutes))


def case(path: str, value: Any, expected: Any = SAME, id: str | None = None) -> Any:
    return pytest.param(path, value, expected, id=id or f"{path}={str(value)[:40]}")


AUTH = {"username": "user", "password": "secret"}
AUTH_STORED = {"username": "user", "password": MASK}
SIGV4 = {
    "provider1": "aws",
    "provider2": "amz",
    "region": "us-east-1",
    "service": "s3",
    "key": "AKIDEXAMPLE",
    "secret": "wJalrXUtnFEMI",
}

# (path, value, what GET /config shows at that path)
VALID = [
    # httpRequest
    case("httpRequest.url", "https://example.com/a?b=c#d"),
    case("httpRequest.url", "http://example.com", id="bare-origin"),
    case("httpRequest.url", "http://example.com/", id="trailing-slash"),
    case("httpRequest.url", "HTTPS://EXAMPLE.COM/X", id="uppercase-scheme"),
    case("httpRequest.url", "http://[::1]:8080/x", id="ipv6-host"),
    case("httpRequest.url", "http://h/" + "a" * 1015, id="url-1024-chars"),
    case("httpRequest.method", "post", "POST"),
    case("httpRequest.method", "PUT"),
    case("httpRequest.method", "patch", "PATCH"),
    case("httpRequest.method", "Delete", "DELETE"),
    case("httpRequest.method", "get", "GET"),
    case("httpRequest.query", {"a": "1", "b[]": "x y", "$_.-[]": "z"}),
    case("httpRequest.query", {"k": "v" * 1024}, id="query-value-1024"),
    case("httpRequest.query", {f"k{i}": "v" for i in range(64)}, id="query-64-keys"),
    case("httpRequest.query", {"k" * 64: "v"}, id="query-key-64"),
    case("httpRequest.headers", {"X-Trace": "abc", "Accept": "*/*"}),
    case("httpRequest.headers", {"Authorization": "Bearer x"}, {"Authorization": MASK}),
    case("httpRequest.headers", {"X-Long": "v" * 1024}, id="header-value-1024"),
    case("httpRequest.data", "raw text body"),
    case("httpRequest.data", "@/etc/passwd", id="data-at-sign-is-text"),
    case("httpRequest.data", "x" * 4096, id="data-string-4096"),
    case("httpRequest.data", [{"name": "a", "value": "b"}]),
    case("httpRequest.data", [{"name": f"f{i}", "value": "v"} for i in range(64)], id="form-64"),
    case("httpRequest.data", [{"name": "n" * 64, "value": "v" * 4096}], id="form-max-lengths"),
    case("httpRequest.data", {"a": {"b": {"c": 1}}}, id="data-3-levels"),
    case("httpRequest.data", {"s": "", "n": 1.5, "i": -3, "t": True, "z": None}, id="data-kinds"),
    case("httpRequest.data", {}, id="data-empty-object"),
    case("httpRequest.data", {"a": {}}, id="data-empty-nested"),
    case("httpRequest.data", {"s": "x" * 4096}, id="data-value-4096"),
    case("httpRequest.cookie", [{"name": "sid", "value": "abc"}], [{"name": "sid", "value": MASK}]),
    case(
        "httpRequest.cookie",
        [{"name": f"c{i}", "value": "v"} for i in range(16)],
        [{"name": f"c{i}", "value": MASK} for i in range(16)],
        id="cookie-16",
    ),
    case("httpRequest.cookie", "c2lkPTE=", MASK, id="cookie-base64"),
    case("httpRequest.authBasic", AUTH, AUTH_STORED),
    case("httpRequest.authDigest", AUTH, AUTH_STORED),
    *([case("httpRequest.authNtlm", AUTH, AUTH_STORED)] if capabilities.NTLM else []),
    case(
        "httpRequest.authBasic",
        {"username": "u" * 64, "password": "p" * 256},
        {"username": "u" * 64, "password": MASK},
        id="auth-max-lengths",
    ),
    case("httpRequest.authAwsSigv4", SIGV4, {**SIGV4, "key": MASK, "secret": MASK}),
    case("httpRequest.transport", "fetch"),
    case("httpRequest.transport", "curl"),
    case("httpRequest.transport", None),
    # config: scheduling
    case("config.executionDelay", 0),
    case("config.executionDelay", 10**15),
    case("config.executeAt", Y2100),
    case("config.executeAt", "2100-01-01T00:00:00Z", Y2100),
    case("config.executeImmediately", True),
    case("config.executeImmediately", False),
    case("config.retry", 0),
    case("config.retry", 5),
    case("config.retry", MAX_SAFE),
    case("config.retryAt", Y2100),
    case("config.retryAt", "Fri, 01 Jan 2100 00:00:00 GMT", Y2100),
    case("config.retryInterval", 1),
    case("config.retryInterval", MAX_SAFE),
    case("config.retryExponential", False),
    case("config.ignoreStatusCode", []),
    case("config.ignoreStatusCode", [400, 599]),
    case("config.ignoreStatusCode", [500, 404, 404], [404, 500], id="ignore-deduplicated-sorted"),
    case("config.ignoreStatusCode", list(range(400, 440)), id="ignore-40"),
    case("config.timeout", 1000),
    case("config.timeout", MAX_SAFE),
    case("config.timeoutAt", Y2100),
    case("config.timeoutAt", "2100-01-01T07:00:00+07:00", Y2100),
    # config: HTTP behaviour
    *[case("config.httpVersion", v) for v in ("0.9", "1.0", "1.1", "2", "2-prior-knowledge")],
    case("config.userAgent", "agent/01"),
    case("config.userAgent", "u" * 256, id="user-agent-256"),
    case("config.ipVersion", 4),
    case("config.ipVersion", 6),
    *[case("config.credentials", v) for v in ("include", "omit", "same-origin")],
    *[
        case("config.referrerPolicy", v)
        for v in (
            "",
            "no-referrer",
            "no-referrer-when-downgrade",
            "origin",
            "origin-when-cross-origin",
            "same-origin",
            "strict-origin",
            "strict-origin-when-cross-origin",
            "unsafe-url",
        )
    ],
    *[case("config.mode", v) for v in ("cors", "no-cors", "same-origin")],
    case("config.refererUrl", "auto", "AUTO"),
    case("config.refererUrl", "AUTO"),
    case("config.refererUrl", "https://example.com/from"),
    case("config.keepAliveDuration", 0),
    case("config.keepAliveDuration", 259200),
    case("config.hsts", True),
    case("config.hsts", False),
    case("config.hsts", "aHN0cw=="),
    case("config.sessionId", False),
    case("config.insecure", True),
    case("config.traceResponseData", False),
    case("config.location", False),
    case("config.locationTrusted", AUTH, AUTH_STORED),
    case("config.redirectAttempts", 0),
    case("config.redirectAttempts", 32),
    case("config.proto", "HTTPS", "https"),
    case("config.proto", "http"),
    case("config.protoRedirect", "Http", "http"),
    case("config.dnsServer", ["1.1.1.1"]),
    case("config.dnsServer", ["::1", "8.8.8.8", "2001:db8::1", "9.9.9.9"], id="dns-4"),
    case("config.resolve", [{"host": "example.com", "port": 443, "address": ["127.0.0.1"]}]),
    case(
        "config.resolve",
        [{"host": "*", "port": 65535, "address": ["::1", "10.0.0.1", "10.0.0.2", "[::2]"]}] * 4,
        id="resolve-4-wildcard",
    ),
    case("config.dohUrl", "https://dns.example/dns-query"),
    case("config.dohInsecure", True),
    *[case("config.tlsVersion", v) for v in ("1.0", "1.1", "1.2", "1.3")],
    case("config.tlsMaxVersion", "1.3"),
    case("config.ca", B64),
    case("config.ca", B64[:40] + "\n" + B64[40:], id="ca-wrapped-base64"),
    case("config.cert", {"value": B64}, {"value": B64, "password": None}),
    case("config.cert", {"value": B64, "password": "pw"}, {"value": B64, "password": MASK}),
    *[case("config.certType", v, v.upper()) for v in ("der", "eng", "p12", "PEM")],
    case("config.certStatus", True),
    case("config.key", B64, MASK),
    *[case("config.keyType", v, v.upper()) for v in ("der", "Eng", "PEM")],
    case(
        "config.proxy",
        {"protocol": "HTTPS", "host": "proxy.example", "port": 8080},
        {"protocol": "https", "host": "proxy.example", "port": 8080},
    ),
    case(
        "config.proxy",
        {"protocol": "http", "host": "10.0.0.1"},
        {"protocol": "http", "host": "10.0.0.1", "port": None},
        id="proxy-no-port",
    ),
    case("config.proxyHeaders", {"X-Proxy": "1"}),
    case("config.proxyHeaders", {"Proxy-Authorization": "Basic x"}, {"Proxy-Authorization": MASK}),
    case("config.proxyInsecure", True),
    case("config.proxyHttpVersion", "1.0"),
    case("config.proxyAuthBasic", AUTH, AUTH_STORED),
    case("config.proxyAuthDigest", AUTH, AUTH_STORED),
    *([case("config.proxyAuthNtlm", AUTH, AUTH_STORED)] if capabilities.NTLM else []),
    case("config.haProxyClientIp", "10.0.0.1"),
    case("config.haProxyClientIp", "2001:db8::7"),
    case("config.haProxyProtocol", True),
]


@pytest.mark.parametrize(("path", "value", "expected"), VALID)
def test_valid_value_is_accepted_and_stored(
    shared: Api, me: Owner, path: str, value: Any, expected: Any
) -> None:
    task = shared.task(me, put(base(), path, value))
    assert task["state"] == "RUNNING"
    stored = stored_config(shared, me, task["id"])
    assert at(stored, path) == (value if expected is SAME else expected)


def bad(path: str, value: Any, named: str | None = None, id: str | None = None) -> Any:
    return pytest.param(path, value, named or path, id=id or f"{path}={str(value)[:40]}")


# (path, value, the field the 400 names)
INVALID = [
    # httpRequest
    bad("httpRequest.url", "ftp://example.com/a"),
    bad("httpRequest.url", "example.com/a"),
    bad("httpRequest.url", "http://"),
    bad("httpRequest.url", "http:///path"),
    bad("httpRequest.url", "http://a b/c"),
    bad("httpRequest.url", "http://host:99999/x"),
    bad("httpRequest.url", "http://host:port/x"),
    bad("httpRequest.url", "http://[::1/x"),
    bad("httpRequest.url", "http://h/x\n"),
    bad("httpRequest.url", "http://h/" + "a" * 1016, id="url-1025-chars"),
    bad("httpRequest.url", ""),
    bad("httpRequest.url", 123),
    bad("httpRequest.url", None),
    bad("httpRequest.method", "HEAD"),
    bad("httpRequest.method", "OPTIONS"),
    bad("httpRequest.method", ""),
    bad("httpRequest.method", "GET\n"),
    bad("httpRequest.method", " GET"),
    bad("httpRequest.method", 1),
    bad("httpRequest.query", {}),
    bad("httpRequest.query", "a=b"),
    bad("httpRequest.query", {"a b": "x"}, "httpRequest.query.a b"),
    bad("httpRequest.query", {"a": ""}, "httpRequest.query.a"),
    bad("httpRequest.query", {"a": "x" * 1025}, "httpRequest.query.a"),
    bad("httpRequest.query", {"a": 1}, "httpRequest.query.a"),
    bad("httpRequest.query", {"k" * 65: "v"}, "httpRequest.query." + "k" * 65, id="query-key-65"),
    bad("httpRequest.query", {f"k{i}": "v" for i in range(65)}, id="query-65-keys"),
    bad("httpRequest.headers", {"X-A": "b\r\nX-Injected: 1"}, "httpRequest.headers.X-A"),
    bad("httpRequest.headers", {"X-A": "b\nc"}, "httpRequest.headers.X-A", id="header-lf"),
    bad("httpRequest.headers", {"X-A": "b\rc"}, "httpRequest.headers.X-A", id="header-cr"),
    bad("httpRequest.headers", {"X-A": "ends\n"}, "httpRequest.headers.X-A", id="header-final-lf"),
    bad("httpRequest.headers", {"X-A": "n\x00l"}, "httpRequest.headers.X-A", id="header-nul"),
    bad("httpRequest.headers", {"Bad:Name": "x"}, "httpRequest.headers.Bad:Name"),
    bad("httpRequest.headers", {"X-A\n": "x"}, "httpRequest.headers.X-A\n", id="header-name-lf"),
    bad("httpRequest.headers", {"X-A": ""}, "httpRequest.headers.X-A"),
    bad("httpRequest.headers", []),
    bad("httpRequest.data", ""),
    bad("httpRequest.data", "x" * 4097, id="data-string-4097"),
    bad("httpRequest.data", []),
    bad("httpRequest.data", 5),
    bad("httpRequest.data", True),
    bad("httpRequest.data", [{"name": "a"}], "httpRequest.data[0].value"),
    bad("httpRequest.data", [{"name": "", "value": "v"}], "httpRequest.data[0].name"),
    bad("httpRequest.data", [{"name": "a", "value": "v" * 4097}], "httpRequest.data[0].value"),
    bad("httpRequest.data", [{"name": "n" * 65, "value": "v"}], "httpRequest.data[0].name"),
    bad("httpRequest.data", [{"name": "a", "value": "b", "x": 1}], "httpRequest.data[0].x"),
    bad("httpRequest.data", [{"name": f"f{i}", "value": "v"} for i in range(65)], id="form-65"),
    bad("httpRequest.data", {"a": [1]}, "httpRequest.data.a"),
    bad("httpRequest.data", {"a": {"b": {"c": {"d": 1}}}}, "httpRequest.data.a.b.c"),
    bad("httpRequest.data", {"bad key": 1}, "httpRequest.data.bad key"),
    bad("httpRequest.data", {"s": "x" * 4097}, "httpRequest.data.s"),
    bad("httpRequest.cookie", "not base64!"),
    bad("httpRequest.cookie", ""),
    bad("httpRequest.cookie", []),
    bad("httpRequest.cookie", [{"name": "a", "value": ""}], "httpRequest.cookie[0].value"),
    bad("httpRequest.cookie", [{"name": "a", "value": "x;y"}], "httpRequest.cookie[0].value"),
    bad("httpRequest.cookie", [{"name": "a b", "value": "x"}], "httpRequest.cookie[0].name"),
    bad("httpRequest.cookie", [{"name": "a", "value": "v" * 513}], "httpRequest.cookie[0].value"),
    bad("httpRequest.cookie", [{"name": f"c{i}", "value": "v"} for i in range(17)], id="cookie-17"),
    bad("httpRequest.cookie", 1),
    bad(
        "httpRequest.authBasic", {"username": "", "password": "p"}, "httpRequest.authBasic.username"
    ),
    bad("httpRequest.authBasic", {"username": "u"}, "httpRequest.authBasic.password"),
    bad(
        "httpRequest.authDigest",
        {"username": "u", "password": "p" * 257},
        "httpRequest.authDigest.password",
    ),
    bad(
        "httpRequest.authNtlm",
        {"username": "u" * 65, "password": "p"},
        "httpRequest.authNtlm.username",
    ),
    bad("httpRequest.authBasic", "user:pass"),
    bad(
        "httpRequest.authAwsSigv4",
        {**SIGV4, "provider1": "ab"},
        "httpRequest.authAwsSigv4.provider1",
    ),
    bad("httpRequest.authAwsSigv4", {**SIGV4, "region": ""}, "httpRequest.authAwsSigv4.region"),
    bad(
        "httpRequest.authAwsSigv4",
        {k: v for k, v in SIGV4.items() if k != "secret"},
        "httpRequest.authAwsSigv4.secret",
    ),
    bad("httpRequest.transport", "http"),
    bad("httpRequest.transport", "CURL"),
    # config: scheduling
    bad("config.executionDelay", -1),
    bad("config.executionDelay", 1.5),
    bad("config.executionDelay", "1"),
    bad("config.executionDelay", True),
    bad("config.executionDelay", 2**53),
    bad("config.executionDelay", MAX_SAFE, id="delay-past-the-largest-date"),
    bad("config.executeAt", 1000, id="execute-at-1970"),
    bad("config.executeAt", "2000-01-01T00:00:00Z"),
    bad("config.executeAt", "garbage"),
    bad("config.executeAt", ""),
    bad("config.executeAt", "4102444800000", id="execute-at-numeric-string"),
    bad("config.executeAt", True),
    bad("config.executeAt", float(Y2100), id="execute-at-float"),
    bad("config.executeAt", -1),
    bad("config.executeAt", 8_640_000_000_000_001),
    bad("config.executeAt", "2100-02-30T00:00:00Z"),
    bad("config.executeImmediately", "yes"),
    bad("config.executeImmediately", 1),
    bad("config.retry", -1),
    bad("config.retry", 1.5),
    bad("config.retry", "3"),
    bad("config.retry", 2**53),
    bad("config.retryAt", "not a date"),
    bad("config.retryAt", False),
    bad("config.retryInterval", 0),
    bad("config.retryInterval", 2.5),
    bad("config.retryExponential", "true"),
    bad("config.retryExponential", 1),
    bad("config.ignoreStatusCode", [399], "config.ignoreStatusCode[0]"),
    bad("config.ignoreStatusCode", [404, 600], "config.ignoreStatusCode[1]"),
    bad("config.ignoreStatusCode", [404.5], "config.ignoreStatusCode[0]"),
    bad("config.ignoreStatusCode", [True], "config.ignoreStatusCode[0]"),
    bad("config.ignoreStatusCode", "404"),
    bad("config.ignoreStatusCode", 404),
    bad("config.ignoreStatusCode", [404] * 41, id="ignore-41"),
    bad("config.timeout", 999),
    bad("config.timeout", 0),
    bad("config.timeout", 1000.5),
    bad("config.timeoutAt", "soon"),
    # config: HTTP behaviour
    bad("config.httpVersion", "1"),
    bad("config.httpVersion", "2.0"),
    bad("config.httpVersion", 2),
    bad("config.httpVersion", "HTTP/1.1"),
    bad("config.userAgent", "1234567", id="user-agent-7"),
    bad("config.userAgent", "u" * 257, id="user-agent-257"),
    bad("config.userAgent", "agent/1.0\r\nX-Injected: 1"),
    bad("config.userAgent", 12345678),
    bad("config.ipVersion", 5),
    bad("config.ipVersion", "4"),
    bad("config.ipVersion", 4.0),
    bad("config.credentials", "all"),
    bad("config.credentials", ""),
    bad("config.referrerPolicy", "never"),
    bad("config.mode", "navigate"),
    bad("config.refererUrl", "nope"),
    bad("config.refererUrl", "ftp://example.com/x"),
    bad("config.refererUrl", ""),
    bad("config.refererUrl", "http://host:70000/x"),
    bad("config.keepAliveDuration", -1),
    bad("config.keepAliveDuration", 259201),
    bad("config.keepAliveDuration", 1.5),
    bad("config.hsts", "!!!"),
    bad("config.hsts", ""),
    bad("config.hsts", 1),
    bad("config.sessionId", "no"),
    bad("config.insecure", 0),
    bad("config.traceResponseData", None),
    bad("config.location", "false"),
    bad("config.locationTrusted", {"username": "u"}, "config.locationTrusted.password"),
    bad("config.redirectAttempts", -1),
    bad("config.redirectAttempts", 33),
    bad("config.proto", "ftp"),
    bad("config.protoRedirect", "file"),
    bad("config.dnsServer", []),
    bad("config.dnsServer", ["not-an-ip"], "config.dnsServer[0]"),
    bad("config.dnsServer", ["1.1.1.1", "256.1.1.1"], "config.dnsServer[1]"),
    bad("config.dnsServer", ["1:2"], "config.dnsServer[0]"),
    bad("config.dnsServer", [":::"], "config.dnsServer[0]"),
    bad("config.dnsServer", ["1.1.1.1"] * 5, id="dns-5"),
    bad("config.dnsServer", "1.1.1.1"),
    bad("config.resolve", []),
    bad(
        "config.resolve",
        [{"host": "a.example", "port": 22, "address": ["1.2.3.4"]}],
        "config.resolve[0].port",
        id="resolve-port-22",
    ),
    bad(
        "config.resolve",
        [{"host": "a.example", "port": 0, "address": ["1.2.3.4"]}],
        "config.resolve[0].port",
    ),
    bad(
        "config.resolve",
        [{"host": "a.example", "port": 65536, "address": ["1.2.3.4"]}],
        "config.resolve[0].port",
    ),
    bad(
        "config.resolve",
        [{"host": "-bad-", "port": 80, "address": ["1.2.3.4"]}],
        "config.resolve[0].host",
    ),
    bad("config.resolve", [{"host": "a", "port": 80, "address": []}], "config.resolve[0].address"),
    bad(
        "config.resolve",
        [{"host": "a", "port": 80, "address": ["x"]}],
        "config.resolve[0].address[0]",
    ),
    bad(
        "config.resolve",
        [{"host": "a", "port": 80, "address": ["1.2.3.4"]}] * 5,
        id="resolve-5",
    ),
    bad("config.resolve", [{"host": "a", "port": 80}], "config.resolve[0].address"),
    bad("config.dohUrl", "nope"),
    bad("config.dohInsecure", "x"),
    bad("config.tlsVersion", "1.4"),
    bad("config.tlsMaxVersion", 1.2),
    bad("config.ca", "!!!"),
    bad("config.ca", ""),
    bad("config.ca", "   ", id="ca-blank"),
    bad("config.cert", {"value": "!!!"}, "config.cert.value"),
    bad("config.cert", {"password": "x"}, "config.cert.value"),
    bad("config.cert", {"value": B64, "password": ""}, "config.cert.password"),
    bad("config.cert", B64),
    bad("config.certType", "crt"),
    bad("config.certStatus", "yes"),
    bad("config.key", "!!!"),
    bad("config.keyType", "P12"),
    bad("config.proxy", {"protocol": "socks5", "host": "p"}, "config.proxy.protocol"),
    bad("config.proxy", {"protocol": "http"}, "config.proxy.host"),
    bad("config.proxy", {"protocol": "http", "host": "bad host"}, "config.proxy.host"),
    *[
        bad("config.proxy", {"protocol": "http", "host": "p", "port": port}, "config.proxy.port")
        for port in (0, 20, 21, 22, 23, 25, 53, 65536)
    ],
    bad("config.proxyHeaders", {"a": "x\r\ny"}, "config.proxyHeaders.a"),
    bad("config.proxyInsecure", "x"),
    bad("config.proxyHttpVersion", "2"),
    bad(
        "config.proxyAuthBasic", {"username": "u", "password": ""}, "config.proxyAuthBasic.password"
    ),
    bad("config.proxyAuthDigest", {"password": "p"}, "config.proxyAuthDigest.username"),
    bad("config.proxyAuthNtlm", [], "config.proxyAuthNtlm"),
    bad("config.haProxyClientIp", "nope"),
    bad("config.haProxyClientIp", "999.1.1.1"),
    bad("config.haProxyProtocol", "x"),
]


@pytest.mark.parametrize(("path", "value", "named"), INVALID)
def test_invalid_value_is_400_naming_its_path(
    shared: Api, me: Owner, path: str, value: Any, named: str
) -> None:
    fields = bad_fields(shared.register(me, put(base(), path, value)))
    assert set(fields) == {named}, fields
    assert shared.http.get("/v1/queues", headers=me.headers).json() == []


@pytest.mark.parametrize("missing", ["httpRequest", "httpRequest.url", "httpRequest.method"])
def test_required_fields(shared: Api, me: Owner, missing: str) -> None:
    payload = base()
    *parents, leaf = missing.split(".")
    node = payload
    for part in parents:
        node = node[part]
    del node[leaf]
    fields = bad_fields(shared.register(me, payload))
    assert set(fields) == {missing}


@pytest.mark.parametrize("body", [[], "task", 1, None], ids=["array", "string", "number", "null"])
def test_body_must_be_an_object(shared: Api, me: Owner, body: Any) -> None:
    assert set(bad_fields(shared.register(me, body))) == {"body"}


@pytest.mark.parametrize("part", ["httpRequest", "config", "metadata"])
def test_parts_must_be_objects(shared: Api, me: Owner, part: str) -> None:
    assert set(bad_fields(shared.register(me, put(base(), part, ["x"])))) == {part}


# ---- strictness: an unknown key at any level ----

UNKNOWN_AT = [
    ("", base()),
    ("httpRequest", base()),
    ("config", base()),
    ("httpRequest.authBasic", put(base(), "httpRequest.authBasic", AUTH)),
    ("httpRequest.authAwsSigv4", put(base(), "httpRequest.authAwsSigv4", SIGV4)),
    ("httpRequest.data[0]", put(base(), "httpRequest.data", [{"name": "a", "value": "b"}])),
    ("httpRequest.cookie[0]", put(base(), "httpRequest.cookie", [{"name": "a", "value": "b"}])),
    (
        "config.resolve[0]",
        put(base(), "config.resolve", [{"host": "a", "port": 80, "address": ["1.2.3.4"]}]),
    ),
    ("config.proxy", put(base(), "config.proxy", {"protocol": "http", "host": "p"})),
    ("config.cert", put(base(), "config.cert", {"value": B64})),
    ("config.locationTrusted", put(base(), "config.locationTrusted", AUTH)),
    ("config.proxyAuthDigest", put(base(), "config.proxyAuthDigest", AUTH)),
]


def _add_unknown(payload: dict[str, Any], where: str) -> dict[str, Any]:
    node: Any = payload
    for part in filter(None, where.replace("[0]", ".0").split(".")):
        node = node[int(part)] if part.isdigit() else node[part]
    node["bogus"] = 1
    return payload


@pytest.mark.parametrize(("where", "payload"), UNKNOWN_AT, ids=[w or "top" for w, _ in UNKNOWN_AT])
def test_unknown_key_at_every_level_is_400(
    shared: Api, me: Owner, where: str, payload: dict[str, Any]
) -> None:
    # the payload without the unknown key is valid
    shared.task(me, payload)
    fields = bad_fields(shared.register(me, _add_unknown(copy.deepcopy(payload), where)))
    named = f"{where}.bogus" if where else "bogus"
    assert fields == {named: "Unknown field"}


def test_snake_case_names_are_unknown(shared: Api, me: Owner) -> None:
    payload = {"http_request": {"url": URL, "method": "GET"}, "config": {"execution_delay": 5}}
    fields = bad_fields(shared.register(me, payload))
    assert set(fields) == {"http_request", "httpRequest", "config.execution_delay"}


# ---- integers where the original took any number ----

INTEGER_FIELDS = [
    ("config.executionDelay", 2.0),
    ("config.retry", 2.0),
    ("config.retryInterval", 1000.0),
    ("config.timeout", 5000.0),
    ("config.keepAliveDuration", 30.0),
    ("config.redirectAttempts", 8.0),
    ("config.ipVersion", 6.0),
    ("config.executeAt", float(Y2100)),
    ("config.retryAt", float(Y2100)),
    ("config.timeoutAt", float(Y2100)),
    ("config.ignoreStatusCode", [404.0]),
    ("config.resolve", [{"host": "a", "port": 443.0, "address": ["1.2.3.4"]}]),
    ("config.proxy", {"protocol": "http", "host": "p", "port": 8080.0}),
]


@pytest.mark.parametrize(("path", "value"), INTEGER_FIELDS, ids=[p for p, _ in INTEGER_FIELDS])
def test_floats_are_refused_where_integers_are_required(
    shared: Api, me: Owner, path: str, value: Any
) -> None:
    # even a float with no fraction: the wire says 2.0, not 2
    fields = bad_fields(shared.register(me, put(base(), path, value)))
    assert len(fields) == 1
    (named,) = fields
    assert named.startswith(path)


# ---- several bad fields at once ----


def test_every_bad_field_is_named_at_once(shared: Api, me: Owner) -> None:
    payload = {
        "httpRequest": {
            "url": "ftp://x/y",
            "method": "HEAD",
            "headers": {"X-A": "a\r\nb", "X-Ok": "fine", "bad key": "v"},
            "cookie": [{"name": "a", "value": ""}, {"name": "b", "value": "ok"}, {"value": "v"}],
        },
        "config": {
            "retry": -1,
            "timeout": 5,
            "ignoreStatusCode": [200, 404, 700],
            "resolve": [{"host": "-x", "port": 22, "address": ["1.2.3.4"]}],
            "proxy": {"protocol": "gopher", "host": "p", "extra": True},
            "nope": 1,
        },
        "metadata": {"ok": "v", "k": ""},
        "unknown": 1,
    }
    fields = bad_fields(shared.register(me, payload))
    assert set(fields) == {
        "httpRequest.url",
        "httpRequest.method",
        "httpRequest.headers.X-A",
        "httpRequest.headers.bad key",
        "httpRequest.cookie[0].value",
        "httpRequest.cookie[2].name",
        "config.retry",
        "config.timeout",
        "config.ignoreStatusCode[0]",
        "config.ignoreStatusCode[2]",
        "config.resolve[0].host",
        "config.proxy.protocol",
        "config.proxy.extra",
        "config.nope",
        "metadata.k",
        "unknown",
    }
    assert fields["unknown"] == "Unknown field"
    assert fields["httpRequest.cookie[2].name"] == "Required field is missing"


def test_every_rule_across_fields_is_named_at_once(shared: Api, me: Owner) -> None:
    payload = {
        "httpRequest": {"url": URL, "method": "GET", "transport": "curl"},
        "config": {
            "executeAt": Y2100,
            "retryAt": Y2100 + 10,
            "timeoutAt": Y2100 - 10,
            "credentials": "omit",
            "mode": "cors",
            "referrerPolicy": "origin",
            "dnsServer": ["1.1.1.1", "1:2"],
            "resolve": [{"host": "a", "port": 22, "address": ["1.2.3.4", "1::2::3"]}],
            "proxy": {"protocol": "http", "host": "p", "port": 25},
            "ca": "!!!",
            "key": "   ",
        },
    }
    fields = bad_fields(shared.register(me, payload))
    assert set(fields) == {
        "config.retryAt",
        "config.timeoutAt",
        "config.credentials",
        "config.mode",
        "config.referrerPolicy",
        "config.dnsServer[1]",
        "config.resolve[0].port",
        "config.resolve[0].address[1]",
        "config.proxy.port",
        "config.ca",
        "config.key",
    }


def test_messages_say_what_is_expected(shared: Api, me: Owner) -> None:
    payload = put(base(), "config.retry", -1)
    payload = put(payload, "httpRequest.method", "HEAD")
    payload = put(payload, "config.nope", 1)
    fields = bad_fields(shared.register(me, payload))
    assert fields["config.retry"] == "Expected `int` >= 0"
    assert fields["httpRequest.method"] == "Expected GET, POST, PUT, PATCH or DELETE"
    assert fields["config.nope"] == "Unknown field"


@pytest.mark.parametrize(
    ("path", "value", "values"),
    [
        ("httpRequest.transport", "xhr", "fetch, curl"),
        ("config.httpVersion", "4", "0.9, 1.0, 1.1, 2, 2-prior-knowledge, 3"),
        ("config.httpVersion", 2, "0.9, 1.0, 1.1, 2, 2-prior-knowledge, 3"),
        ("config.ipVersion", 5, "4, 6"),
        ("config.tlsVersion", "1.4", "1.0, 1.1, 1.2, 1.3"),
        ("config.proxyHttpVersion", "2", "1.0, 1.1"),
        ("config.mode", "open", "cors, no-cors, same-origin"),
        (
            "config.referrerPolicy",
            "never",
            '"", no-referrer, no-referrer-when-downgrade, origin, origin-when-cross-origin,'
            " same-origin, strict-origin, strict-origin-when-cross-origin, unsafe-url",
        ),
    ],
)
def test_a_bad_enum_value_lists_the_values(
    shared: Api, me: Owner, path: str, value: Any, values: str
) -> None:
    reply = shared.register(me, put(base(), path, value))
    assert bad_fields(reply) == {path: f"Expected one of: {values}"}
    assert reply.json()["message"] == f"{path}: Expected one of: {values}"


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@example.com/hook",
        "http://user@example.com/",
        "HTTPS://user:p%40ss@example.com:8443/x?y=1",
        "https://:secret@example.com",
    ],
)
def test_credentials_in_the_url_point_to_auth_basic(shared: Api, me: Owner, url: str) -> None:
    fields = bad_fields(shared.register(me, put(base(), "httpRequest.url", url)))
    assert set(fields) == {"httpRequest.url"}
    assert "user:password@" in fields["httpRequest.url"]
    assert "httpRequest.authBasic" in fields["httpRequest.url"]


@pytest.mark.parametrize("url", ["ftp://example.com/", "example.com/x", "https://"])
def test_other_bad_urls_keep_their_message(shared: Api, me: Owner, url: str) -> None:
    fields = bad_fields(shared.register(me, put(base(), "httpRequest.url", url)))
    assert fields == {"httpRequest.url": "Expected an absolute http or https URL"}


def test_an_at_sign_after_the_host_is_no_credential(shared: Api, me: Owner) -> None:
    shared.task(me, put(base(), "httpRequest.url", "https://example.com/users/@me?x=a@b"))


# ---- dates: ms, ISO 8601, RFC 2822 and the seed's loose form; no offset means UTC ----

DATES = [
    (Y2100, Y2100),
    (Y2100 + 1, Y2100 + 1),
    ("2099-12-31T23:00:00Z", ms(datetime(2099, 12, 31, 23, tzinfo=UTC))),
    ("2099-12-31T23:00:00+07:00", ms(datetime(2099, 12, 31, 23, tzinfo=tz(7)))),
    ("2099-12-31T23:00:00.250-05:30", ms(datetime(2099, 12, 31, 23, 0, 0, 250000, tz(-5, -30)))),
    ("2099-12-31T23:00:00", ms(datetime(2099, 12, 31, 23, tzinfo=UTC))),
    ("2099-12-31 23:00:00", ms(datetime(2099, 12, 31, 23, tzinfo=UTC))),
    ("2099-12-31", ms(datetime(2099, 12, 31, tzinfo=UTC))),
    ("Thu, 31 Dec 2099 23:00:00 GMT", ms(datetime(2099, 12, 31, 23, tzinfo=UTC))),
    ("Thu, 31 Dec 2099 23:00:00 +0700", ms(datetime(2099, 12, 31, 23, tzinfo=tz(7)))),
    ("31 Dec 2099 23:00:00 -0000", ms(datetime(2099, 12, 31, 23, tzinfo=UTC))),
    ("Thu, 31 Dec 2099 23:00:00", ms(datetime(2099, 12, 31, 23, tzinfo=UTC))),
    ("Dec 12 2099 12:12:12 AM +07:00", ms(datetime(2099, 12, 12, 0, 12, 12, tzinfo=tz(7)))),
    ("Dec 12 2099 12:12:12 PM +07:00", ms(datetime(2099, 12, 12, 12, 12, 12, tzinfo=tz(7)))),
    ("Dec 12 2099 7:04:09 PM -03:00", ms(datetime(2099, 12, 12, 19, 4, 9, tzinfo=tz(-3)))),
    ("Dec 12 2099 12:12:12 AM", ms(datetime(2099, 12, 12, 0, 12, 12, tzinfo=UTC))),
    ("December 12, 2099 07:04:09 PM", ms(datetime(2099, 12, 12, 19, 4, 9, tzinfo=UTC))),
    (
        "Sat Dec 12 2099 00:12:12 GMT+0700 (Indochina Time)",
        ms(datetime(2099, 12, 12, 0, 12, 12, tzinfo=tz(7))),
    ),
]
DATE_IDS = [str(text) for text, _ in DATES]


@pytest.mark.parametrize(("text", "expected"), DATES, ids=DATE_IDS)
def test_execute_at_forms(shared: Api, me: Owner, text: Any, expected: int) -> None:
    task = shared.task(me, put(base(), "config.executeAt", text))
    assert task["estimateExecutionAt"] == expected
    assert shared.get(me, task["id"])["estimateExecutionAt"] == expected
    config = stored_config(shared, me, task["id"])["config"]
    assert config["executeAt"] == expected


@pytest.mark.parametrize(("text", "expected"), DATES, ids=DATE_IDS)
@pytest.mark.parametrize("field", ["retryAt", "timeoutAt"])
def test_retry_at_and_timeout_at_forms(
    shared: Api, me: Owner, field: str, text: Any, expected: int
) -> None:
    task = shared.task(me, put(base(), f"config.{field}", text))
    assert stored_config(shared, me, task["id"])["config"][field] == expected


def test_execute_at_in_the_past_is_400(shared: Api, me: Owner) -> None:
    past = int(time.time() * 1000) - 1000
    for value in (past, "2020-01-01T00:00:00Z", "Dec 12 2024 12:12:12 AM +07:00"):
        fields = bad_fields(shared.register(me, put(base(), "config.executeAt", value)))
        assert set(fields) == {"config.executeAt"}


def test_execute_at_just_ahead_is_accepted(shared: Api, me: Owner) -> None:
    soon = int(time.time() * 1000) + 60_000
    task = shared.task(me, put(base(), "config.executeAt", soon))
    assert task["estimateExecutionAt"] == soon


@pytest.mark.parametrize("field", ["retryAt", "timeoutAt"])
def test_retry_at_and_timeout_at_need_one_second_after_execute_at(
    shared: Api, me: Owner, field: str
) -> None:
    payload = put(base(), "config.executeAt", Y2100)
    for early in (Y2100 - 1, Y2100, Y2100 + 999):
        fields = bad_fields(shared.register(me, put(payload, f"config.{field}", early)))
        assert set(fields) == {f"config.{field}"}
    task = shared.task(me, put(payload, f"config.{field}", Y2100 + 1000))
    assert stored_config(shared, me, task["id"])["config"][field] == Y2100 + 1000


@pytest.mark.parametrize("field", ["retryAt", "timeoutAt"])
def test_retry_at_and_timeout_at_follow_the_execution_delay(
    shared: Api, me: Owner, field: str
) -> None:
    now = int(time.time() * 1000)
    payload = put(base(), "config.executionDelay", HOUR)
    # before now + delay + 1 s: refused; the past too (acceptance cases 59 and 60)
    for early in (now - 60_000, now + HOUR // 2):
        fields = bad_fields(shared.register(me, put(payload, f"config.{field}", early)))
        assert set(fields) == {f"config.{field}"}
    shared.task(me, put(payload, f"config.{field}", now + 2 * HOUR))


def test_retry_at_after_a_default_delay(shared: Api, me: Owner) -> None:
    """executionDelay 1 (the default): retryAt must still be >= now + 1 ms + 1 s."""
    now = int(time.time() * 1000)
    payload = {"httpRequest": {"url": URL, "method": "GET"}, "config": {"retryAt": now + 500}}
    assert set(bad_fields(shared.register(me, payload))) == {"config.retryAt"}


# ---- fetch-only options with transport curl ----

FETCH_ONLY = {"credentials": "include", "referrerPolicy": "no-referrer", "mode": "cors"}


@pytest.mark.parametrize(("name", "value"), FETCH_ONLY.items())
def test_fetch_only_option_with_curl_is_400(shared: Api, me: Owner, name: str, value: str) -> None:
    payload = put(put(base(), "httpRequest.transport", "curl"), f"config.{name}", value)
    fields = bad_fields(shared.register(me, payload))
    assert set(fields) == {f"config.{name}"}
    assert "curl" in fields[f"config.{name}"]


def test_all_fetch_only_options_with_curl_are_named(shared: Api, me: Owner) -> None:
    payload = put(base(), "httpRequest.transport", "curl")
    payload["config"].update(FETCH_ONLY)
    fields = bad_fields(shared.register(me, payload))
    assert set(fields) == {f"config.{name}" for name in FETCH_ONLY}


@pytest.mark.parametrize("transport", ["fetch", None, "absent"])
def test_fetch_only_options_without_curl_are_accepted(
    shared: Api, me: Owner, transport: str | None
) -> None:
    payload = base()
    if transport != "absent":
        payload["httpRequest"]["transport"] = transport
    payload["config"].update(FETCH_ONLY)
    task = shared.task(me, payload)
    config = stored_config(shared, me, task["id"])["config"]
    assert {name: config[name] for name in FETCH_ONLY} == FETCH_ONLY


def test_empty_referrer_policy_with_curl_is_400(shared: Api, me: Owner) -> None:
    """ "" is a value: it is refused with curl like any other, not mistaken for absent."""
    payload = put(put(base(), "httpRequest.transport", "curl"), "config.referrerPolicy", "")
    assert set(bad_fields(shared.register(me, payload))) == {"config.referrerPolicy"}


# ---- transforms ----


@pytest.mark.parametrize("method", ["GET", "DELETE", "get", "delete"])
@pytest.mark.parametrize(
    "data", ["text", [{"name": "a", "value": "b"}], {"a": {"b": 1}}], ids=["str", "form", "json"]
)
def test_get_and_delete_drop_data(shared: Api, me: Owner, method: str, data: Any) -> None:
    payload = put(put(base(), "httpRequest.method", method), "httpRequest.data", data)
    task = shared.task(me, payload)
    request = stored_config(shared, me, task["id"])["httpRequest"]
    assert request["method"] == method.upper()
    assert request["data"] is None


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_other_methods_keep_data(shared: Api, me: Owner, method: str) -> None:
    data = {"a": {"b": 1}, "c": None}
    payload = put(put(base(), "httpRequest.method", method), "httpRequest.data", data)
    task = shared.task(me, payload)
    assert stored_config(shared, me, task["id"])["httpRequest"]["data"] == data


def test_retry_at_forces_one_retry(shared: Api, me: Owner) -> None:
    payload = base()
    payload["config"].update({"retry": 5, "retryExponential": True, "retryAt": Y2100})
    task = shared.task(me, payload)
    assert task["retryLimit"] == 1
    assert shared.get(me, task["id"])["retryLimit"] == 1
    config = stored_config(shared, me, task["id"])["config"]
    assert config["retry"] == 1
    assert config["retryAt"] == Y2100
    assert config["retryExponential"] is False


def test_retry_limit_is_the_retry_count(shared: Api, me: Owner) -> None:
    task = shared.task(me, put(base(), "config.retry", 7))
    assert task["retryLimit"] == 7
    assert task["retryCount"] == 0


def test_execute_at_makes_execution_delay_zero(shared: Api, me: Owner) -> None:
    payload = base()
    payload["config"].update({"executionDelay": 5000, "executeAt": "2100-01-01T00:00:00Z"})
    task = shared.task(me, payload)
    assert task["estimateExecutionAt"] == Y2100
    config = stored_config(shared, me, task["id"])["config"]
    assert config["executionDelay"] == 0
    assert config["executeAt"] == Y2100


def test_execution_delay_sets_the_execution_time(shared: Api, me: Owner) -> None:
    task = shared.task(me, put(base(), "config.executionDelay", 2 * HOUR))
    assert task["estimateExecutionAt"] == task["createdAt"] + 2 * HOUR


@pytest.mark.parametrize(
    ("retry", "exponential", "stored"),
    [
        (0, None, False),
        (1, None, False),
        (1, True, False),
        (2, None, True),
        (2, False, False),
        (5, True, True),
    ],
)
def test_retry_exponential_only_with_two_or_more_retries(
    shared: Api, me: Owner, retry: int, exponential: bool | None, stored: bool
) -> None:
    payload = put(base(), "config.retry", retry)
    if exponential is not None:
        payload["config"]["retryExponential"] = exponential
    task = shared.task(me, payload)
    assert stored_config(shared, me, task["id"])["config"]["retryExponential"] is stored


# ---- metadata ----

VALID_METADATA = [
    {"username": "alice", "tag": "nightly"},
    {f"k{i}": "v" for i in range(8)},
    {"$_.-[]": "symbols", "k" * 64: "v" * 512},
    {"line": "metadata is not sent, so any text\r\n goes"},
]


@pytest.mark.parametrize("metadata", VALID_METADATA)
def test_metadata_is_returned_as_submitted(
    shared: Api, me: Owner, metadata: dict[str, str]
) -> None:
    task = shared.task(me, {**base(), "metadata": metadata})
    assert task["metadata"] == metadata
    assert shared.get(me, task["id"])["metadata"] == metadata
    listed = shared.http.get("/v1/queues", headers=me.headers).json()
    assert [item["metadata"] for item in listed] == [metadata]
    # metadata is not part of the stored request
    assert "metadata" not in stored_config(shared, me, task["id"])


@pytest.mark.parametrize("metadata", [None, "absent"])
def test_no_metadata_is_null(shared: Api, me: Owner, metadata: Any) -> None:
    payload = base() if metadata == "absent" else {**base(), "metadata": None}
    task = shared.task(me, payload)
    assert task["metadata"] is None
    assert shared.get(me, task["id"])["metadata"] is None


INVALID_METADATA = [
    ({}, "metadata"),
    ({f"k{i}": "v" for i in range(9)}, "metadata"),
    ({"bad key": "v"}, "metadata.bad key"),
    ({"k" * 65: "v"}, "metadata." + "k" * 65),
    ({"k": ""}, "metadata.k"),
    ({"k": "v" * 513}, "metadata.k"),
    ({"k": 1}, "metadata.k"),
    ({"k": {"nested": "v"}}, "metadata.k"),
    ([], "metadata"),
    ("tag", "metadata"),
]


@pytest.mark.parametrize(("metadata", "named"), INVALID_METADATA)
def test_invalid_metadata_is_400(shared: Api, me: Owner, metadata: Any, named: str) -> None:
    fields = bad_fields(shared.register(me, {**base(), "metadata": metadata}))
    assert set(fields) == {named}


# ---- header injection ----


@pytest.mark.parametrize("where", ["httpRequest.headers", "config.proxyHeaders"])
@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nb", "a\rb", "trailing\n", "\r\n"])
def test_header_values_with_cr_or_lf_are_400(
    shared: Api, me: Owner, where: str, value: str
) -> None:
    payload = put(base(), where, {"X-Fine": "ok", "X-Bad": value})
    fields = bad_fields(shared.register(me, payload))
    assert set(fields) == {f"{where}.X-Bad"}
    assert "CR" in fields[f"{where}.X-Bad"]


def test_query_values_with_line_breaks_are_400(shared: Api, me: Owner) -> None:
    payload = put(base(), "httpRequest.query", {"q": "a\r\nb"})
    assert set(bad_fields(shared.register(me, payload))) == {"httpRequest.query.q"}


# ---- defaults ----

DEFAULT_REQUEST = {
    "url": URL,
    "method": "GET",
    "query": None,
    "headers": None,
    "data": None,
    "cookie": None,
    "authBasic": None,
    "authDigest": None,
    "authNtlm": None,
    "authAwsSigv4": None,
    "transport": None,
}
DEFAULT_CONFIG = {
    # reference section 2.2, exact parsed config of a minimal task
    "executionDelay": 1,
    "executeImmediately": False,
    "retry": 0,
    "retryInterval": 1,
    "retryExponential": False,
    "ignoreStatusCode": [],
    "timeout": 30000,
    "traceResponseData": True,
    "httpVersion": "1.1",
    "userAgent": DEFAULT_USER_AGENT,
    "ipVersion": 4,
    "refererUrl": "AUTO",
    "keepAliveDuration": 30,
    "sessionId": True,
    "insecure": False,
    "location": True,
    "redirectAttempts": 8,
    "proxyHttpVersion": "1.1",
    # and every optional field, unset
    "executeAt": None,
    "retryAt": None,
    "timeoutAt": None,
    "credentials": None,
    "referrerPolicy": None,
    "mode": None,
    "hsts": None,
    "locationTrusted": None,
    "proto": None,
    "protoRedirect": None,
    "dnsServer": None,
    "resolve": None,
    "dohUrl": None,
    "dohInsecure": None,
    "tlsVersion": None,
    "tlsMaxVersion": None,
    "ca": None,
    "cert": None,
    "certType": None,
    "certStatus": None,
    "key": None,
    "keyType": None,
    "proxy": None,
    "proxyHeaders": None,
    "proxyInsecure": None,
    "proxyAuthBasic": None,
    "proxyAuthDigest": None,
    "proxyAuthNtlm": None,
    "haProxyClientIp": None,
    "haProxyProtocol": None,
}


@pytest.mark.parametrize("config", ["absent", {}], ids=["no-config", "empty-config"])
def test_defaults_of_a_minimal_task(shared: Api, me: Owner, config: Any) -> None:
    payload: dict[str, Any] = {"httpRequest": {"url": URL, "method": "GET"}}
    if config != "absent":
        payload["config"] = config
    task = shared.task(me, payload)
    assert task["retryLimit"] == 0
    assert task["estimateExecutionAt"] == task["createdAt"] + 1
    stored = stored_config(shared, me, task["id"])
    assert stored["httpRequest"] == DEFAULT_REQUEST
    assert stored["config"] == DEFAULT_CONFIG


def test_task_object_on_register(shared: Api, me: Owner) -> None:
    before = int(time.time() * 1000)
    reply = shared.register(me, base())
    assert reply.status_code == 201, reply.text
    task = reply.json()
    assert set(task) == {
        "id",
        "state",
        "createdAt",
        "statusCode",
        "estimateEndAt",
        "estimateExecutionAt",
        "response",
        "metadata",
        "retryCount",
        "retryLimit",
        "estimateNextRetryAt",
        "attempts",
        "error",
    }
    assert task["state"] == "RUNNING"
    assert before - 5 <= task["createdAt"] <= int(time.time() * 1000) + 5
    assert task["estimateExecutionAt"] == task["createdAt"] + HOUR
    assert (task["statusCode"], task["estimateEndAt"], task["response"]) == (0, 0, None)
    assert (task["retryCount"], task["estimateNextRetryAt"], task["attempts"]) == (0, 0, 0)
    assert task["error"] is None
