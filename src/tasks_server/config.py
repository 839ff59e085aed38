"""Every setting of the server, read once from the environment into one struct."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import croniter


class SettingsError(ValueError):
    """Settings the server cannot use: `problems` says what is wrong, one variable (or env
    file line) at a time, and the message lists them all."""

    def __init__(self, *problems: str, notes: Sequence[str] = ()) -> None:
        """`notes`: what may explain the problems (a misspelt variable), listed after them
        and not counted."""
        self.problems = problems
        if len(problems) == 1 and not notes:
            text = problems[0]
        else:
            count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
            text = f"{count} with the settings:\n" + "\n".join(
                [f"  {problem}" for problem in problems] + [f"  note: {note}" for note in notes]
            )
        super().__init__(text)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 9420
    path_sqlite: str = ".data/tasks.db"
    database_url: str = ""  # postgresql://...: the PostgreSQL store instead of PATH_SQLITE
    task_retention_days: int = 30  # finished tasks deleted this long after; 0: kept forever
    cipher_key: str = ""
    cipher_key_previous: tuple[str, ...] = ()  # older keys, tried after CIPHER_KEY to read rows
    log: bool = False
    log_format: str = "text"  # or "json": every line one JSON object
    log_access: bool = False
    attempt_history: int = 20  # attempts kept per task (model.records.ATTEMPT_HISTORY)
    metrics_token: str = ""  # when set, /metrics needs it as a Bearer token
    admin_token: str = ""  # when set, the dashboard's operator view opens with it
    max_size_body_request: int = 32768
    max_size_data_response: int = 32768
    max_tasks_in_queue: int = 1000
    max_in_flight: int = 1000
    shutdown_grace_ms: int = 10_000
    instance_stale_ms: int = 3_000
    allow_file_paths: bool = False  # ca, cert, key may name files on this server
    tz: str = ""
    backup_enabled: bool = True
    backup_method_sqlite: str = "LOCAL"
    backup_path_dir_sqlite: str = ""  # empty: <data dir>/backups
    backup_cron_pattern_sqlite: str = "0 0 * * *"
    backup_cron_tz_sqlite: str = ""  # empty: TZ, else UTC
    backup_retention: int = 7
    backup_encrypt: bool = False
    backup_object_storage_endpoint: str = ""
    backup_object_storage_access_key: str = ""
    backup_object_storage_secret_key: str = ""
    backup_object_storage_bucket_name: str = ""
    backup_object_storage_path: str = ""
    backup_object_storage_path_style: bool = False
    s3_region: str = ""
    s3_session_token: str = ""
    max_throttle_request: int = 0
    max_throttle_time_window: int = 0
    trust_proxy_headers: bool = False
    registration_token: str = ""
    path_tls_cert: str = ""
    path_tls_key: str = ""
    path_tls_ca: str = ""
    target_allow: tuple[str, ...] = ()  # CIDR blocks; empty: every address not denied
    target_deny: tuple[str, ...] = ()
    cluster_mode: bool = False  # several serve processes on one socket and one database
    max_instances: int = 0  # processes in cluster mode; 0: one per CPU

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Parse the variables of ENV_TABLE from `env` (default: os.environ).

        Empty values count as unset. `overrides` (field names) win over the environment.
        SettingsError lists every bad variable and every conflict, not the first one.
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        problems: list[str] = []
        unread: set[str] = set()
        for variable, field, parse in ENV_TABLE:
            raw = source.get(variable, "").strip()
            if not raw:
                continue
            try:
                values[field] = parse(raw)
            except ValueError as exc:
                problems.append(f"{variable}={raw!r}: {exc}")
                unread.add(field)
        values.update(overrides)
        problems.extend(conflicts({**_DEFAULTS, **values}, unread))
        if problems:
            raise SettingsError(*problems)
        return cls(**values)

    def __post_init__(self) -> None:
        problems = conflicts(msgspec.structs.asdict(self))
        if problems:
            raise SettingsError(*problems)

    @property
    def database_label(self) -> str:
        """Where the database is, for people: the SQLite file's absolute path (a server
        started from another directory says so), or the URL without its password."""
        if self.database_url:
            return redact_url(self.database_url)
        return str(Path(self.path_sqlite).resolve())

    @property
    def data_dir(self) -> Path:
        return Path(self.path_sqlite).parent

    @property
    def backup_dir(self) -> Path:
        """Where LOCAL backups go: BACKUP_PATH_DIR_SQLITE, else `backups` beside the database."""
        if self.backup_path_dir_sqlite:
            return Path(self.backup_path_dir_sqlite)
        return self.data_dir / "backups"

    @property
    def backup_time_zone(self) -> str:
        return self.backup_cron_tz_sqlite or self.tz or "UTC"

    @property
    def throttled(self) -> bool:
        return self.max_throttle_request > 0

    @property
    def tls(self) -> bool:
        return bool(self.path_tls_cert)

    @property
    def instances(self) -> int:
        """How many serve processes run: one, or MAX_INSTANCES (0: one per CPU) in cluster mode."""
        if not self.cluster_mode:
            return 1
        return self.max_instances or _usable_cpus()


_DEFAULTS = {field.name: field.default for field in msgspec.structs.fields(Settings)}

# settings that are wrong together: (the fields a rule reads, when they are wrong, what to say)
CONFLICTS: tuple[tuple[tuple[str, ...], Callable[..., bool], str], ...] = (
    (
        ("max_throttle_request", "max_throttle_time_window"),
        lambda requests, window: (requests == 0) != (window == 0),
        "MAX_THROTTLE_REQUEST and MAX_THROTTLE_TIME_WINDOW are both 0 (off) or both set",
    ),
    (
        ("path_tls_key", "path_tls_cert"),
        lambda key, cert: bool(key) and not cert,
        "PATH_TLS_KEY needs PATH_TLS_CERT",
    ),
    (
        ("path_tls_ca", "path_tls_cert"),
        lambda ca, cert: bool(ca) and not cert,
        "PATH_TLS_CA needs PATH_TLS_CERT",
    ),
    (
        ("database_url", "cipher_key"),
        lambda url, key: bool(url) and not key,
        "DATABASE_URL needs CIPHER_KEY: every node must seal tasks with the same key",
    ),
)


def conflicts(values: Mapping[str, Any], unread: Set[str] = frozenset()) -> list[str]:
    """What CONFLICTS says of `values` (every field), leaving out the rules that read a
    field in `unread` (its variable could not be read: its own error says so)."""
    return [
        message
        for fields, wrong, message in CONFLICTS
        if unread.isdisjoint(fields) and wrong(*(values[field] for field in fields))
    ]


def _usable_cpus() -> int:
    """The CPUs this process may run on (a container's limit), not all the host's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected 1 or 0")


def _integer(raw: str, low: int, high: int | None, expected: str) -> int:
    """`raw` as an integer from `low` to `high` (None: no bound); else ValueError saying
    what was `expected`."""
    value = int(raw) if re.fullmatch(r"[+-]?[0-9]+", raw) else None
    if value is None or value < low or (high is not None and value > high):
        raise ValueError(f"expected {expected}")
    return value


def _positive_int(raw: str) -> int:
    return _integer(raw, 1, None, "an integer >= 1")


def _non_negative_int(raw: str) -> int:
    return _integer(raw, 0, None, "an integer >= 0")


def _bearer_token(raw: str) -> str:
    # RFC 6750 token characters, so that it travels in an Authorization header as it is
    if len(raw) < 16 or not re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", raw):
        raise ValueError("expected at least 16 letters, digits or - . _ ~ + / (then = padding)")
    return raw


def _key_list(raw: str) -> tuple[str, ...]:
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def _cidr_list(raw: str) -> tuple[str, ...]:
    """Comma-separated addresses or CIDR blocks, kept in their normal form (10.0.0.0/8)."""
    blocks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            blocks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR block") from None
    return tuple(blocks)


def _backup_method(raw: str) -> str:
    method = raw.upper()
    if method not in {"LOCAL", "OBJECT_STORAGE"}:
        raise ValueError("expected LOCAL or OBJECT_STORAGE")
    return method


def _cron_pattern(raw: str) -> str:
    # five fields, or six with the seconds first (as the original's Croner reads them)
    if not croniter.is_valid(raw, second_at_beginning=True):
        raise ValueError("expected a cron pattern: [second] minute hour day month weekday")
    return raw


def _time_zone(raw: str) -> str:
    name = raw.removeprefix(":")
    if name.startswith("/"):  # a zone file, as POSIX TZ allows: named by its path in zoneinfo/
        name = os.path.realpath(name).partition("zoneinfo/")[2]
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("expected an IANA time zone such as UTC or Asia/Jakarta") from None
    return name


def parse_database_url(raw: str) -> str:
    """A PostgreSQL URL as DATABASE_URL takes it; ValueError otherwise."""
    parts = urlsplit(raw)
    if parts.scheme not in {"postgresql", "postgres"} or not (parts.hostname or parts.path):
        raise ValueError("expected postgresql://user:password@host:5432/database")
    return raw


def redact_url(url: str) -> str:
    """`url` with its password replaced by ***, to name a database in messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username is not None else ":***@"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=user + host))


def _log_format(raw: str) -> str:
    if raw not in ("text", "json"):
        raise ValueError("expected text or json")
    return raw


def _port(raw: str) -> int:
    return _integer(raw, 1, 65535, "a port number 1..65535")


# environment variable -> Settings field -> parser
ENV_TABLE: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("HOST", "host", str),
    ("PORT", "port", _port),
    ("PATH_SQLITE", "path_sqlite", str),
    ("DATABASE_URL", "database_url", parse_database_url),
    ("TASK_RETENTION_DAYS", "task_retention_days", _non_negative_int),
    ("CIPHER_KEY", "cipher_key", str),
    ("CIPHER_KEY_PREVIOUS", "cipher_key_previous", _key_list),
    ("LOG", "log", _flag),
    ("LOG_FORMAT", "log_format", _log_format),
    ("LOG_ACCESS", "log_access", _flag),
    ("ATTEMPT_HISTORY", "attempt_history", _non_negative_int),
    ("METRICS_TOKEN", "metrics_token", _bearer_token),
    ("ADMIN_TOKEN", "admin_token", _bearer_token),
    ("MAX_SIZE_BODY_REQUEST", "max_size_body_request", _positive_int),
    ("MAX_SIZE_DATA_RESPONSE", "max_size_data_response", _positive_int),
    ("MAX_TASKS_IN_QUEUE", "max_tasks_in_queue", _positive_int),
    ("MAX_IN_FLIGHT", "max_in_flight", _positive_int),
    ("SHUTDOWN_GRACE_MS", "shutdown_grace_ms", _non_negative_int),
    ("INSTANCE_STALE_MS", "instance_stale_ms", _positive_int),
    ("ALLOW_FILE_PATHS", "allow_file_paths", _flag),
    ("TZ", "tz", _time_zone),
    ("BACKUP_ENABLED", "backup_enabled", _flag),
    ("BACKUP_METHOD_SQLITE", "backup_method_sqlite", _backup_method),
    ("BACKUP_PATH_DIR_SQLITE", "backup_path_dir_sqlite", str),
    ("BACKUP_CRON_PATTERN_SQLITE", "backup_cron_pattern_sqlite", _cron_pattern),
    ("BACKUP_CRON_TZ_SQLITE", "backup_cron_tz_sqlite", _time_zone),
    ("BACKUP_RETENTION", "backup_retention", _positive_int),
    ("BACKUP_ENCRYPT", "backup_encrypt", _flag),
    ("BACKUP_OBJECT_STORAGE_ENDPOINT", "backup_object_storage_endpoint", str),
    ("BACKUP_OBJECT_STORAGE_ACCESS_KEY", "backup_object_storage_access_key", str),
    ("BACKUP_OBJECT_STORAGE_SECRET_KEY", "backup_object_storage_secret_key", str),
    ("BACKUP_OBJECT_STORAGE_BUCKET_NAME", "backup_object_storage_bucket_name", str),
    ("BACKUP_OBJECT_STORAGE_PATH", "backup_object_storage_path", str),
    ("BACKUP_OBJECT_STORAGE_PATH_STYLE", "backup_object_storage_path_style", _flag),
    # two variables per field: the later row wins, so S3_* is taken over AWS_*
    ("AWS_REGION", "s3_region", str),
    ("S3_REGION", "s3_region", str),
    ("AWS_SESSION_TOKEN", "s3_session_token", str),
    ("S3_SESSION_TOKEN", "s3_session_token", str),
    ("MAX_THROTTLE_REQUEST", "max_throttle_request", _non_negative_int),
    ("MAX_THROTTLE_TIME_WINDOW", "max_throttle_time_window", _non_negative_int),
    ("TRUST_PROXY_HEADERS", "trust_proxy_headers", _flag),
    ("REGISTRATION_TOKEN", "registration_token", _bearer_token),
    ("PATH_TLS_CERT", "path_tls_cert", str),
    ("PATH_TLS_KEY", "path_tls_key", str),
    ("PATH_TLS_CA", "path_tls_ca", str),
    ("TARGET_ALLOW", "target_allow", _cidr_list),
    ("TARGET_DENY", "target_deny", _cidr_list),
    ("CLUSTER_MODE", "cluster_mode", _flag),
    ("MAX_INSTANCES", "max_instances", _non_negative_int),
)


def read_env_file(path: str) -> dict[str, str]:
    """Read KEY=VALUE lines (blank lines and # comments skipped, optional quotes);
    SettingsError naming every line that is not one."""
    values, problems = _parse_env_file(path)
    if problems:
        raise SettingsError(*problems)
    return values


def _parse_env_file(path: str) -> tuple[dict[str, str], list[str]]:
    values: dict[str, str] = {}
    problems: list[str] = []
    try:
        # utf-8-sig: an editor's byte order mark is not part of the first variable's name
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        return values, [f"{path}: not UTF-8 text (byte {exc.start})"]
    except OSError as exc:
        return values, [f"{path}: cannot be read ({exc.strerror})"]
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip():
            problems.append(f"{path}:{number}: expected KEY=VALUE")
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values, problems


VARIABLES = tuple(dict.fromkeys(variable for variable, _, _ in ENV_TABLE))


def unknown_variables(names: Iterable[str], source: str) -> list[str]:
    """A warning for each of `names` (read from `source`) that is no setting: it would be
    ignored without a word. Each suggests the closest variable, if one is close."""
    warnings = []
    for name in names:
        if name in VARIABLES:
            continue
        close = difflib.get_close_matches(name.upper(), VARIABLES, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"{source}: {name} is not a setting (ignored){hint}")
    return warnings


def load_settings(env_file: str | None, **overrides: object) -> tuple[Settings, list[str]]:
    """The settings of the environment, or of `env_file` with the environment winning;
    `overrides` (field names, None for not given) win over both. With them, a warning for
    each variable of `env_file` that is no setting.

    SettingsError lists every problem: the file's bad lines, the bad values and, as they
    may be the cause (a misspelt variable), the warnings.
    """
    env = dict(os.environ)
    problems: list[str] = []
    warnings: list[str] = []
    if env_file:
        from_file, problems = _parse_env_file(env_file)
        warnings = unknown_variables(from_file, env_file)
        # the real environment wins over the file; an empty variable counts as unset
        env = {**from_file, **{k: v for k, v in env.items() if v.strip()}}
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        settings = Settings.from_env(env, **given)
    except SettingsError as exc:
        raise SettingsError(*problems, *exc.problems, notes=warnings) from None
    if problems:
        raise SettingsError(*problems, notes=warnings)
    return settings, warnings
