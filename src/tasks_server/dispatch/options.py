"""Task options -> libcurl options: one row per option, read top to bottom.

Each row is (what it maps, a function of the request, the config and the
attempt returning the libcurl options it sets). A row returns nothing when
its option is unset, so libcurl's own default applies.
"""

from __future__ import annotations

import base64
import re
import ssl
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import msgspec
import pycurl

from tasks_server.dispatch.dns import DnsServerLookup, PrivateCaches, resolve_entry
from tasks_server.dispatch.engine import HandleBound
from tasks_server.dispatch.policy import TargetPolicy, guard_for
from tasks_server.model.spec import Auth, Config, FormField, HttpRequest, TaskSpec, is_file_path

CurlOption = tuple[int, Any]


class Attempt(msgspec.Struct, frozen=True):
    """What one attempt adds to the stored request: who it is and its time budget."""

    task_id: str
    retry_count: int
    retry_limit: int
    estimate_next_retry_at: int
    timeout_ms: int
    target_policy: TargetPolicy | None = None  # the server's TARGET_ALLOW / TARGET_DENY


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
_TLS_MIN = {
    "1.0": pycurl.SSLVERSION_TLSv1_0,
    "1.1": pycurl.SSLVERSION_TLSv1_1,
    "1.2": pycurl.SSLVERSION_TLSv1_2,
    "1.3": pycurl.SSLVERSION_TLSv1_3,
}
_TLS_MAX = {
    "1.0": pycurl.SSLVERSION_MAX_TLSv1_0,
    "1.1": pycurl.SSLVERSION_MAX_TLSv1_1,
    "1.2": pycurl.SSLVERSION_MAX_TLSv1_2,
    "1.3": pycurl.SSLVERSION_MAX_TLSv1_3,
}
# pycurl has no string setter for CURLOPT_PROTOCOLS_STR / REDIR_PROTOCOLS_STR
# ("strings are not supported for this option"): their bitmask forms say the same
_PROTOCOLS = {
    "http": pycurl.PROTO_HTTP,
    "https": pycurl.PROTO_HTTPS,
    None: pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS,
}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DEFAULT_PROXY_PORTS = {"http": 1080, "https": 443}  # libcurl's, for a proxy without one
CURLPROXY_HTTPS = 2  # not a pycurl constant
CURLOPT_DOH_SSL_VERIFYPEER = 306  # not pycurl constants: CURLOPTTYPE_LONG + 306, + 307
CURLOPT_DOH_SSL_VERIFYHOST = 307
HSTS_STAMP = "%Y%m%d %H:%M:%S"
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
        if config.location_trusted is not None:
            yield pycurl.UNRESTRICTED_AUTH, 1  # credentials go to the redirected hosts too


