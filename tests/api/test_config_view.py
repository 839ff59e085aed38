"""GET /v1/queues/:id/config with every curl option set: each shown as stored, secrets masked."""

from __future__ import annotations

import base64
import copy
from typing import Any

from tasks_server.dispatch import capabilities
from tests.conftest import Api, Owner

MASK = "********"
HOUR = 3_600_000
PEM_CERT = base64.b64encode(
    b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
).decode()
PEM_CERT_AND_KEY = base64.b64encode(
    b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
).decode()
P12 = base64.b64encode(b"\x30\x82\x0a\x0bnot-really-pkcs12").decode()
HSTS = base64.b64encode(b'tasks.test "20991231 00:00:00"\n').decode()
COOKIE_FILE = base64.b64encode(b"tasks.test\tFALSE\t/\tFALSE\t0\tsid\tS3CR3T\n").decode()


def every_option() -> dict[str, Any]:
    auth = {"username": "user", "password": "pw-S3CR3T"}
    payload: dict[str, Any] = {
        "httpRequest": {
            "url": "https://tasks.test:8443/cb",
            "method": "PUT",
            "query": {"page": "1", "api_key": "query-S3CR3T"},
            "headers": {"X-Visible": "yes", "Authorization": "Bearer header-S3CR3T"},
            "data": "raw body",
            "cookie": COOKIE_FILE,
            "authBasic": auth,
            "authDigest": auth,
            "authAwsSigv4": {
                "provider1": "aws",
                "provider2": "amz",
                "region": "eu-west-3",
                "service": "s3",
                "key": "AKID-S3CR3T",
                "secret": "aws-S3CR3T",
            },
            "transport": "curl",
        },
        "config": {
            "executionDelay": HOUR,
            "httpVersion": "2",
            "ipVersion": 6,
            "refererUrl": "https://from.example/page",
            "keepAliveDuration": 0,
            "hsts": HSTS,
            "sessionId": False,
            "insecure": True,
            "location": True,
            "locationTrusted": auth,
            "redirectAttempts": 3,
            "proto": "HTTPS",
            "protoRedirect": "https",
            "dnsServer": ["127.0.0.1:5353", "[::1]:53", "9.9.9.9"],
            "resolve": [{"host": "tasks.test", "port": 8443, "address": ["127.0.0.1", "::1"]}],
            "dohUrl": "https://doh.example/dns-query",
            "dohInsecure": True,
            "tlsVersion": "1.2",
            "tlsMaxVersion": "1.3",
            "ca": PEM_CERT,
            "cert": {"value": PEM_CERT, "password": "cert-S3CR3T"},
            "certType": "pem",
            "certStatus": True,
            "key": PEM_CERT_AND_KEY,
            "keyType": "PEM",
            "proxy": {"protocol": "HTTPS", "host": "proxy.example", "port": 3128},
            "proxyHeaders": {"X-Via": "p", "Proxy-Authorization": "Basic proxy-S3CR3T"},
            "proxyInsecure": True,
            "proxyHttpVersion": "1.0",
            "proxyAuthBasic": auth,
            "proxyAuthDigest": auth,
            "haProxyProtocol": True,
            "haProxyClientIp": "203.0.113.7",
        },
    }
    if capabilities.NTLM:
        payload["httpRequest"]["authNtlm"] = auth
        payload["config"]["proxyAuthNtlm"] = auth
    return payload


def config_view(api: Api, owner: Owner, payload: dict[str, Any]) -> dict[str, Any]:
    task = api.task(owner, payload)
    reply = api.http.get(f"/v1/queues/{task['id']}/config", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    assert "S3CR3T" not in reply.text
    view: dict[str, Any] = reply.json()
    return view


def test_every_option_is_shown_as_stored_with_secrets_masked(api: Api, owner: Owner) -> None:
    payload = every_option()
    view = config_view(api, owner, payload)
    expected = copy.deepcopy(payload)
    request, config = expected["httpRequest"], expected["config"]
    # canonical forms
    config["proto"] = "https"
    config["certType"] = "PEM"
    config["proxy"]["protocol"] = "https"
    # secrets
    request["query"]["api_key"] = MASK
    request["headers"]["Authorization"] = MASK
    request["cookie"] = MASK
    for name in ("authBasic", "authDigest", "authNtlm"):
        if name in request:
            request[name]["password"] = MASK
    request["authAwsSigv4"]["key"] = MASK
    request["authAwsSigv4"]["secret"] = MASK
    config["cert"]["password"] = MASK
    config["key"] = MASK
    config["proxyHeaders"]["Proxy-Authorization"] = MASK
    for name in ("locationTrusted", "proxyAuthBasic", "proxyAuthDigest", "proxyAuthNtlm"):
        if name in config:
            config[name]["password"] = MASK
    for part in ("httpRequest", "config"):
        for name, value in expected[part].items():
            assert view[part][name] == value, (part, name)


def test_a_certificate_that_holds_a_private_key_is_masked(api: Api, owner: Owner) -> None:
    base = {"httpRequest": {"url": "https://tasks.test/cb", "method": "GET"}}
    cases = [
        ({"cert": {"value": PEM_CERT}}, PEM_CERT),
        ({"cert": {"value": PEM_CERT, "password": "pw"}, "certType": "DER"}, PEM_CERT),
        ({"cert": {"value": PEM_CERT_AND_KEY}}, MASK),
        ({"cert": {"value": P12, "password": "pw"}, "certType": "P12"}, MASK),
        ({"cert": {"value": P12}}, MASK),  # binary, not declared DER: may be PKCS#12
    ]
    for config, shown in cases:
        view = config_view(api, owner, {**base, "config": {"executionDelay": HOUR, **config}})
        assert view["config"]["cert"]["value"] == shown, config
