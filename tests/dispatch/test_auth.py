"""AWS SigV4 (verified by the target itself) and NTLM, against real local targets."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from tasks_server.dispatch import capabilities
from tests.conftest import Api, Owner
from tests.dispatch.helpers import run
from tests.targets import Arrival, Reply, Target

KEY, SECRET, REGION = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "eu-west-3"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_signature(arrival: Arrival, secret: str) -> tuple[dict[str, str], str]:
    """(the Authorization header's parts, the signature AWS would compute for this request).

    AWS Signature Version 4, written from its specification: canonical request,
    string to sign, derived signing key.
    """
    algorithm, _, rest = (arrival.header("authorization") or "").partition(" ")
    parts = dict(item.strip().split("=", 1) for item in rest.split(","))
    parts["Algorithm"] = algorithm
    _key, date, region, service, terminal = parts["Credential"].split("/")
    signed = parts["SignedHeaders"].split(";")
    path, _, query = arrival.path.partition("?")
    canonical = "\n".join(
        [
            arrival.method,
            path,
            "&".join(sorted(query.split("&"))) if query else "",
            "".join(f"{name}:{(arrival.header(name) or '').strip()}\n" for name in signed),
            ";".join(signed),
            hashlib.sha256(arrival.body).hexdigest(),
        ]
    )
    scope = f"{date}/{region}/{service}/{terminal}"
    to_sign = "\n".join(
        [
            algorithm,
            arrival.header("x-amz-date") or "",
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = _hmac(f"AWS4{secret}".encode(), date)
    for step in (region, service, terminal):
        key = _hmac(key, step)
    return parts, hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def sigv4_responder(secret: str) -> Any:
    def respond(arrival: Arrival) -> Reply:
        parts, expected = sigv4_signature(arrival, secret)
        if hmac.compare_digest(parts.get("Signature", ""), expected):
            return Reply(200, b"signature ok")
        return Reply(403, b"SignatureDoesNotMatch")

    return respond


def sigv4_request(url: str, secret: str) -> dict[str, Any]:
    return {
        "url": url,
        "method": "POST",
        "query": {"b": "2", "a": "1"},
        "headers": {"X-Custom": "signed too"},
        "data": {"object": "payload"},
        "authAwsSigv4": {
            "provider1": "aws",
            "provider2": "amz",
            "region": REGION,
            "service": "s3",
            "key": KEY,
            "secret": secret,
        },
    }


def test_aws_sigv4_signature_is_verified_by_the_target(
    api: Api, owner: Owner, target: Target
) -> None:
    target.respond("/bucket/object", sigv4_responder(SECRET))
    done = run(api, owner, sigv4_request(target.url("/bucket/object"), SECRET))
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/bucket/object")
    parts, _ = sigv4_signature(arrival, SECRET)
    assert parts["Algorithm"] == "AWS4-HMAC-SHA256"
    key, date, region, service, terminal = parts["Credential"].split("/")
    assert (key, region, service, terminal) == (KEY, REGION, "s3", "aws4_request")
    assert date == (arrival.header("x-amz-date") or "")[:8]
    assert {"host", "x-amz-date", "x-custom"} <= set(parts["SignedHeaders"].split(";"))
    assert json.loads(arrival.body) == {"object": "payload"}


def test_aws_sigv4_with_the_wrong_secret_is_refused(api: Api, owner: Owner, target: Target) -> None:
    target.respond("/bucket/object", sigv4_responder(SECRET))
    done = run(api, owner, sigv4_request(target.url("/bucket/object"), "not-the-secret"))
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 403


@pytest.mark.parametrize(
    ("where", "field"), [("httpRequest", "authNtlm"), ("config", "proxyAuthNtlm")]
)
def test_ntlm(api: Api, owner: Owner, target: Target, where: str, field: str) -> None:
    """This server's libcurl is built without NTLM: refused, saying so (README)."""
    target.script("/ntlm", always=Reply(401, b"", {"WWW-Authenticate": "NTLM"}))
    payload: dict[str, Any] = {"httpRequest": {"url": target.url("/ntlm"), "method": "GET"}}
    credentials = {"username": "DOMAIN\\user", "password": "pw"}
    payload.setdefault(where, {})[field] = credentials
    if where == "config":
        payload["config"]["proxy"] = {"protocol": "http", "host": "127.0.0.1", "port": target.port}
    reply = api.register(owner, payload)
    if capabilities.NTLM:
        assert reply.status_code == 201, reply.text
        header = "proxy-authorization" if where == "config" else "authorization"
        first = target.wait_for(1)[0]
        assert (first.header(header) or "").startswith("NTLM "), first.headers
        return
    assert reply.status_code == 400, reply.text
    message = reply.json()["fields"][f"{where}.{field}"]
    assert "NTLM is not supported" in message
