"""Request and response structs of the HTTP API (msgspec) beyond the task spec itself.

Field names are camelCase on the wire (`rename="camel"`). Every request
struct is strict: an unknown key is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from tasks_server.model.lifecycle import State
from tasks_server.model.spec import MAX_SAFE_INTEGER, Strict, pattern

OWNER_NAME = r"^(?![0-9-])(?!.*--)[a-z0-9-]{5,32}(?<!-)$"
OwnerName = Annotated[
    str,
    pattern(
        OWNER_NAME,
        "Expected 5-32 characters of a-z, 0-9 and -; it cannot start with a number or hyphen,"
        " end with a hyphen, or contain consecutive hyphens",
    ),
]


class OwnerRegistration(Strict, frozen=True):
    name: OwnerName


# ---- query parameters of GET /v1/queues ----

ListOrder = Literal["createdAt", "estimateEndAt", "estimateExecutionAt"]
ListSort = Literal["asc", "desc"]
StateName = Literal["RUNNING", "PAUSED", "SUCCESS", "ERROR", "REVOKED"]


class ListQuery(Strict, frozen=True):
    limit: Annotated[int, Meta(ge=1, le=1000)] = 10
    offset: Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)] = 0
    order: ListOrder = "createdAt"
    sort: ListSort = "asc"
    state: StateName | None = None
    # ms since the epoch: from (inclusive) and to (exclusive) on createdAt, and on
    # estimateExecutionAt (due)
    created_from: Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)] | None = None
    created_to: Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)] | None = None
    due_from: Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)] | None = None
    due_to: Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)] | None = None
    # the target URL's host, exactly (case does not matter)
    host: Annotated[str, Meta(min_length=1, max_length=253)] | None = None
    # a task id: the page that follows it (paging that costs the same at any depth)
    after: Annotated[str, Meta(pattern=r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")] | None = None


class AttemptsQuery(Strict, frozen=True):
    limit: Annotated[int, Meta(ge=1, le=100)] = 20
    # only attempts numbered below this (the `number` of the last one of a page)
    before: Annotated[int, Meta(ge=1, le=2**31 - 1)] = 2**31 - 1


# ---- responses ----


class Camel(msgspec.Struct, rename="camel"):
    pass


class OwnerCreated(Camel):
    id: str
    key: str


class OwnerView(Camel):
    id: str
    name: str
    created_at: int
    tasks_in_queue: int
    tasks_in_queue_limit: int


class TaskView(Camel):
    id: str
    state: str
    created_at: int
    status_code: int
    estimate_end_at: int
    estimate_execution_at: int
    response: str | None
    metadata: dict[str, str] | None
    retry_count: int
    retry_limit: int
    estimate_next_retry_at: int
    attempts: int
    error: str | None


class AttemptTimingsView(Camel):
    dns_ms: float
    connect_ms: float
    tls_ms: float
    first_byte_ms: float
    total_ms: float


class AttemptView(Camel):
    number: int
    due_at: int
    started_at: int
    ended_at: int
    status_code: int
    error: str | None
    response_bytes: int
    http_version: str | None
    remote_address: str | None
    timings: AttemptTimingsView


class TaskCounts(msgspec.Struct):
    RUNNING: int
    PAUSED: int
    SUCCESS: int
    ERROR: int
    REVOKED: int

    @classmethod
    def of(cls, counts: Mapping[State, int]) -> TaskCounts:
        return cls(**{state.value: count for state, count in counts.items()})


class ActivityPoint(Camel):
    """One minute of the server process that answered (the dashboard's charts)."""

    minute: int  # its start, ms since the epoch
    succeeded: int
    failed: int
    lateness_p50_ms: float | None  # bucket upper bounds (as Prometheus estimates them)
    lateness_p99_ms: float | None
    backlog: int  # the largest due backlog seen in the minute


class InstanceView(Camel):
    id: str
    host: str
    pid: int
    heartbeat_at: int
    in_flight: int


class BackupView(Camel):
    tick: int
    state: str
    started_at: int
    finished_at: int | None
    location: str | None
    size: int | None
    error: str | None


class Overview(Camel):
    """The operator's view across owners (ADMIN_TOKEN)."""

    instances: list[InstanceView]
    tasks: TaskCounts
    due_backlog: int
    oldest_due_age_ms: int
    backups: list[BackupView]


class Health(msgspec.Struct, omit_defaults=True):
    status: str  # ok, or unavailable
    reason: str | None = None


class Done(msgspec.Struct):
    status: str = "Done"


class ErrorBody(msgspec.Struct, omit_defaults=True):
    action: str
    message: str
    fields: dict[str, str] | None = None
