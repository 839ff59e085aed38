"""Turning request bytes into typed structs, naming every bad field by its path."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from tasks_server.api.schemas import (
    MAX_SAFE_INTEGER,
    PATTERN_MESSAGES,
    Config,
    HttpRequest,
    TaskSpec,
    dns_server_address,
    is_file_path,
    ms,
)
from tasks_server.config import Settings
from tasks_server.dispatch import capabilities
from tasks_server.model.timing import MAX_EPOCH_MS, parse_date_ms

T = TypeVar("T", bound=msgspec.Struct)

_PATH_IN_MESSAGE = re.compile(
    r"^(?P<message>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?$", re.DOTALL
)
_REGEX_IN_MESSAGE = re.compile(r"^Expected `str` matching regex '(?P<regex>.*)'$", re.DOTALL)
_KEY = re.compile(r"^[a-zA-Z0-9$_.\-\[\]]{1,64}$")
MAX_DATA_DEPTH = 3
MIN_GAP_AFTER_EXECUTION_MS = 1000
MAX_JSON_DEPTH = 32
# the original's refusals: no SSH via resolve; no FTP, SSH, telnet, SMTP or DNS as a proxy
REFUSED_RESOLVE_PORTS = frozenset({22})
REFUSED_PROXY_PORTS = frozenset({20, 21, 22, 23, 25, 53})


class ValidationRules(msgspec.Struct, frozen=True, kw_only=True):
    """What this server's settings allow, beyond what the schema says."""

    allow_file_paths: bool = False  # ALLOW_FILE_PATHS: ca, cert, key may name server files

    @classmethod
    def from_settings(cls, settings: Settings) -> ValidationRules:
        return cls(allow_file_paths=settings.allow_file_paths)


DEFAULT_RULES = ValidationRules()
# (field, what it names in messages) of the options that take PEM/DER content or a path
CERTIFICATE_FIELDS = (("ca", "CA"), ("cert.value", "Cert"), ("key", "Key"))
CERTIFICATE_CONTENT = (
    "Expected the base64 of PEM or DER content (or, with ALLOW_FILE_PATHS=1, an absolute path)"
)
TLS_ORDER = ("1.0", "1.1", "1.2", "1.3")


class ValidationFailed(Exception):
    """The input is invalid; `fields` maps each bad field's path to what is wrong."""

    def __init__(self, fields: dict[str, str], message: str = "Invalid request") -> None:
        super().__init__(message)
        self.fields = fields
        self.message = message


def decode_json(raw: bytes) -> Any:
    """Parse JSON bytes, or raise ValidationFailed naming the body.

    Nesting is bounded (MAX_JSON_DEPTH) so that nothing that walks the value
    afterwards can run out of stack; no valid request comes close.
    """
    too_deep = ValidationFailed(
        {"body": f"Invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"}, "Invalid JSON body"
    )
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ValidationFailed({"body": f"Invalid JSON: {exc}"}, "Invalid JSON body") from None
    except RecursionError:  # msgspec's own guard, at about 1000 levels
        raise too_deep from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise too_deep
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when objects and arrays nest more than `limit` levels (walked without recursion)."""
    if not isinstance(value, dict | list):
        return False
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def convert(data: Any, kind: type[T], *, root: str = "") -> T:
    """Build `kind` from decoded JSON, or raise ValidationFailed with every bad field."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError:
        errors = collect_errors(data, kind, root)
        raise ValidationFailed(errors or {root or "body": "Invalid value"}) from None


def collect_errors(data: Any, kind: Any, path: str) -> dict[str, str]:
    """Every validation error of `data` against `kind`, keyed by dotted path.

    msgspec stops at the first error; this walks struct fields, list items and
    object entries one by one so a client fixing its request sees all problems
    at once, each at its own path (`config.resolve[0].port`, `metadata.a b`).
    """
    struct = _struct_of(kind)
    if struct is None or not isinstance(data, dict):
        return _value_errors(data, kind, path)
    errors: dict[str, str] = {}
    hints = typing.get_type_hints(struct, include_extras=True)
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    for key in data:
        if key not in fields:
            errors[_join(path, str(key))] = "Unknown field"
    for name, field in fields.items():
        if name not in data:
            if field.required:
                errors[_join(path, name)] = "Required field is missing"
            continue
        errors.update(_value_errors(data[name], hints[field.name], _join(path, name)))
    return errors


