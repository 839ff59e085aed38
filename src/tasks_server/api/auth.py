"""Owner keys and request authentication (Bearer key + X-Tasks-Owner-Id)."""

from __future__ import annotations

import hmac
import re

from starlette.requests import Request

from tasks_server.api.errors import ApiError
from tasks_server.model.owners import key_digest
from tasks_server.model.records import OwnerRow
from tasks_server.store.base import Store

_BEARER = re.compile(r"^Bearer ([A-Za-z0-9]{64})\Z")
# RFC 6750 b64token: what a REGISTRATION_TOKEN may be made of
_BEARER_TOKEN = re.compile(r"^Bearer ([A-Za-z0-9\-._~+/]+=*)\Z")
# RFC 9110: a 401 says how to authenticate
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tasks-server"'}
ULID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}\Z", re.IGNORECASE)


async def authenticate(request: Request, store: Store) -> OwnerRow:
    """The calling owner; 403 for missing or malformed credentials, 401 for a wrong key."""
    bearer = _BEARER.match(request.headers.get("authorization", ""))
    owner_id = request.headers.get("x-tasks-owner-id", "")
    if bearer is None or not ULID_PATTERN.match(owner_id):
        raise ApiError(403)
    owner = await store.get_owner(owner_id.upper(), cached=True)
    if owner is None:
        raise ApiError(403)
    if not hmac.compare_digest(key_digest(bearer.group(1)), owner.key_digest):
        raise ApiError(401, headers=CHALLENGE)
    return owner


def bearer_token(request: Request) -> str | None:
    """The request's `Authorization: Bearer <token>`, if it has one."""
    found = _BEARER_TOKEN.match(request.headers.get("authorization", ""))
    return found.group(1) if found else None


def check_registration_token(request: Request, token: str) -> None:
    """Pass when `token` is empty (registration is open) or the request carries it.

    403 for a missing or malformed Authorization header, 401 for a wrong token.
    Digests are compared, so the time taken says nothing about the token's
    length or its first differing character.
    """
    if not token:
        return
    bearer = _BEARER_TOKEN.match(request.headers.get("authorization", ""))
    if bearer is None:
        raise ApiError(403)
    if not hmac.compare_digest(key_digest(bearer.group(1)), key_digest(token)):
        raise ApiError(401, headers=CHALLENGE)
