"""The task as it is registered and stored: its structs and the rules of each field.

Field names are camelCase on the wire (`rename="camel"`). Every struct is
strict: an unknown key is an error. Ranges follow the original's payload
(reference section 2) with integers where it took any number. The stored
payload is this spec in canonical form (see canonical.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

MAX_SAFE_INTEGER = 2**53 - 1

# regex -> the message a client sees when a value does not match it
PATTERN_MESSAGES: dict[str, str] = {}
# regex -> (a common mistake, what to say instead when the value makes it)
PATTERN_HINTS: dict[str, tuple[tuple[re.Pattern[str], str], ...]] = {}


def pattern(
    regex: str, message: str, *, hints: Mapping[str, str] | None = None, **constraints: Any
) -> Meta:
    """A string constraint whose error message says what is expected, not the regex;
    `hints` maps a mistake (a regex searched in the refused value) to a better message.

    A final `$` is made to mean the end of the text: in Python it also matches
    before a trailing newline, which would let "GET\\n" or a header value
    ending in a line break through. `(?!\\n)$` means the same in JavaScript.
    """
    if regex.endswith("$") and not regex.endswith("\\$"):
        regex = regex[:-1] + r"(?!\n)$"
    PATTERN_MESSAGES[regex] = message
    if hints:
        PATTERN_HINTS[regex] = tuple((re.compile(key), text) for key, text in hints.items())
    return Meta(pattern=regex, description=message, **constraints)


def pattern_message(regex: str, value: Any) -> str | None:
    """What to tell a client whose `value` does not match `regex` (a pattern's)."""
    for mistake, text in PATTERN_HINTS.get(regex, ()):
        if isinstance(value, str) and mistake.search(value):
            return text
    return PATTERN_MESSAGES.get(regex)


Key = Annotated[
    str,
    pattern(r"^[a-zA-Z0-9$_.\-\[\]]{1,64}$", "Expected 1-64 letters, digits or $ _ . - [ ]"),
]
# Header values, query values, metadata: no CR, LF or NUL (no header injection).
NO_CONTROL = r"^[^\r\n\x00]*$"
NO_CONTROL_MESSAGE = "Must not contain CR, LF or NUL characters"
SafeText = Annotated[str, pattern(NO_CONTROL, NO_CONTROL_MESSAGE, min_length=1, max_length=1024)]
Record = Annotated[dict[Key, SafeText], Meta(min_length=1, max_length=64)]
_URL = r"[hH][tT][tT][pP][sS]?://[^\s/?#@]+(?:[/?#][^\s]*)?"
Url = Annotated[
    str,
    pattern(
        f"^{_URL}$",
        "Expected an absolute http or https URL",
        hints={
            r"^[hH][tT][tT][pP][sS]?://[^\s/?#]*@": (
                "Expected a URL without user:password@: credentials have fields of their"
                " own (the request's: httpRequest.authBasic, as {username, password})"
            )
        },
        max_length=1024,
    ),
]
# One pattern, not a union of two `str` types: msgspec would keep only one constraint.
RefererUrl = Annotated[
    str,
    pattern(
        f"^(?:(?i:auto)|{_URL})$", "Expected an absolute http or https URL or AUTO", max_length=1024
    ),
]
IpAddress = Annotated[
    str,
    pattern(
        r"^(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}"
        r"|\[?[0-9a-fA-F:.]*:[0-9a-fA-F:.]*\]?)$",
        "Expected an IPv4 or IPv6 address",
    ),
]
# curl's --dns-servers form: an IP, with a port as 1.2.3.4:5353 or [::1]:5353 (our addition)
DnsServer = Annotated[
    str,
    pattern(
        r"^(?:(?:\d{1,3}(?:\.\d{1,3}){3})(?::\d{1,5})?"
        r"|\[[0-9a-fA-F:.]*:[0-9a-fA-F:.]*\](?::\d{1,5})?"
        r"|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*)$",
        "Expected an IPv4 or IPv6 address, optionally with a port (1.2.3.4:53, [::1]:53)",
    ),
]
DNS_PORT = 53


def dns_server_address(text: str) -> tuple[str, int]:
    """(ip, port) of a DnsServer value; the port is 53 unless given."""
    if text.startswith("["):
        ip, _, port = text[1:].partition("]")
        return ip, int(port[1:]) if port else DNS_PORT
    if text.count(":") == 1:
        ip, _, port = text.partition(":")
        return ip, int(port)
    return text, DNS_PORT


def is_file_path(value: str) -> bool:
    """A ca, cert or key value naming a server file (absolute path), not base64 content.

    Base64 of a PEM starts with `LS0t`, of DER with `MI`: never with `/`.
    """
    return value.startswith("/")


Hostname = Annotated[
    str,
    pattern(
        r"^(?:\*|[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
        r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*)$",
        "Expected a host name or *",
        max_length=1024,
    ),
]
# ms since the epoch, or a date string with an offset (ISO 8601, RFC 2822, "Dec 12 2012 ...").
DateValue = (
    Annotated[int, Meta(ge=0, le=8_640_000_000_000_000)]
    | Annotated[str, Meta(min_length=1, max_length=64)]
)
Base64Text = Annotated[str, Meta(min_length=1, max_length=65536)]
Delay = Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)]