def _value_errors(value: Any, annotation: Any, path: str) -> dict[str, str]:
    """Errors of one value, descending into the struct, list or object it holds."""
    errors = _convert_error(value, annotation, path)
    if not errors:
        return {}
    arm = _arm_for(annotation, value)
    if arm is None:
        return errors  # a scalar, or a container of the wrong kind: msgspec's word is enough
    base = _unannotated(arm)
    if _struct_of(base) is not None:
        return collect_errors(value, base, path) or errors
    found: dict[str, str] = {}
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        for index, element in enumerate(value):
            found.update(_value_errors(element, item, f"{path}[{index}]"))
    else:
        key_kind, item = typing.get_args(base)
        for key, element in value.items():
            where = _join(path, str(key))
            for bad, message in _convert_error(key, key_kind, where).items():
                found[bad] = f"Invalid key: {message}"
            found.update(_value_errors(element, item, where))
    found.update(_length_errors(value, arm, path))
    return found or errors


def _arm_for(annotation: Any, value: Any) -> Any:
    """The one list, object or struct type of `annotation` that `value` could be, if any."""
    base = _unannotated(annotation)
    arms = typing.get_args(base) if _is_union(base) else (annotation,)
    matching = [arm for arm in arms if _holds(arm, value)]
    return matching[0] if len(matching) == 1 else None


def _holds(arm: Any, value: Any) -> bool:
    base = _unannotated(arm)
    if isinstance(value, dict):
        return _struct_of(base) is not None or typing.get_origin(base) is dict
    if isinstance(value, list):
        return typing.get_origin(base) is list
    return False


def _length_errors(value: Any, annotation: Any, path: str) -> dict[str, str]:
    """The container's own length limits (msgspec.Meta min_length / max_length)."""
    kind = "array" if isinstance(value, list) else "object"
    metas = typing.get_args(annotation)[1:] if typing.get_origin(annotation) is Annotated else ()
    for meta in metas:
        if not isinstance(meta, msgspec.Meta):
            continue
        if meta.min_length is not None and len(value) < meta.min_length:
            return {path: f"Expected `{kind}` of length >= {meta.min_length}"}
        if meta.max_length is not None and len(value) > meta.max_length:
            return {path: f"Expected `{kind}` of length <= {meta.max_length}"}
    return {}


def _convert_error(value: Any, annotation: Any, path: str) -> dict[str, str]:
    try:
        msgspec.convert(value, annotation)
    except msgspec.ValidationError as exc:
        match = _PATH_IN_MESSAGE.match(str(exc))
        assert match is not None  # the pattern matches any text
        # msgspec says `$.a[0]` relative to the value converted; prefix our own path
        full = (path + (match["path"] or "")).lstrip(".")
        message = _friendly(match["message"])
        if match["key"]:
            message = f"Invalid key: {message}"
        return {full or "body": message}
    return {}


def _friendly(message: str) -> str:
    regex = _REGEX_IN_MESSAGE.match(message)
    if regex is None:
        return message
    return PATTERN_MESSAGES.get(regex["regex"].replace("\\\\", "\\"), message)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _struct_of(kind: Any) -> type[msgspec.Struct] | None:
    inner = _strip_optional(kind)
    if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
        return inner
    return None


def _unannotated(kind: Any) -> Any:
    while typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    return kind


def _strip_optional(kind: Any) -> Any:
    base = _unannotated(kind)
    args = typing.get_args(base)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _unannotated(rest[0])
    return base


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


# ---- tasks: rules across fields, and the canonical form that is stored ----


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
    `rules` carries what the server's settings allow (file paths).
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
    _check_build_support(request, config, errors)
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


def execution_time(config: Config, now: int) -> int:
    """When the first attempt is due, for a canonical config."""
    execute_at = ms(config.execute_at)
    return execute_at if execute_at is not None else now + config.execution_delay


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


def _check_build_support(request: HttpRequest, config: Config, errors: dict[str, str]) -> None:
    """Options this libcurl build cannot honour: refused now, not failed on every attempt."""
    if config.http_version == "3" and not capabilities.HTTP3:
        errors["config.httpVersion"] = "HTTP/3 is not supported by this server's libcurl"
    if not capabilities.NTLM:
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


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def parse_query(
    params: list[tuple[str, str]],
    kind: type[T],
    *,
    ignore: frozenset[str] = frozenset(),
    normalize: Mapping[str, Callable[[str], str]] | None = None,
) -> T:
    """Query parameters into `kind`: repeated keys refused, digits as integers."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key, value in params:
        if key in ignore:
            continue
        if key in values:
            errors[key] = "Repeated query parameter"
            continue
        if normalize and key in normalize:
            value = normalize[key](value)
        is_number = value.isascii() and value.isdigit() and len(value) <= 16
        values[key] = int(value) if is_number else value
    if errors:
        raise ValidationFailed(errors, "Invalid query parameters")
    return convert(values, kind)
