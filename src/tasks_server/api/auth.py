"""Owner keys and request authentication (Bearer key + X-Tasks-Owner-Id), and the server's
own tokens (REGISTRATION_TOKEN, METRICS_TOKEN, ADMIN_TOKEN)."""

from __future__ import annotations

import hmac
import re

from starlette.requests import Request

from tasks_server.api.errors import ApiError
from tasks_server.api.schemas import OWNER_NAME
from tasks_server.model.owners import key_digest
from tasks_server.model.records import OwnerRow
from tasks_server.store.base import Store

_BEARER = re.compile(r"^Bearer ([A-Za-z0-9]{64})\Z")
# RFC 6750 b64token: what a REGISTRATION_TOKEN may be made of
_BEARER_TOKEN = re.compile(r"^Bearer ([A-Za-z0-9\-._~+/]+=*)\Z")
# RFC 9110: a 401 says how to authenticate
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tasks-server"'}
ULID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}\Z", re.IGNORECASE)
_OWNER_NAME = re.compile(OWNER_NAME)

# what is wrong with the shape of the credentials (the headers alone: nothing of any owner)
MISSING_KEY = (
    "The Authorization header is missing or empty: send `Authorization: Bearer <key>` with the"
    " owner's key"
)
MALFORMED_KEY = (
    "The Authorization header must be `Bearer <key>`, the key being 64 letters and digits"
)
MISSING_OWNER_ID = (
    "The X-Tasks-Owner-Id header is missing or empty: send the owner's id (returned at"
    " registration)"
)
MALFORMED_OWNER_ID = "The X-Tasks-Owner-Id header must be the owner's id: a 26-character ULID"
OWNER_NAME_AS_ID = (
    "The X-Tasks-Owner-Id header takes the owner's id (the 26-character ULID returned at"
    " registration), not its name"
)


async def authenticate(request: Request, store: Store) -> OwnerRow:
    """The calling owner.

    403 naming each header that is missing or malformed; 403 for an unknown owner and 401 for
    a wrong key, those two in the original's words (one says no more than the other did).
    """
    authorization = request.headers.get("authorization", "")
    owner_id = request.headers.get("x-tasks-owner-id", "")
    bearer = _BEARER.match(authorization)
    if bearer is None or not ULID_PATTERN.match(owner_id):
        raise ApiError(403, _shape_problems(authorization, owner_id))
    owner = await store.get_owner(owner_id.upper(), cached=True)
    if owner is None:
        raise ApiError(403)
    if not hmac.compare_digest(key_digest(bearer.group(1)), owner.key_digest):
        raise ApiError(401, headers=CHALLENGE)
    return owner


def _shape_problems(authorization: str, owner_id: str) -> str:
    problems = []
    if not authorization:
        problems.append(MISSING_KEY)
    elif _BEARER.match(authorization) is None:
        problems.append(MALFORMED_KEY)
    if not owner_id:
        problems.append(MISSING_OWNER_ID)
    elif not ULID_PATTERN.match(owner_id):
        # a ULID-long value is a mistyped id; anything else shaped like a name is a name
        named = len(owner_id) != 26 and _OWNER_NAME.match(owner_id)
        problems.append(OWNER_NAME_AS_ID if named else MALFORMED_OWNER_ID)
    return ". ".join(problems)


def bearer_token(request: Request, setting: str, status: int) -> str:
    """The request's `Authorization: Bearer <token>`, the token being the server's `setting`
    (REGISTRATION_TOKEN...); else ApiError(status) saying whether the header is missing or
    malformed."""
    authorization = request.headers.get("authorization", "")
    found = _BEARER_TOKEN.match(authorization)
    if found is not None:
        return found.group(1)
    if authorization:
        message = f"The Authorization header must be `Bearer <{setting}>`"
    else:
        message = f"The Authorization header is missing or empty: send `Bearer <{setting}>`"
    raise ApiError(status, message, CHALLENGE if status == 401 else None)


def check_token(given: str, token: str, setting: str) -> None:
    """401 unless `given` is `token`. Digests are compared, so the time taken says nothing
    about the token's length or its first differing character."""
    if not hmac.compare_digest(key_digest(given), key_digest(token)):
        raise ApiError(401, f"The {setting} in the Authorization header is not valid", CHALLENGE)


def check_registration_token(request: Request, token: str) -> None:
    """Pass when `token` is empty (registration is open) or the request carries it.

    403 for a missing or malformed Authorization header, 401 for a wrong token.
    """
    if token:
        check_token(bearer_token(request, "REGISTRATION_TOKEN", 403), token, "REGISTRATION_TOKEN")
