"""Owner endpoints: register, read, rotate the key, delete."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from ulid import ULID

from tasks_server.api.auth import CHALLENGE, authenticate, check_registration_token
from tasks_server.api.errors import ApiError
from tasks_server.api.http import json_response, read_json
from tasks_server.api.schemas import Done, OwnerCreated, OwnerName, OwnerRegistration, OwnerView
from tasks_server.api.services import services
from tasks_server.model.owners import key_digest, new_key
from tasks_server.model.records import OwnerRow
from tasks_server.model.timing import now_ms
from tasks_server.model.validation import convert
from tasks_server.store.base import Conflict, NotFound

# an answer holding a key is for its caller only: no cache keeps it
_SECRET = {"Cache-Control": "no-store"}


async def register_owner(request: Request) -> Response:
    ctx = services(request)
    check_registration_token(request, ctx.settings.registration_token)
    body = convert(await read_json(request, ctx.settings.max_size_body_request), OwnerRegistration)
    key = new_key()
    now = now_ms()
    owner = OwnerRow(
        id=str(ULID.from_timestamp(now)),  # the id's time is the creation time
        name=body.name,
        key_digest=key_digest(key),
        created_at=now,
        tasks_in_queue=0,
    )
    try:
        await ctx.store.create_owner(owner)
    except Conflict:
        raise ApiError(409, "Owner has already registered") from None
    return json_response(request, OwnerCreated(id=owner.id, key=key), 201, _SECRET)


async def get_owner(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    _check_own_name(request, owner)
    owner = await ctx.store.get_owner(owner.id) or owner  # its queue count as of now
    view = OwnerView(
        id=owner.id,
        name=owner.name,
        created_at=owner.created_at,
        tasks_in_queue=owner.tasks_in_queue,
        tasks_in_queue_limit=ctx.settings.max_tasks_in_queue,
    )
    return json_response(request, view)


async def rotate_owner_key(request: Request) -> Response:
    """A new key, shown once; the key that authenticated this request stops working."""
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    _check_own_name(request, owner)
    key = new_key()
    if not await ctx.store.replace_owner_key(owner.id, owner.key_digest, key_digest(key)):
        # another rotation won the race: the key this request came with is no longer valid
        raise ApiError(401, headers=CHALLENGE)
    return json_response(request, OwnerCreated(id=owner.id, key=key), headers=_SECRET)


async def delete_owner(request: Request) -> Response:
    ctx = services(request)
    owner = await authenticate(request, ctx.store)
    name = _owner_name(request)
    try:
        await ctx.store.delete_owner(owner.id, name)
    except NotFound:
        raise ApiError(404, "Owner not found") from None
    except Conflict as exc:
        raise ApiError(409, str(exc)) from None
    return json_response(request, Done())


def _owner_name(request: Request) -> str:
    return convert({"name": request.path_params["name"]}, OwnerRegistration).name


def _check_own_name(request: Request, owner: OwnerRow) -> None:
    if _owner_name(request) != owner.name:
        raise ApiError(404, "Owner not found")


__all__ = ["OwnerName", "delete_owner", "get_owner", "register_owner", "rotate_owner_key"]
