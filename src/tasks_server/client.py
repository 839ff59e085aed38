"""A typed Python client of the Tasks Server HTTP API: `TasksClient` (sync) and
`AsyncTasksClient` (asyncio), on httpx.

Requests and answers are the server's own msgspec structs (`HttpRequest`,
`Config`, `TaskView`, `AttemptView`, ...), so a field the server renames or
retypes breaks here too, under mypy, rather than at run time. Every endpoint
is written once, as a `Call` (what to send, how to read the answer); the two
clients differ only in how they send it. An error answer raises `TasksError`;
429 (and 503, but for a POST) are retried after their `Retry-After`, a bounded
number of times.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx
import msgspec

from tasks_server import __version__
from tasks_server.api.schemas import (
    AttemptsQuery,
    AttemptView,
    Done,
    ErrorBody,
    ListOrder,
    ListQuery,
    ListSort,
    OwnerCreated,
    OwnerRegistration,
    StateName,
    TaskCounts,
    TaskView,
)
from tasks_server.model.spec import Config, HttpRequest, TaskSpec

__all__ = [
    "AsyncTasksClient",
    "AttemptView",
    "Config",
    "HttpRequest",
    "ListOptions",
    "OwnerCreated",
    "TaskCounts",
    "TaskSpec",
    "TaskView",
    "TasksClient",
    "TasksError",
]

T = TypeVar("T")
Http = TypeVar("Http", httpx.Client, httpx.AsyncClient)
# aliases: inside the clients `list` names a method
Tasks = list[TaskView]
Attempts = list[AttemptView]

RETRIED_STATUSES = frozenset({429, 503})  # throttled, or the database cannot take writes now
DEFAULT_RETRY_AFTER = 1.0  # seconds, when a 429 or 503 does not say
ITERATION_PAGE_SIZE = 100  # iter_tasks' page size unless `limit` says otherwise
USER_AGENT = f"tasks-server-client/{__version__}"


class TasksError(Exception):
    """An error answer of the server: its HTTP `status`, `message`, `action` (what the
    server advises), and for a 400 `fields`: each bad field's path -> what is wrong."""

    def __init__(
        self,
        status: int,
        message: str,
        fields: Mapping[str, str] | None = None,
        action: str = "",
    ) -> None:
        self.status = status
        self.message = message
        self.fields: dict[str, str] = dict(fields or {})
        self.action = action
        details = "".join(f"; {path}: {problem}" for path, problem in self.fields.items())
        super().__init__(f"{status} {message}{details}")


class ListOptions(TypedDict, total=False):
    """The filters and paging of `list` and `iter_tasks`: ListQuery's fields (a test keeps
    the two alike)."""

    limit: int
    offset: int
    order: ListOrder
    sort: ListSort
    state: StateName | None
    created_from: int | None
    created_to: int | None
    due_from: int | None
    due_to: int | None
    host: str | None
    after: str | None


