"""Task options -> libcurl options: one row per option, read top to bottom.

Each row is (what it maps, a function of the request, the config and the
attempt returning the libcurl options it sets). A row returns nothing when
its option is unset, so libcurl's own default applies.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import msgspec
import pycurl

from tasks_server.api.schemas import Config, FormField, HttpRequest, TaskSpec
from tasks_server.dispatch.engine import HandleBound

CurlOption = tuple[int, Any]


class Attempt(msgspec.Struct, frozen=True):
    """What one attempt adds to the stored request: who it is and its time budget."""

    task_id: str
    retry_count: int
    retry_limit: int
    estimate_next_retry_at: int
    timeout_ms: int


Row = Callable[[HttpRequest, Config, Attempt], Iterable[CurlOption]]

_HTTP_VERSIONS = {
    "0.9": pycurl.CURL_HTTP_VERSION_1_0,
    "1.0": pycurl.CURL_HTTP_VERSION_1_0,
    "1.1": pycurl.CURL_HTTP_VERSION_1_1,
    "2": pycurl.CURL_HTTP_VERSION_2_0,
    "2-prior-knowledge": pycurl.CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE,
    "3": pycurl.CURL_HTTP_VERSION_3,
}
_IP_VERSIONS = {4: pycurl.IPRESOLVE_V4, 6: pycurl.IPRESOLVE_V6}
_CONTENT_TYPES: dict[type, str] = {
    str: "text/plain; charset=utf-8",
    dict: "application/json",
}
_NOT_URL_ASCII = re.compile(r"[^\x21-\x7e]+")


def _utf8(text: str) -> bytes:
    """Strings go to libcurl as UTF-8 bytes: pycurl refuses any non-ASCII `str`."""
    return text.encode()


def _ascii_url(target: str) -> str:
    """The URL with a non-ASCII host in IDNA form and other non-ASCII characters %-encoded."""
    if target.isascii():
        return target
    parts = urlsplit(target)
    netloc = parts.netloc
    host = parts.hostname or ""
    if not host.isascii():
        with suppress(UnicodeError, ValueError):  # if not, libcurl says it cannot resolve it
            ascii_host = host.encode("idna").decode("ascii")
            netloc = ascii_host if parts.port is None else f"{ascii_host}:{parts.port}"
    encoded = urlunsplit(parts._replace(netloc=netloc))
    return _NOT_URL_ASCII.sub(lambda match: quote(match.group(), safe=""), encoded)


class Multipart(HandleBound):
    """multipart/form-data fields, built as a libcurl mime tree of the handle that sends it."""

    __slots__ = ("fields",)

    def __init__(self, fields: list[FormField]) -> None:
        self.fields = [(_utf8(field.name), _utf8(field.value)) for field in fields]

    def bind(self, handle: pycurl.Curl) -> pycurl.CurlMime:
        mime = pycurl.CurlMime(handle)
        for name, value in self.fields:
            part = mime.addpart()
            part.name(name)
            part.data(value)  # in-memory data: a leading @ or < is just a character
        return mime


def url(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    # the fragment is never sent; the query goes before it, not into it
    target, _, _fragment = request.url.partition("#")
    if request.query:
        if "?" not in target:
            target += "?"
        elif not target.endswith(("?", "&")):
            target += "&"
        target += urlencode(request.query)
    yield pycurl.URL, _ascii_url(target)


def method_and_body(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    data = request.data
    if isinstance(data, list):
        yield pycurl.MIMEPOST, Multipart(data)
    elif isinstance(data, dict):
        yield pycurl.POSTFIELDS, msgspec.json.encode(data)
    elif isinstance(data, str):
        yield pycurl.POSTFIELDS, _utf8(data)  # POSTFIELDS never reads files
    elif request.method in ("POST", "PUT", "PATCH"):
        yield pycurl.POSTFIELDS, b""  # Content-Length: 0 (see headers for its type)
    if request.method == "GET":
        yield pycurl.HTTPGET, 1
    elif request.method != "POST":
        yield pycurl.CUSTOMREQUEST, request.method


def headers(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    lines = [
        _utf8(f"{name}: {value}")
        for name, value in (request.headers or {}).items()
        if "user-agent" not in name.lower()  # config.userAgent is the one place for it
    ]
    given = {name.lower() for name in request.headers or {}}
    ours = {"X-Tasks-Queue-Id": attempt.task_id}
    if attempt.retry_count > 0:
        ours["X-Tasks-Retry-Count"] = str(attempt.retry_count)
        ours["X-Tasks-Retry-Limit"] = str(attempt.retry_limit)
        ours["X-Tasks-Estimate-Next-Retry-At"] = str(attempt.estimate_next_retry_at)
    content_type = _CONTENT_TYPES.get(type(request.data))
    if content_type:
        ours["Content-Type"] = content_type
    elif request.data is None and "content-type" not in given:
        lines.append(b"Content-Type:")  # an empty body is not a form: no type at all
    # the user's own headers are never replaced by ours
    lines += [
        _utf8(f"{name}: {value}") for name, value in ours.items() if name.lower() not in given
    ]
    lines.append(b"Expect:")  # no 100-continue round trip before a body
    yield pycurl.HTTPHEADER, lines


def cookie(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if isinstance(request.cookie, list):
        yield pycurl.COOKIE, _utf8("; ".join(f"{c.name}={c.value}" for c in request.cookie))
    elif isinstance(request.cookie, str):
        # base64 of a Netscape cookie file: libcurl sends the ones matching the URL
        yield pycurl.COOKIEFILE, ""
        for line in base64.b64decode(request.cookie).decode(errors="replace").splitlines():
            if line.strip() and (not line.startswith("#") or line.startswith("#HttpOnly_")):
                yield pycurl.COOKIELIST, _utf8(line)


def user_agent(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    yield pycurl.USERAGENT, _utf8(config.user_agent)


def timeout(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    yield pycurl.TIMEOUT_MS, max(1, attempt.timeout_ms)


def location(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    yield pycurl.FOLLOWLOCATION, int(config.location)
    if config.location:
        yield pycurl.MAXREDIRS, config.redirect_attempts


def insecure(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if config.insecure:
        yield pycurl.SSL_VERIFYPEER, 0
        yield pycurl.SSL_VERIFYHOST, 0


def http_version(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    yield pycurl.HTTP_VERSION, _HTTP_VERSIONS[config.http_version]
    if config.http_version == "0.9":
        yield pycurl.HTTP09_ALLOWED, 1


def ip_version(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    yield pycurl.IPRESOLVE, _IP_VERSIONS[config.ip_version]


def auth(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    for credentials, scheme in (
        (request.auth_basic, pycurl.HTTPAUTH_BASIC),
        (request.auth_digest, pycurl.HTTPAUTH_DIGEST),
    ):
        if credentials is not None:
            yield pycurl.HTTPAUTH, scheme
            yield pycurl.USERNAME, _utf8(credentials.username)
            yield pycurl.PASSWORD, _utf8(credentials.password)


def referer(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if config.referer_url == "AUTO":
        yield pycurl.AUTOREFERER, 1
    else:
        yield pycurl.REFERER, _ascii_url(config.referer_url)


def keep_alive(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if config.keep_alive_duration == 0:
        yield pycurl.FORBID_REUSE, 1  # 0 means no keep-alive at all
    else:
        yield pycurl.TCP_KEEPALIVE, 1
        yield pycurl.TCP_KEEPIDLE, config.keep_alive_duration
        yield pycurl.TCP_KEEPINTVL, config.keep_alive_duration


def session_id(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if not config.session_id:
        yield pycurl.SSL_SESSIONID_CACHE, 0


# (task option, row). Order matters only where libcurl needs it (method before body).
CURL_OPTION_TABLE: tuple[tuple[str, Row], ...] = (
    ("httpRequest.url, httpRequest.query", url),
    ("httpRequest.method, httpRequest.data", method_and_body),
    ("httpRequest.headers, X-Tasks-* headers", headers),
    ("httpRequest.cookie", cookie),
    ("httpRequest.authBasic, httpRequest.authDigest", auth),
    ("config.userAgent", user_agent),
    ("config.timeout, config.timeoutAt", timeout),
    ("config.location, config.redirectAttempts", location),
    ("config.insecure", insecure),
    ("config.httpVersion", http_version),
    ("config.ipVersion", ip_version),
    ("config.refererUrl", referer),
    ("config.keepAliveDuration", keep_alive),
    ("config.sessionId", session_id),
)


def curl_options(spec: TaskSpec, attempt: Attempt) -> list[CurlOption]:
    """Every libcurl option for one attempt of this task."""
    request, config = spec.http_request, spec.config
    return [option for _, row in CURL_OPTION_TABLE for option in row(request, config, attempt)]
