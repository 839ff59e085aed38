"""TLS options through libcurl, each observed by a real HTTPS target on 127.0.0.1.

ca (PEM bundles, DER), client certificates in every form, file paths behind
ALLOW_FILE_PATHS, certStatus, the TLS version range, TLS session reuse, HTTP/3.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tasks_server.dispatch import capabilities
from tests.conftest import Api, Owner
from tests.dispatch.helpers import b64, get, run
from tests.targets import H3Target, Reply, Target, tls_context

CLIENT_NAME = "tasks-client"


def ca_pem(ca: trustme.CA) -> bytes:
    return ca.cert_pem.bytes()


# ---- ca ----


def test_ca_bundle_with_several_certificates_is_trusted(
    api: Api, owner: Owner, ca: trustme.CA, https: Target
) -> None:
    bundle = ca_pem(trustme.CA()) + ca_pem(ca) + ca_pem(trustme.CA())
    done = run(api, owner, get(https.url("/ca")), {"ca": b64(bundle)})
    assert done["state"] == "SUCCESS", done
    (arrival,) = https.arrivals_at("/ca")
    assert arrival.header("x-tasks-queue-id") == done["id"]


def test_ca_as_der_is_trusted(api: Api, owner: Owner, ca: trustme.CA, https: Target) -> None:
    der = ssl.PEM_cert_to_DER_cert(ca_pem(ca).decode())
    done = run(api, owner, get(https.url("/der")), {"ca": b64(der)})
    assert done["state"] == "SUCCESS", done
    assert len(https.arrivals_at("/der")) == 1


def test_a_ca_that_did_not_issue_the_certificate_fails_and_is_retried(
    api: Api, owner: Owner, https: Target
) -> None:
    config = {"ca": b64(ca_pem(trustme.CA())), "retry": 1, "retryInterval": 50}
    done = run(api, owner, get(https.url("/ca")), config)
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0
    assert "certificate" in done["error"].lower(), done["error"]
    assert done["attempts"] == 2
    assert https.arrivals == []


# ---- client certificates ----


@pytest.fixture(scope="module")
def client_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("client.tasks.test", common_name=CLIENT_NAME)


@pytest.fixture
def mutual_tls(ca: trustme.CA) -> Iterator[Target]:
    """An HTTPS target that requires a client certificate issued by `ca`."""
    context = tls_context(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_pem(ca).decode())
    server = Target(ssl_context=context)
    yield server
    server.close()


def pem_parts(leaf: trustme.LeafCert) -> tuple[bytes, bytes]:
    return leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()


def separate_pem(leaf: trustme.LeafCert) -> dict[str, Any]:
    cert, key = pem_parts(leaf)
    return {"cert": {"value": b64(cert)}, "key": b64(key)}


def combined_pem(leaf: trustme.LeafCert) -> dict[str, Any]:
    cert, key = pem_parts(leaf)
    return {"cert": {"value": b64(cert + key)}, "certType": "pem"}


def der_pair(leaf: trustme.LeafCert) -> dict[str, Any]:
    cert_pem, key_pem = pem_parts(leaf)
    cert = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    key = serialization.load_pem_private_key(key_pem, None).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {"cert": {"value": b64(cert)}, "certType": "DER", "key": b64(key), "keyType": "DER"}


def encrypted_key(leaf: trustme.LeafCert) -> dict[str, Any]:
    cert, key_pem = pem_parts(leaf)
    key = serialization.load_pem_private_key(key_pem, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b'key pass: "quoted"'),
    )
    return {"cert": {"value": b64(cert), "password": 'key pass: "quoted"'}, "key": b64(key)}


def p12_bundle(leaf: trustme.LeafCert) -> dict[str, Any]:
    cert_pem, key_pem = pem_parts(leaf)
    bundle = pkcs12.serialize_key_and_certificates(
        b"tasks",
        serialization.load_pem_private_key(key_pem, None),  # type: ignore[arg-type]
        x509.load_pem_x509_certificate(cert_pem),
        None,
        serialization.BestAvailableEncryption(b"p12-secret"),
    )
    return {"cert": {"value": b64(bundle), "password": "p12-secret"}, "certType": "P12"}


CLIENT_FORMS: list[Callable[[trustme.LeafCert], dict[str, Any]]] = [
    separate_pem,
    combined_pem,
    der_pair,
    encrypted_key,
    p12_bundle,
]


@pytest.mark.parametrize("form", CLIENT_FORMS, ids=[f.__name__ for f in CLIENT_FORMS])
def test_target_requiring_a_client_certificate_sees_its_subject(
    api: Api,
    owner: Owner,
    ca: trustme.CA,
    client_cert: trustme.LeafCert,
    mutual_tls: Target,
    form: Callable[[trustme.LeafCert], dict[str, Any]],
) -> None:
    config = {"ca": b64(ca_pem(ca)), **form(client_cert)}
    done = run(api, owner, get(mutual_tls.url("/mtls")), config)
    assert done["state"] == "SUCCESS", done
    (arrival,) = mutual_tls.arrivals_at("/mtls")
    assert arrival.peer_subject() == CLIENT_NAME


def test_without_a_client_certificate_the_handshake_fails(
    api: Api, owner: Owner, ca: trustme.CA, mutual_tls: Target
) -> None:
    done = run(api, owner, get(mutual_tls.url("/mtls")), {"ca": b64(ca_pem(ca))})
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0
    assert done["error"]
    assert mutual_tls.arrivals == []


def test_a_wrong_certificate_password_fails(
    api: Api, owner: Owner, ca: trustme.CA, client_cert: trustme.LeafCert, mutual_tls: Target
) -> None:
    config = {"ca": b64(ca_pem(ca)), **p12_bundle(client_cert)}
    config["cert"]["password"] = "not-the-password"
    done = run(api, owner, get(mutual_tls.url("/mtls")), config)
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0
    assert done["error"]
    assert mutual_tls.arrivals == []


# ---- server file paths: only with ALLOW_FILE_PATHS=1 ----


@pytest.fixture
def pem_files(tmp_path: Path, ca: trustme.CA, client_cert: trustme.LeafCert) -> dict[str, str]:
    cert, key = pem_parts(client_cert)
    files = {"ca": ca_pem(ca), "cert": cert, "key": key}
    for name, content in files.items():
        (tmp_path / f"{name}.pem").write_bytes(content)
    return {name: str(tmp_path / f"{name}.pem") for name in files}


def test_file_paths_are_refused_by_default(
    api: Api, owner: Owner, pem_files: dict[str, str]
) -> None:
    config = {
        "ca": pem_files["ca"],
        "cert": {"value": pem_files["cert"]},
        "key": pem_files["key"],
    }
    reply = api.register(owner, {"httpRequest": get("http://127.0.0.1:9/cb"), "config": config})
    assert reply.status_code == 400, reply.text
    fields = reply.json()["fields"]
    assert set(fields) == {"config.ca", "config.cert.value", "config.key"}
    assert all("ALLOW_FILE_PATHS=1" in message for message in fields.values()), fields


def test_file_paths_with_allow_file_paths(
    start_server: Callable[..., Api],
    ca: trustme.CA,
    mutual_tls: Target,
    pem_files: dict[str, str],
) -> None:
    api = start_server(allow_file_paths=True)
    owner = api.owner()
    config = {
        "ca": pem_files["ca"],
        "cert": {"value": pem_files["cert"]},
        "key": pem_files["key"],
    }
    done = run(api, owner, get(mutual_tls.url("/files")), config)
    assert done["state"] == "SUCCESS", done
    (arrival,) = mutual_tls.arrivals_at("/files")
    assert arrival.peer_subject() == CLIENT_NAME


def test_a_missing_file_is_named_with_allow_file_paths(
    start_server: Callable[..., Api], tmp_path: Path
) -> None:
    api = start_server(allow_file_paths=True)
    owner = api.owner()
    missing = str(tmp_path / "nowhere.pem")
    payload = {"httpRequest": get("http://127.0.0.1:9/cb"), "config": {"ca": missing}}
    reply = api.register(owner, payload)
    assert reply.status_code == 400, reply.text
    assert reply.json()["fields"] == {"config.ca": "CA file does not exist"}


# ---- certStatus ----


def test_cert_status_fails_without_an_ocsp_stapled_response(
    api: Api, owner: Owner, ca: trustme.CA, https: Target
) -> None:
    config = {"ca": b64(ca_pem(ca)), "certStatus": True}
    done = run(api, owner, get(https.url("/ocsp")), config)
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0
    assert "ocsp" in done["error"].lower(), done["error"]
    assert https.arrivals == []


# ---- TLS versions ----


def bounded_target(ca: trustme.CA, low: ssl.TLSVersion, high: ssl.TLSVersion) -> Target:
    context = tls_context(ca)
    context.minimum_version, context.maximum_version = low, high
    return Target(ssl_context=context)


@pytest.mark.parametrize(
    ("server", "config", "state"),
    [
        ("1.3 only", {"tlsMaxVersion": "1.2"}, "ERROR"),
        ("1.3 only", {"tlsVersion": "1.3"}, "SUCCESS"),
        ("1.2 only", {"tlsVersion": "1.3"}, "ERROR"),
        ("1.2 only", {"tlsVersion": "1.2", "tlsMaxVersion": "1.2"}, "SUCCESS"),
    ],
)
def test_tls_version_range(
    api: Api, owner: Owner, ca: trustme.CA, server: str, config: dict[str, str], state: str
) -> None:
    tls12, tls13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    bounds = (tls13, tls13) if server == "1.3 only" else (tls12, tls12)
    target = bounded_target(ca, *bounds)
    try:
        done = run(api, owner, get(target.url("/v")), {"ca": b64(ca_pem(ca)), **config})
        assert done["state"] == state, done
        assert len(target.arrivals) == (1 if state == "SUCCESS" else 0)
        if state == "ERROR":
            assert done["statusCode"] == 0
            assert done["error"]
    finally:
        target.close()


def test_tls_max_below_min_is_400(api: Api, owner: Owner) -> None:
    config = {"tlsVersion": "1.3", "tlsMaxVersion": "1.2"}
    reply = api.register(owner, {"httpRequest": get("https://127.0.0.1:9/cb"), "config": config})
    assert reply.status_code == 400, reply.text
    assert set(reply.json()["fields"]) == {"config.tlsMaxVersion"}


# ---- sessionId: TLS session reuse ----


@pytest.mark.parametrize("session_id", [True, False])
def test_session_id_cache(
    api: Api, owner: Owner, ca: trustme.CA, https: Target, session_id: bool
) -> None:
    # keepAliveDuration 0: a new connection (and handshake) for each task
    config = {"ca": b64(ca_pem(ca)), "sessionId": session_id, "keepAliveDuration": 0}
    for path in ("/first", "/second"):
        done = run(api, owner, get(https.url(path)), config)
        assert done["state"] == "SUCCESS", done
    (first,) = https.arrivals_at("/first")
    (second,) = https.arrivals_at("/second")
    assert first.client_port != second.client_port  # two connections, two handshakes
    assert first.session_reused is False
    assert second.session_reused is session_id


# ---- HTTP/3 ----


@pytest.mark.skipif(not capabilities.HTTP3, reason="this libcurl has no HTTP/3")
def test_http3_reaches_an_http3_only_target(api: Api, owner: Owner, ca: trustme.CA) -> None:
    server = H3Target(ca)
    try:
        server.script("/h3", Reply(201, b"over quic"))
        request = get(server.url("/h3"), headers={"X-Over": "quic"})
        done = run(api, owner, request, {"httpVersion": "3", "ca": b64(ca_pem(ca))})
        assert done["state"] == "SUCCESS", done
        assert base64.b64decode(done["response"]) == b"over quic"
        (arrival,) = server.arrivals_at("/h3")
        assert arrival.protocol == "HTTP/3"
        assert arrival.header("x-over") == "quic"
        assert arrival.header("x-tasks-queue-id") == done["id"]
    finally:
        server.close()


def test_http3_falls_back_to_tcp_or_is_refused_without_it(
    api: Api, owner: Owner, ca: trustme.CA, https: Target
) -> None:
    config = {"httpVersion": "3", "ca": b64(ca_pem(ca))}
    if not capabilities.HTTP3:
        reply = api.register(owner, {"httpRequest": get(https.url("/h3")), "config": config})
        assert reply.status_code == 400, reply.text
        assert "HTTP/3" in reply.json()["fields"]["config.httpVersion"]
        return
    # no QUIC listener here: libcurl falls back to TCP, as curl --http3 does
    done = run(api, owner, get(https.url("/h3")), config)
    assert done["state"] == "SUCCESS", done
    (arrival,) = https.arrivals_at("/h3")
    assert arrival.protocol == "HTTP/1.1"