# ---- each endpoint: what is sent and how the answer is read (both clients send these) ----


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to the API and the type of its answer."""

    method: str
    path: str
    answer: msgspec.json.Decoder[T]
    body: Any = None  # encoded as JSON; None: no body
    params: dict[str, Any] = field(default_factory=dict)
    # None: the owner's key and id; otherwise these instead (owner registration)
    credentials: dict[str, str] | None = None


# one decoder per answer type, made once
_TASK = msgspec.json.Decoder(TaskView)
_TASKS = msgspec.json.Decoder(Tasks)
_ATTEMPTS = msgspec.json.Decoder(Attempts)
_SPEC = msgspec.json.Decoder(TaskSpec)
_COUNTS = msgspec.json.Decoder(TaskCounts)
_OWNER = msgspec.json.Decoder(OwnerCreated)
_DONE = msgspec.json.Decoder(Done)


def _task_path(task_id: str, action: str = "") -> str:
    # quoted: an id that is not one must not reach another path
    return f"/v1/queues/{quote(task_id, safe='')}{action}"


def register_owner_call(name: str, registration_token: str | None) -> Call[OwnerCreated]:
    token = {"Authorization": f"Bearer {registration_token}"} if registration_token else {}
    body = OwnerRegistration(name=name)
    return Call("POST", "/v1/owners/register", _OWNER, body, credentials=token)


def register_call(
    http_request: HttpRequest | Mapping[str, Any],
    config: Config | Mapping[str, Any] | None,
    metadata: Mapping[str, str] | None,
) -> Call[TaskView]:
    parts = {"httpRequest": http_request, "config": config, "metadata": metadata}
    # plain mappings go as they are: the server, not this client, says what is wrong in them
    body = {
        key: value if isinstance(value, msgspec.Struct) else dict(value)
        for key, value in parts.items()
        if value is not None
    }
    return Call("POST", "/v1/queues/register", _TASK, body)


def list_call(query: ListQuery) -> Call[Tasks]:
    # the struct encodes to the wire's names, without the defaults the server assumes anyway
    return Call("GET", "/v1/queues", _TASKS, params=msgspec.to_builtins(query))


def attempts_call(task_id: str, limit: int, before: int | None) -> Call[Attempts]:
    query = AttemptsQuery(limit=limit)
    if before is not None:
        query = msgspec.structs.replace(query, before=before)
    return Call(
        "GET", _task_path(task_id, "/attempts"), _ATTEMPTS, params=msgspec.to_builtins(query)
    )


def first_page(options: ListOptions) -> ListQuery:
    """The query of iter_tasks' first page: `options`, ITERATION_PAGE_SIZE tasks a page
    unless they say."""
    query = ListQuery(**options)
    if "limit" not in options:
        query = msgspec.structs.replace(query, limit=ITERATION_PAGE_SIZE)
    return query


def next_page(query: ListQuery, page: Tasks) -> ListQuery | None:
    """The page after `page`, or None after the last: keyset paging from its last task
    (as fast at any depth as at the start, and steady while tasks are added)."""
    if len(page) < query.limit:
        return None
    return msgspec.structs.replace(query, after=page[-1].id, offset=0)


Action = Literal["pause", "revoke", "execute", "delete"]
# the actions answered {"status": "Done"}: action -> (method, path after the task's)
ACTIONS: dict[Action, tuple[str, str]] = {
    "pause": ("PATCH", "/pause"),
    "revoke": ("PATCH", "/revoke"),
    "execute": ("POST", "/execute"),
    "delete": ("DELETE", ""),
}


def action_call(task_id: str, action: Action) -> Call[Done]:
    method, suffix = ACTIONS[action]
    return Call(method, _task_path(task_id, suffix), _DONE)


def resume_call(task_id: str) -> Call[TaskView]:
    return Call("PATCH", _task_path(task_id, "/resume"), _TASK)


def get_call(task_id: str) -> Call[TaskView]:
    return Call("GET", _task_path(task_id), _TASK)


def config_call(task_id: str) -> Call[TaskSpec]:
    return Call("GET", _task_path(task_id, "/config"), _SPEC)


def edit_call(task_id: str, patch: Mapping[str, Any]) -> Call[TaskView]:
    return Call("PATCH", _task_path(task_id), _TASK, dict(patch))


def stats_call() -> Call[TaskCounts]:
    return Call("GET", "/v1/queues/stats", _COUNTS)


# ---- answers ----


def read_answer(call: Call[T], reply: httpx.Response) -> T:
    """The answer decoded as `call` says, or TasksError for an error status."""
    if reply.is_success:
        return call.answer.decode(reply.content)
    try:
        error = msgspec.json.decode(reply.content, type=ErrorBody)
    except msgspec.DecodeError:  # not the server's own shape (a proxy in front of it)
        raise TasksError(reply.status_code, reply.text[:200] or reply.reason_phrase) from None
    raise TasksError(reply.status_code, error.message, error.fields, error.action)


def retry_after(reply: httpx.Response, cap: float) -> float:
    """Seconds `reply` asks to wait before trying again (Retry-After: seconds or an HTTP
    date), DEFAULT_RETRY_AFTER when it does not say, never more than `cap`."""
    value = reply.headers.get("retry-after", "").strip()
    if re.fullmatch("[0-9]+", value):  # not str.isdigit: it takes digits float() refuses
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return min(DEFAULT_RETRY_AFTER, cap)
    return min(max(0.0, when.timestamp() - time.time()), cap)


# ---- the clients ----


class _Client(ABC, Generic[Http]):
    """What both clients hold: the connection, the owner's credentials, the retry policy."""

    def __init__(
        self,
        base_url: str,
        owner_id: str | None = None,
        key: str | None = None,
        timeout: float = 30.0,
        *,
        retries: int = 3,
        max_retry_wait: float = 60.0,
    ) -> None:
        """`retries`: how many times a 429 or 503 is tried again (each after its
        Retry-After, at most `max_retry_wait` seconds) before it raises TasksError."""
        self.owner_id = owner_id
        self.key = key
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self._http: Http = self._open(base_url, timeout)

    @abstractmethod
    def _open(self, base_url: str, timeout: float) -> Http: ...

    def _request(self, call: Call[Any]) -> httpx.Request:
        headers = {"User-Agent": USER_AGENT}
        if call.credentials is not None:
            headers.update(call.credentials)
        elif self.owner_id is not None and self.key is not None:
            headers["Authorization"] = f"Bearer {self.key}"
            headers["X-Tasks-Owner-Id"] = self.owner_id
        content = None
        if call.body is not None:
            content = msgspec.json.encode(call.body)
            headers["Content-Type"] = "application/json"
        return self._http.build_request(
            call.method, call.path, params=call.params, headers=headers, content=content
        )

    def _wait_before_retry(self, reply: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending again, or None: `reply` is the answer.

        A 429 is refused before the request is looked at: any request is sent again. A
        503 may come after the change was made (a connection lost during the commit, a
        load balancer in front of a node that did the work), so a POST, which registers,
        is not: sent again, it could register twice.
        """
        if reply.status_code not in RETRIED_STATUSES or attempt >= self.retries:
            return None
        if reply.status_code == 503 and reply.request.method == "POST":
            return None
        return retry_after(reply, self.max_retry_wait)

    def _adopt(self, owner: OwnerCreated) -> OwnerCreated:
        self.owner_id, self.key = owner.id, owner.key
        return owner


class TasksClient(_Client[httpx.Client]):
    """The API, synchronously: `with TasksClient(url, owner_id, key) as tasks: ...`.

    Every method raises TasksError for an error answer (after the retries of a 429
    or 503), and httpx.TransportError when the server cannot be reached.
    """

    def _open(self, base_url: str, timeout: float) -> httpx.Client:
        return httpx.Client(base_url=base_url, timeout=timeout)

    def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            reply = self._http.send(self._request(call))
            wait = self._wait_before_retry(reply, attempt)
            if wait is None:
                return read_answer(call, reply)
            time.sleep(wait)
            attempt += 1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections; the client cannot be used after."""
        self._http.close()

    def register_owner(self, name: str, registration_token: str | None = None) -> OwnerCreated:
        """Register an owner (`registration_token`: the server's REGISTRATION_TOKEN, when
        registration is closed). Its key is shown this once; this client uses it from now."""
        return self._adopt(self._send(register_owner_call(name, registration_token)))

    def register(
        self,
        http_request: HttpRequest | Mapping[str, Any],
        config: Config | Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> TaskView:
        """Register a task: the request to send, and when and how often (structs, or
        mappings with the wire's camelCase names)."""
        return self._send(register_call(http_request, config, metadata))

    def get(self, task_id: str) -> TaskView:
        return self._send(get_call(task_id))

    def list(self, **options: Unpack[ListOptions]) -> Tasks:
        """One page of tasks (10 unless `limit` says), filtered and ordered by `options`."""
        return self._send(list_call(ListQuery(**options)))

    def iter_tasks(self, **options: Unpack[ListOptions]) -> Iterator[TaskView]:
        """Every task `options` select, a page (`limit`, 100 by default) at a time. The
        next page is read before this one is handed out: deleting tasks as they come
        does not cut the iteration short."""
        query: ListQuery | None = first_page(options)
        page: Tasks = []
        while query is not None:
            page, ahead = self._send(list_call(query)), page
            yield from ahead
            query = next_page(query, page)
        yield from page

    def attempts(self, task_id: str, limit: int = 20, before: int | None = None) -> Attempts:
        """The task's attempts, newest first; `before`: only those numbered below it."""
        return self._send(attempts_call(task_id, limit, before))

    def config(self, task_id: str) -> TaskSpec:
        """The stored request and options, every field, secrets masked (********)."""
        return self._send(config_call(task_id))

    def edit(self, task_id: str, patch: Mapping[str, Any]) -> TaskView:
        """Edit a PAUSED task, or a RUNNING one not in flight: `patch` is a JSON merge
        patch of its registration (None removes a field)."""
        return self._send(edit_call(task_id, patch))

    def pause(self, task_id: str) -> None:
        self._send(action_call(task_id, "pause"))

    def resume(self, task_id: str) -> TaskView:
        return self._send(resume_call(task_id))

    def revoke(self, task_id: str) -> None:
        self._send(action_call(task_id, "revoke"))

    def execute(self, task_id: str) -> None:
        self._send(action_call(task_id, "execute"))

    def delete(self, task_id: str) -> None:
        self._send(action_call(task_id, "delete"))

    def stats(self) -> TaskCounts:
        """Your tasks counted by state."""
        return self._send(stats_call())


class AsyncTasksClient(_Client[httpx.AsyncClient]):
    """The API for asyncio: `async with AsyncTasksClient(url, owner_id, key) as tasks:`.

    Each method does what TasksClient's method of the same name does, awaited;
    `iter_tasks` is an async iterator.
    """

    def _open(self, base_url: str, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            reply = await self._http.send(self._request(call))
            wait = self._wait_before_retry(reply, attempt)
            if wait is None:
                return read_answer(call, reply)
            await asyncio.sleep(wait)
            attempt += 1

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def register_owner(
        self, name: str, registration_token: str | None = None
    ) -> OwnerCreated:
        return self._adopt(await self._send(register_owner_call(name, registration_token)))

    async def register(
        self,
        http_request: HttpRequest | Mapping[str, Any],
        config: Config | Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> TaskView:
        return await self._send(register_call(http_request, config, metadata))

    async def get(self, task_id: str) -> TaskView:
        return await self._send(get_call(task_id))

    async def list(self, **options: Unpack[ListOptions]) -> Tasks:
        return await self._send(list_call(ListQuery(**options)))

    async def iter_tasks(self, **options: Unpack[ListOptions]) -> AsyncIterator[TaskView]:
        query: ListQuery | None = first_page(options)
        page: Tasks = []
        while query is not None:
            page, ahead = await self._send(list_call(query)), page
            for task in ahead:
                yield task
            query = next_page(query, page)
        for task in page:
            yield task

    async def attempts(self, task_id: str, limit: int = 20, before: int | None = None) -> Attempts:
        return await self._send(attempts_call(task_id, limit, before))

    async def config(self, task_id: str) -> TaskSpec:
        return await self._send(config_call(task_id))

    async def edit(self, task_id: str, patch: Mapping[str, Any]) -> TaskView:
        return await self._send(edit_call(task_id, patch))

    async def pause(self, task_id: str) -> None:
        await self._send(action_call(task_id, "pause"))

    async def resume(self, task_id: str) -> TaskView:
        return await self._send(resume_call(task_id))

    async def revoke(self, task_id: str) -> None:
        await self._send(action_call(task_id, "revoke"))

    async def execute(self, task_id: str) -> None:
        await self._send(action_call(task_id, "execute"))

    async def delete(self, task_id: str) -> None:
        await self._send(action_call(task_id, "delete"))

    async def stats(self) -> TaskCounts:
        return await self._send(stats_call())