Protocol = Annotated[str, pattern(r"^(?i:https?)$", "Expected http or https")]


class Strict(
    msgspec.Struct, forbid_unknown_fields=True, rename="camel", omit_defaults=True, frozen=True
):
    pass


class Auth(Strict, frozen=True):
    username: Annotated[str, Meta(min_length=1, max_length=64)]
    password: Annotated[str, Meta(min_length=1, max_length=256)]


class AwsSigv4(Strict, frozen=True):
    provider1: Annotated[str, Meta(min_length=3, max_length=64)]
    provider2: Annotated[str, Meta(min_length=3, max_length=64)]
    region: Annotated[str, Meta(min_length=1, max_length=128)]
    service: Annotated[str, Meta(min_length=1, max_length=128)]
    key: Annotated[str, Meta(min_length=1, max_length=256)]
    secret: Annotated[str, Meta(min_length=1, max_length=256)]


def ms(value: int | str | None) -> int | None:
    """A date field of a canonical spec, where dates are always ms."""
    assert not isinstance(value, str), "canonical specs hold dates as ms"
    return value


class FormField(Strict, frozen=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    value: Annotated[str, Meta(min_length=1, max_length=4096)]


class Cookie(Strict, frozen=True):
    name: Annotated[
        str,
        pattern(r"^[^\s;=,\x00-\x1f]+$", "Expected a cookie name", min_length=1, max_length=64),
    ]
    value: Annotated[
        str,
        pattern(
            r"^[^;\r\n\x00]*$", "Must not contain ; CR LF or NUL", min_length=1, max_length=512
        ),
    ]


class Resolve(Strict, frozen=True):
    host: Hostname
    port: Annotated[int, Meta(ge=1, le=65535)]
    address: Annotated[list[IpAddress], Meta(min_length=1, max_length=4)]


class Proxy(Strict, frozen=True):
    protocol: Protocol
    host: Annotated[
        str,
        pattern(r"^[a-zA-Z0-9.\-]+$", "Expected a host name or IPv4", min_length=1, max_length=128),
    ]
    port: Annotated[int, Meta(ge=1, le=65535)] | None = None


class Cert(Strict, frozen=True):
    value: Base64Text
    password: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None


Method = Annotated[
    str, pattern(r"^(?i:get|post|put|patch|delete)$", "Expected GET, POST, PUT, PATCH or DELETE")
]
Body = (
    Annotated[str, Meta(min_length=1, max_length=4096)]
    | Annotated[list[FormField], Meta(min_length=1, max_length=64)]
    | dict[str, Any]
)


class HttpRequest(Strict, frozen=True):
    url: Url
    method: Method
    query: Record | None = None
    headers: Record | None = None
    data: Body | None = None
    cookie: Base64Text | Annotated[list[Cookie], Meta(min_length=1, max_length=16)] | None = None
    auth_basic: Auth | None = None
    auth_digest: Auth | None = None
    auth_ntlm: Auth | None = None
    auth_aws_sigv4: AwsSigv4 | None = None
    transport: Literal["fetch", "curl"] | None = None


DEFAULT_USER_AGENT = "Tasks-Server/1.0 (compatible; Linux x86_64; +http://tasks-server)"
TlsVersion = Literal["1.0", "1.1", "1.2", "1.3"]


class Config(Strict, frozen=True):
    # scheduling
    execution_delay: Delay = 1
    execute_at: DateValue | None = None
    execute_immediately: bool = False
    retry: Delay = 0
    retry_at: DateValue | None = None
    retry_interval: Annotated[int, Meta(ge=1, le=MAX_SAFE_INTEGER)] = 1
    retry_exponential: bool = True
    ignore_status_code: Annotated[
        list[Annotated[int, Meta(ge=400, le=599)]], Meta(max_length=40)
    ] = msgspec.field(default_factory=list)
    timeout: Annotated[int, Meta(ge=1000, le=MAX_SAFE_INTEGER)] = 30000
    timeout_at: DateValue | None = None
    # HTTP behaviour
    http_version: Literal["0.9", "1.0", "1.1", "2", "2-prior-knowledge", "3"] = "1.1"
    user_agent: Annotated[
        str, pattern(NO_CONTROL, NO_CONTROL_MESSAGE, min_length=8, max_length=256)
    ] = DEFAULT_USER_AGENT
    ip_version: Literal[4, 6] = 4
    credentials: Literal["include", "omit", "same-origin"] | None = None
    referrer_policy: (
        Literal[
            "",
            "no-referrer",
            "no-referrer-when-downgrade",
            "origin",
            "origin-when-cross-origin",
            "same-origin",
            "strict-origin",
            "strict-origin-when-cross-origin",
            "unsafe-url",
        ]
        | None
    ) = None
    mode: Literal["cors", "no-cors", "same-origin"] | None = None
    referer_url: RefererUrl = "AUTO"
    keep_alive_duration: Annotated[int, Meta(ge=0, le=259200)] = 30
    hsts: Base64Text | bool | None = None
    session_id: bool = True
    insecure: bool = False
    trace_response_data: bool = True
    location: bool = True
    location_trusted: Auth | None = None
    redirect_attempts: Annotated[int, Meta(ge=0, le=32)] = 8
    proto: Protocol | None = None
    proto_redirect: Protocol | None = None
    dns_server: Annotated[list[DnsServer], Meta(min_length=1, max_length=4)] | None = None
    resolve: Annotated[list[Resolve], Meta(min_length=1, max_length=4)] | None = None
    doh_url: Url | None = None
    doh_insecure: bool | None = None
    tls_version: TlsVersion | None = None
    tls_max_version: TlsVersion | None = None
    ca: Base64Text | None = None
    cert: Cert | None = None
    cert_type: (
        Annotated[str, pattern(r"^(?i:der|eng|p12|pem)$", "Expected DER, ENG, P12 or PEM")] | None
    ) = None
    cert_status: bool | None = None
    key: Base64Text | None = None
    key_type: Annotated[str, pattern(r"^(?i:der|eng|pem)$", "Expected DER, ENG or PEM")] | None = (
        None
    )
    proxy: Proxy | None = None
    proxy_headers: Record | None = None
    proxy_insecure: bool | None = None
    proxy_http_version: Literal["1.0", "1.1"] = "1.1"
    proxy_auth_basic: Auth | None = None
    proxy_auth_digest: Auth | None = None
    proxy_auth_ntlm: Auth | None = None
    ha_proxy_client_ip: IpAddress | None = None
    ha_proxy_protocol: bool | None = None


Metadata = Annotated[
    dict[Key, Annotated[str, Meta(min_length=1, max_length=512)]],
    Meta(min_length=1, max_length=8),
]


class TaskSpec(Strict, frozen=True):
    """A task as registered: what to send, and when and how often to try."""

    http_request: HttpRequest
    config: Config = msgspec.field(default_factory=Config)
    metadata: Metadata | None = None
