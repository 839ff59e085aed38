"""Request and response structs of the HTTP API (msgspec) beyond the task spec itself.

Field names are camelCase on the wire (`rename="camel"`). Every request
struct is strict: an unknown key is an error.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from tasks_server.model.spec import MAX_SAFE_INTEGER, Strict, pattern

OwnerName = Annotated[
    str,
    pattern(
        r"^(?![0-9-])(?!.*--)[a-z0-9-]{5,32}(?<!-)$",
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


class Done(msgspec.Struct):
    status: str = "Done"


class ErrorBody(msgspec.Struct, omit_defaults=True):
    action: str
    message: str
    fields: dict[str, str] | None = None