def protocols(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    yield pycurl.PROTOCOLS, _PROTOCOLS[config.proto]
    yield pycurl.REDIR_PROTOCOLS, _PROTOCOLS[config.proto_redirect]


def insecure(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if config.insecure:
        yield pycurl.SSL_VERIFYPEER, 0
        yield pycurl.SSL_VERIFYHOST, 0


def _content(value: str) -> bytes:
    return base64.b64decode("".join(value.split()))


def _as_pem(content: bytes) -> bytes:
    """CAINFO_BLOB reads PEM only: a DER certificate is wrapped as one."""
    if content.lstrip().startswith(b"-----"):
        return content
    return ssl.DER_cert_to_PEM_cert(content).encode()


def trusted_ca(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if config.ca is None:
        return
    if is_file_path(config.ca):
        yield pycurl.CAINFO, _utf8(config.ca)
    else:  # in memory: nothing written to disk; several certificates in one PEM are fine
        yield pycurl.CAINFO_BLOB, _as_pem(_content(config.ca))


def client_certificate(
    request: HttpRequest, config: Config, attempt: Attempt
) -> Iterable[CurlOption]:
    cert, key = config.cert, config.key
    if cert is not None:
        if config.cert_type:
            yield pycurl.SSLCERTTYPE, config.cert_type
        if is_file_path(cert.value):
            yield pycurl.SSLCERT, _utf8(cert.value)
        else:
            yield pycurl.SSLCERT_BLOB, _content(cert.value)
        if cert.password is not None:
            yield pycurl.KEYPASSWD, _utf8(cert.password)
    if key is not None:
        if config.key_type:
            yield pycurl.SSLKEYTYPE, config.key_type
        if is_file_path(key):
            yield pycurl.SSLKEY, _utf8(key)
        else:
            yield pycurl.SSLKEY_BLOB, _content(key)


def cert_status(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if config.cert_status:
        yield pycurl.SSL_VERIFYSTATUS, 1  # the server must staple a good OCSP response


def tls_versions(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if config.tls_version is None and config.tls_max_version is None:
        return
    low = _TLS_MIN.get(config.tls_version or "", pycurl.SSLVERSION_DEFAULT)
    high = _TLS_MAX.get(config.tls_max_version or "", pycurl.SSLVERSION_MAX_DEFAULT)
    yield pycurl.SSLVERSION, low | high


def http_version(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    yield pycurl.HTTP_VERSION, _HTTP_VERSIONS[config.http_version]
    if config.http_version == "0.9":
        yield pycurl.HTTP09_ALLOWED, 1


def ip_version(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    yield pycurl.IPRESOLVE, _IP_VERSIONS[config.ip_version]


_HTTP_AUTH_OPTIONS = (pycurl.HTTPAUTH, pycurl.USERNAME, pycurl.PASSWORD)
_PROXY_AUTH_OPTIONS = (pycurl.PROXYAUTH, pycurl.PROXYUSERNAME, pycurl.PROXYPASSWORD)


def _last_given(
    options: tuple[int, int, int], *choices: tuple[Auth | None, int]
) -> Iterator[CurlOption]:
    """The scheme, user and password options of the last credentials given, if any."""
    given = [(credentials, scheme) for credentials, scheme in choices if credentials is not None]
    if given:
        (credentials, scheme), (scheme_option, user_option, password_option) = given[-1], options
        yield scheme_option, scheme
        yield user_option, _utf8(credentials.username)
        yield password_option, _utf8(credentials.password)


def auth(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    sigv4 = request.auth_aws_sigv4
    if sigv4 is not None:  # as with curl's several -u, the last kind given wins: this one
        provider = f"{sigv4.provider1}:{sigv4.provider2}:{sigv4.region}:{sigv4.service}"
        yield pycurl.AWS_SIGV4, _utf8(provider)
        yield pycurl.USERNAME, _utf8(sigv4.key)
        yield pycurl.PASSWORD, _utf8(sigv4.secret)
        return
    yield from _last_given(
        _HTTP_AUTH_OPTIONS,
        (config.location_trusted if config.location else None, pycurl.HTTPAUTH_BASIC),
        (request.auth_basic, pycurl.HTTPAUTH_BASIC),
        (request.auth_digest, pycurl.HTTPAUTH_DIGEST),
        (request.auth_ntlm, pycurl.HTTPAUTH_NTLM),
    )


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


class HstsCache:
    """HSTSREADFUNCTION over a curl HSTS cache file's lines, read from memory.

    Lines are `host "YYYYMMDD HH:MM:SS"` (or `unlimited`); a leading dot
    means subdomains too. Lines that do not parse are skipped, as curl does.
    """

    __slots__ = ("entries",)

    def __init__(self, text: str) -> None:
        self.entries = list(_hsts_entries(text))
        self.entries.reverse()

    def __call__(self) -> tuple[str, datetime | None, bool] | None:
        return self.entries.pop() if self.entries else None


def _hsts_entries(text: str) -> Iterator[tuple[str, datetime | None, bool]]:
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        host, _, stamp = line.partition(" ")
        stamp = stamp.strip().strip('"')
        expire = None
        if stamp and stamp != "unlimited":
            try:
                expire = datetime.strptime(stamp, HSTS_STAMP)
            except ValueError:
                continue
        yield host.lstrip("."), expire, host.startswith(".")


def hsts(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if not config.hsts:
        return
    yield pycurl.HSTS_CTRL, pycurl.CURLHSTS_ENABLE  # in memory, for this attempt only
    if isinstance(config.hsts, str):
        cache = _content(config.hsts).decode(errors="replace")
        yield pycurl.HSTSREADFUNCTION, HstsCache(cache)


def _target_address(target: str) -> tuple[str, int] | None:
    """(host, port) of a URL whose host is a name (None for an IP address)."""
    parts = urlsplit(_ascii_url(target))
    host = parts.hostname or ""
    if not host or ":" in host or host.replace(".", "").isdigit():
        return None
    return host, parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 80)


def _name_libcurl_resolves(request: HttpRequest, config: Config) -> tuple[str, int] | None:
    """Through a proxy only the proxy's name is looked up; else the URL's."""
    via = config.proxy
    if via is None:
        return _target_address(request.url)
    port = via.port or _DEFAULT_PROXY_PORTS[via.protocol]
    return _target_address(f"{via.protocol}://{via.host}:{port}/")


def name_resolution(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if not (config.resolve or config.dns_server or config.doh_url):
        return
    # this task's answers stay in caches of its own (see PrivateCaches)
    yield pycurl.SHARE, PrivateCaches()
    pinned = [resolve_entry(e.host, e.port, e.address) for e in config.resolve or ()]
    if config.dns_server:
        wanted = _name_libcurl_resolves(request, config)
        covered = {(e.host, e.port) for e in config.resolve or ()}
        names = []
        if wanted and wanted not in covered and ("*", wanted[1]) not in covered:
            names.append(wanted)
        yield (
            pycurl.RESOLVE,
            DnsServerLookup(
                pinned, names, config.dns_server, config.ip_version, attempt.timeout_ms / 1000
            ),
        )
    elif pinned:
        yield pycurl.RESOLVE, pinned
    if config.doh_url:
        yield pycurl.DOH_URL, _ascii_url(config.doh_url)
        if config.doh_insecure:
            yield CURLOPT_DOH_SSL_VERIFYPEER, 0
            yield CURLOPT_DOH_SSL_VERIFYHOST, 0


def proxy(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    chosen = config.proxy
    if chosen is None:
        yield pycurl.PROXY, ""  # never a proxy from the server's environment (http_proxy ...)
        return
    port = f":{chosen.port}" if chosen.port else ""
    yield pycurl.PROXY, f"{chosen.protocol}://{chosen.host}{port}"
    if chosen.protocol == "https":
        yield pycurl.PROXYTYPE, CURLPROXY_HTTPS
    elif config.proxy_http_version == "1.0":
        yield pycurl.PROXYTYPE, pycurl.PROXYTYPE_HTTP_1_0  # HTTP/1.0 CONNECT
    else:
        yield pycurl.PROXYTYPE, pycurl.PROXYTYPE_HTTP
    yield pycurl.HEADEROPT, pycurl.HEADER_SEPARATE  # user headers never go to the proxy
    if config.proxy_headers:
        lines = [f"{name}: {value}" for name, value in config.proxy_headers.items()]
        yield pycurl.PROXYHEADER, [_utf8(line) for line in lines]
    if config.proxy_insecure:
        yield pycurl.PROXY_SSL_VERIFYPEER, 0
        yield pycurl.PROXY_SSL_VERIFYHOST, 0
    yield from _last_given(
        _PROXY_AUTH_OPTIONS,
        (config.proxy_auth_basic, pycurl.HTTPAUTH_BASIC),
        (config.proxy_auth_digest, pycurl.HTTPAUTH_DIGEST),
        (config.proxy_auth_ntlm, pycurl.HTTPAUTH_NTLM),
    )


def ha_proxy(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if config.ha_proxy_client_ip is not None:  # sends the PROXY line, with this address
        yield pycurl.HAPROXY_CLIENT_IP, config.ha_proxy_client_ip.strip("[]")
    elif config.ha_proxy_protocol:
        yield pycurl.HAPROXYPROTOCOL, 1


def target_policy(request: HttpRequest, config: Config, attempt: Attempt) -> Iterable[CurlOption]:
    if attempt.target_policy is not None:  # every socket libcurl opens is checked here
        yield pycurl.OPENSOCKETFUNCTION, guard_for(attempt.target_policy, config)


# (task option, row). Order matters only where libcurl needs it (method before body).
CURL_OPTION_TABLE: tuple[tuple[str, Row], ...] = (
    ("httpRequest.url, httpRequest.query", url),
    ("httpRequest.method, httpRequest.data", method_and_body),
    ("httpRequest.headers, X-Tasks-* headers", headers),
    ("httpRequest.cookie (array or base64 cookie file)", cookie),
    (
        "httpRequest.authBasic, authDigest, authNtlm, authAwsSigv4, config.locationTrusted",
        auth,
    ),
    ("config.userAgent", user_agent),
    ("config.timeout, config.timeoutAt", timeout),
    ("config.location, config.redirectAttempts, config.locationTrusted", location),
    ("config.proto, config.protoRedirect", protocols),
    ("config.insecure", insecure),
    ("config.ca", trusted_ca),
    ("config.cert, config.certType, config.key, config.keyType", client_certificate),
    ("config.certStatus", cert_status),
    ("config.tlsVersion, config.tlsMaxVersion", tls_versions),
    ("config.httpVersion", http_version),
    ("config.ipVersion", ip_version),
    ("config.refererUrl", referer),
    ("config.keepAliveDuration", keep_alive),
    ("config.sessionId", session_id),
    ("config.hsts", hsts),
    # before name_resolution: Pending values settle in order, so a refusal precedes any lookup
    ("TARGET_ALLOW, TARGET_DENY (server settings, not task options)", target_policy),
    ("config.resolve, config.dnsServer, config.dohUrl, config.dohInsecure", name_resolution),
    (
        "config.proxy, proxyHeaders, proxyInsecure, proxyHttpVersion, proxyAuthBasic,"
        " proxyAuthDigest, proxyAuthNtlm",
        proxy,
    ),
    ("config.haProxyProtocol, config.haProxyClientIp", ha_proxy),
)


def curl_options(spec: TaskSpec, attempt: Attempt) -> list[CurlOption]:
    """Every libcurl option for one attempt of this task."""
    request, config = spec.http_request, spec.config
    return [option for _, row in CURL_OPTION_TABLE for option in row(request, config, attempt)]
