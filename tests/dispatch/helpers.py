"""Helpers shared by the dispatch tests: run a task to its end, request fields, auth and cookies."""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.request import parse_http_list, parse_keqv_list

from tests.conftest import Api, Owner
from tests.targets import Target

FINAL = ("SUCCESS", "ERROR")


def run(
    api: Api, owner: Owner, request: dict[str, Any], config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Register a task, wait until it has finished, return its task object."""
    payload: dict[str, Any] = {"httpRequest": request}
    if config is not None:
        payload["config"] = config
    task = api.task(owner, payload)
    return api.wait_state(owner, task["id"], *FINAL)


def b64(content: bytes) -> str:
    return base64.b64encode(content).decode()


def get(url: str, **extra: Any) -> dict[str, Any]:
    """A GET httpRequest, with any other httpRequest fields."""
    return {"url": url, "method": "GET", **extra}


NAME = "tasks.test"


def named_url(target: Target, path: str = "/cb", name: str = NAME) -> str:
    return f"http://{name}:{target.port}{path}"


def pin(target: Target, address: str = "127.0.0.1", host: str = NAME) -> dict[str, Any]:
    return {"resolve": [{"host": host, "port": target.port, "address": [address]}]}


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_params(
    header: str, method: str, user: str, password: str, realm: str, nonce: str
) -> dict[str, str] | None:
    """The fields of a `Digest` credentials header if its response is right (RFC 2617,
    qop=auth), else None."""
    if not header.startswith("Digest "):
        return None
    params: dict[str, str] = parse_keqv_list(parse_http_list(header[len("Digest ") :]))
    ha1 = md5(f"{user}:{realm}:{password}")
    ha2 = md5(f"{method}:{params['uri']}")
    expected = md5(f"{ha1}:{nonce}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}")
    if params.get("username") != user or params.get("response") != expected:
        return None
    return params


def netscape_cookies(*lines: str) -> str:
    return base64.b64encode(("# Netscape HTTP Cookie File\n" + "\n".join(lines)).encode()).decode()
