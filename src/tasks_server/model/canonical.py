"""The rules across a task's fields, and the canonical form in which it is stored."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from tasks_server.model.spec import (
    MAX_SAFE_INTEGER,
    Config,
    HttpRequest,
    TaskSpec,
    dns_server_address,
    is_file_path,
)
from tasks_server.model.timing import MAX_EPOCH_MS, parse_date_ms
from tasks_server.model.validation import ValidationFailed, convert

_KEY = re.compile(r"^[a-zA-Z0-9$_.\-\[\]]{1,64}$")
MAX_DATA_DEPTH = 3
MIN_GAP_AFTER_EXECUTION_MS = 1000
# the original's refusals: no SSH via resolve; no FTP, SSH, telnet, SMTP or DNS as a proxy
REFUSED_RESOLVE_PORTS = frozenset({22})
REFUSED_PROXY_PORTS = frozenset({20, 21, 22, 23, 25, 53})


class ValidationRules(msgspec.Struct, frozen=True, kw_only=True):
    """What this server allows beyond what the schema says: its settings and its libcurl."""

    allow_file_paths: bool = False  # ALLOW_FILE_PATHS: ca, cert, key may name server files
    # what the libcurl build can honour; an option it cannot is refused at registration
    http3: bool = True
    ntlm: bool = True


DEFAULT_RULES = ValidationRules()
# (field, what it names in messages) of the options that take PEM/DER content or a path
CERTIFICATE_FIELDS = (("ca", "CA"), ("cert.value", "Cert"), ("key", "Key"))
CERTIFICATE_CONTENT = (
    "Expected the base64 of PEM or DER content (or, with ALLOW_FILE_PATHS=1, an absolute path)"
)
TLS_ORDER = ("1.0", "1.1", "1.2", "1.3")


def parse_task_spec(data: Any, now: int, rules: ValidationRules = DEFAULT_RULES) -> TaskSpec:
    """Validate a registration payload and return its canonical form.

    Canonical: dates as ms, enums in their stored case, `data` dropped for
    GET/DELETE, executeAt -> executionDelay 0, retryAt -> retry 1.
    """
    return canonical_task_spec(convert(data, TaskSpec), now, rules=rules)


def canonical_task_spec(
    spec: TaskSpec,
    now: int,
    *,
    execution_at: int | None = None,
    rules: ValidationRules = DEFAULT_RULES,
) -> TaskSpec:
    """Apply the cross-field rules and transforms to an already well-typed spec.

    `execution_at` keeps an existing task's first-attempt time (an edit that
    does not reschedule); then executeAt need not be in the future any more.
    `rules` carries what the server allows (file paths, what its libcurl can do).
    """
    errors: dict[str, str] = {}
    request = _canonical_request(spec.http_request, errors)
    config = spec.config
    dates = {
        name: _parse_date(getattr(config, attr), f"config.{name}", errors)
        for name, attr in (
            ("executeAt", "execute_at"),
            ("retryAt", "retry_at"),
            ("timeoutAt", "timeout_at"),
        )
    }
    execute_at, retry_at, timeout_at = dates["executeAt"], dates["retryAt"], dates["timeoutAt"]
    if execution_at is None:
        if execute_at is not None and execute_at <= now:
            errors["config.executeAt"] = "Execution date must be in the future"
        execution_at = execute_at if execute_at is not None else now + config.execution_delay
    if execution_at > MAX_EPOCH_MS:
        errors["config.executionDelay"] = "Execution time is past the largest supported date"
    if retry_at is not None and retry_at < execution_at + MIN_GAP_AFTER_EXECUTION_MS:
        errors["config.retryAt"] = "Retry date must be at least 1 s after the execution date"
    if timeout_at is not None and timeout_at < execution_at + MIN_GAP_AFTER_EXECUTION_MS:
        errors["config.timeoutAt"] = "Timeout date must be at least 1 s after the execution date"
    if request.transport == "curl":
        for name in ("credentials", "referrerPolicy", "mode"):
            if getattr(config, _snake(name)) is not None:
                errors[f"config.{name}"] = "Invalid curl option: browser fetch only"
    _check_addresses(request, config, errors)
    _check_build_support(request, config, rules, errors)
    _check_tls_range(config, errors)
    if isinstance(request.cookie, str):
        _check_base64(request.cookie, "httpRequest.cookie", errors)
    _check_certificates(config, rules, errors)
    if isinstance(config.hsts, str):
        _check_base64(config.hsts, "config.hsts", errors)
    if errors:
        raise ValidationFailed(errors)
    retry = 1 if retry_at is not None else config.retry
    canonical = msgspec.structs.replace(
        config,
        execute_at=execute_at,
        execution_delay=0 if execute_at is not None else config.execution_delay,
        retry_at=retry_at,
        timeout_at=timeout_at,
        retry=retry,
        retry_exponential=config.retry_exponential and retry >= 2,
        ignore_status_code=sorted(set(config.ignore_status_code)),
        referer_url=_upper_if(config.referer_url, "auto"),
        proto=config.proto.lower() if config.proto else None,
        proto_redirect=config.proto_redirect.lower() if config.proto_redirect else None,
        cert_type=config.cert_type.upper() if config.cert_type else None,
        key_type=config.key_type.upper() if config.key_type else None,
        proxy=(
            msgspec.structs.replace(config.proxy, protocol=config.proxy.protocol.lower())
            if config.proxy
            else None
        ),
    )
    return msgspec.structs.replace(spec, http_request=request, config=canonical)


def _canonical_request(request: HttpRequest, errors: dict[str, str]) -> HttpRequest:
    method = request.method.upper()
    data = request.data
    if method in ("GET", "DELETE"):
        data = None  # the original drops a body on GET and DELETE
    elif isinstance(data, dict):
        _check_json_body(data, "httpRequest.data", 1, errors)
    return msgspec.structs.replace(request, method=method, data=data)


def _check_json_body(obj: Mapping[str, Any], path: str, depth: int, errors: dict[str, str]) -> None:
    if depth > MAX_DATA_DEPTH:
        errors[path] = f"Objects may nest at most {MAX_DATA_DEPTH} levels"
        return
    for key, value in obj.items():
        where = f"{path}.{key}"
        if not _KEY.fullmatch(key):
            errors[where] = "Invalid key format: 1-64 letters, digits or $ _ . - [ ]"
        elif isinstance(value, dict):
            _check_json_body(value, where, depth + 1, errors)
        elif isinstance(value, str):
            if len(value) > 4096:
                errors[where] = "Expected `str` of length <= 4096"
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int | float):
            if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
                errors[where] = "Integer outside the safe range of JSON numbers"
        else:
            errors[where] = "Expected a string, number, boolean, null or object"


def _parse_date(value: int | str | None, path: str, errors: dict[str, str]) -> int | None:
    if value is None or isinstance(value, int):
        return value
    parsed = parse_date_ms(value)
    if parsed is None or not 0 <= parsed <= MAX_EPOCH_MS:
        errors[path] = "Expected ms since the epoch or a date such as 2030-01-01T09:00:00+07:00"
        return None
    return parsed


def _check_base64(
    value: str | None,
    path: str,
    errors: dict[str, str],
    message: str = "Expected non-empty base64 content",
) -> None:
    if value is None:
        return
    try:
        # line breaks (as `base64` wraps its output) are fine; nothing else is
        decoded = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded:
        errors[path] = message


def _check_certificates(config: Config, rules: ValidationRules, errors: dict[str, str]) -> None:
    """ca, cert.value, key: base64 PEM/DER, or an existing server file when allowed."""
    values = {
        "ca": config.ca,
        "cert.value": config.cert.value if config.cert else None,
        "key": config.key,
    }
    for field, noun in CERTIFICATE_FIELDS:
        value, path = values[field], f"config.{field}"
        if value is None or not is_file_path(value):
            _check_base64(value, path, errors, CERTIFICATE_CONTENT)
        elif not rules.allow_file_paths:
            errors[path] = (
                "File paths are not allowed on this server (ALLOW_FILE_PATHS=1 allows them);"
                " send the base64 of the PEM or DER content"
            )
        elif not os.path.isfile(value):
            errors[path] = f"{noun} file does not exist"


def _check_build_support(
    request: HttpRequest, config: Config, rules: ValidationRules, errors: dict[str, str]
) -> None:
    """Options this libcurl build cannot honour: refused now, not failed on every attempt."""
    if config.http_version == "3" and not rules.http3:
        errors["config.httpVersion"] = "HTTP/3 is not supported by this server's libcurl"
    if not rules.ntlm:
        ntlm = "NTLM is not supported by this server's libcurl (built without NTLM)"
        if request.auth_ntlm is not None:
            errors["httpRequest.authNtlm"] = ntlm
        if config.proxy_auth_ntlm is not None:
            errors["config.proxyAuthNtlm"] = ntlm


def _check_tls_range(config: Config, errors: dict[str, str]) -> None:
    low, high = config.tls_version, config.tls_max_version
    if low is not None and high is not None and TLS_ORDER.index(high) < TLS_ORDER.index(low):
        errors["config.tlsMaxVersion"] = "Must not be lower than tlsVersion"


def _check_addresses(request: HttpRequest, config: Config, errors: dict[str, str]) -> None:
    """What the field patterns cannot say: URL ports, real IP addresses, refused ports."""
    urls = {
        "httpRequest.url": request.url,
        "config.refererUrl": None if config.referer_url.lower() == "auto" else config.referer_url,
        "config.dohUrl": config.doh_url,
    }
    for path, url in urls.items():
        if url is not None and not _valid_url(url):
            errors[path] = "Expected an absolute http or https URL with a valid host and port"
    ips: dict[str, str] = {}
    for index, server in enumerate(config.dns_server or ()):
        ip, port = dns_server_address(server)
        ips[f"config.dnsServer[{index}]"] = ip
        if not 1 <= port <= 65535:
            errors[f"config.dnsServer[{index}]"] = "Expected a port 1..65535"
    for index, entry in enumerate(config.resolve or ()):
        where = f"config.resolve[{index}]"
        ips.update({f"{where}.address[{i}]": ip for i, ip in enumerate(entry.address)})
        if entry.port in REFUSED_RESOLVE_PORTS:
            errors[f"{where}.port"] = f"Port {entry.port} is not allowed"
    if config.ha_proxy_client_ip is not None:
        ips["config.haProxyClientIp"] = config.ha_proxy_client_ip
    for path, ip in ips.items():
        if path not in errors and not _valid_ip(ip):
            errors[path] = "Expected an IPv4 or IPv6 address"
    if config.proxy is not None and config.proxy.port in REFUSED_PROXY_PORTS:
        errors["config.proxy.port"] = f"Invalid proxy port: {config.proxy.port} is not allowed"


def _valid_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when out of range or not a number
    except ValueError:
        return False
    return bool(parts.hostname)


def _valid_ip(text: str) -> bool:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _upper_if(value: str, word: str) -> str:
    return word.upper() if value.lower() == word else value


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()
