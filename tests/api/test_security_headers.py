"""The original's security headers on every response, HSTS only over TLS, and TLS for the API
itself (PATH_TLS_CERT, PATH_TLS_KEY, PATH_TLS_CA) checked by a real TLS client."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from ulid import ULID

from tasks_server.app import create_app
from tests.conftest import Api, ServerThread, make_settings

EXPECTED = {
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "x-xss-protection": "0",
}
HSTS = "max-age=15552000; includeSubDomains"


def assert_secure_headers(reply: httpx.Response) -> None:
    for name, value in EXPECTED.items():
        assert reply.headers.get(name) == value, (reply.request.url, name, reply.headers)
    assert "x-powered-by" not in reply.headers


def test_every_response_carries_the_security_headers_and_no_hsts_over_http(
    start_server: Callable[..., Api],
) -> None:
    api = start_server(max_size_body_request=1024)
    owner = api.owner()
    wrong_key = {**owner.headers, "Authorization": "Bearer " + "x" * 64}
    replies = {
        200: api.http.get(f"/v1/owners/{owner.name}", headers=owner.headers),
        400: api.http.post("/v1/owners/register", json={"name": "Bad Name"}),
        401: api.http.get("/v1/queues", headers=wrong_key),
        403: api.http.get("/v1/queues"),
        404: api.http.get(f"/v1/queues/{ULID()}", headers=owner.headers),
        405: api.http.put("/status"),
        413: api.http.post("/v1/owners/register", content=b"x" * 2048),
    }
    pages = [api.http.get(path) for path in ("/status", "/no/route", "/openapi.json", "/swagger")]
    for status, reply in replies.items():
        assert reply.status_code == status, reply.text
    for reply in [*replies.values(), *pages]:
        assert_secure_headers(reply)
        assert "strict-transport-security" not in reply.headers


def test_uvicorn_does_not_name_itself(api: Api) -> None:
    assert "server" not in api.http.get("/status").headers


# ---- TLS ----


class Tls:
    """A CA with an intermediate, a server certificate it issued, and the files for them."""

    def __init__(self, directory: Path) -> None:
        self.root = trustme.CA()
        intermediate = self.root.create_child_ca()
        leaf = intermediate.issue_cert("127.0.0.1", "localhost")
        self.cert = directory / "cert.pem"
        self.key = directory / "key.pem"
        self.ca = directory / "intermediate.pem"
        leaf.cert_chain_pems[0].write_to_path(str(self.cert))  # the leaf alone
        leaf.private_key_pem.write_to_path(str(self.key))
        intermediate.cert_pem.write_to_path(str(self.ca))

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts the root only: it needs the server to send the intermediate."""
        context = ssl.create_default_context()
        self.root.configure_trust(context)
        return context


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls(tmp_path)


@pytest.fixture
def https_server(tmp_path: Path, tls: Tls) -> Iterator[ServerThread]:
    settings = make_settings(
        tmp_path, path_tls_cert=str(tls.cert), path_tls_key=str(tls.key), path_tls_ca=str(tls.ca)
    )
    server = ServerThread(settings)
    server.start()
    yield server
    server.stop()


def test_api_over_tls_with_hsts(https_server: ServerThread, tls: Tls) -> None:
    base = f"https://127.0.0.1:{https_server.port}"
    with httpx.Client(base_url=base, verify=tls.client_context(), timeout=10) as client:
        reply = client.post("/v1/owners/register", json={"name": "tls-owner"})
        assert reply.status_code == 201, reply.text
        body = reply.json()
        headers = {"Authorization": f"Bearer {body['key']}", "X-Tasks-Owner-Id": body["id"]}
        for reply in (
            client.get("/v1/owners/tls-owner", headers=headers),
            client.get("/v1/queues"),  # an error is a response too
            client.get("/nowhere"),
        ):
            assert_secure_headers(reply)
            assert reply.headers["strict-transport-security"] == HSTS


def test_tls_server_sends_the_intermediate_from_path_tls_ca(
    https_server: ServerThread, tls: Tls
) -> None:
    """The client trusts only the root; the handshake works because the chain is complete."""
    with httpx.Client(verify=tls.client_context(), timeout=10) as client:
        assert client.get(f"https://localhost:{https_server.port}/status").text == "OK"


def test_tls_server_is_not_trusted_by_a_client_that_does_not_know_the_ca(
    https_server: ServerThread,
) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{https_server.port}/status", timeout=10)


def test_plain_http_to_the_tls_port_gets_no_api(https_server: ServerThread) -> None:
    try:
        reply = httpx.get(f"http://127.0.0.1:{https_server.port}/status", timeout=10)
    except httpx.TransportError:
        return  # the server hung up on a client that does not speak TLS
    assert reply.status_code >= 400 and reply.text != "OK"


def test_without_path_tls_ca_a_leaf_only_chain_fails_verification(tmp_path: Path, tls: Tls) -> None:
    """The same files without PATH_TLS_CA: what the test above proves is the setting's work."""
    settings = make_settings(tmp_path, path_tls_cert=str(tls.cert), path_tls_key=str(tls.key))
    server = ServerThread(settings)
    server.start()
    try:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(
                f"https://127.0.0.1:{server.port}/status", verify=tls.client_context(), timeout=10
            )
    finally:
        server.stop()


async def test_an_unexpected_error_is_a_500_with_the_headers_and_no_traceback(
    tmp_path: Path,
) -> None:
    """A bug is answered by Starlette's last-resort handler, outside every middleware."""
    app = create_app(make_settings(tmp_path))

    async def broken(request: Request) -> Response:
        raise RuntimeError("secret detail")

    app.router.routes.append(Route("/broken", broken))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        reply = await client.get("/broken")
    assert reply.status_code == 500
    assert reply.json() == {
        "action": "Do not retry this request more than once",
        "message": "Internal server error",
    }
    assert "secret detail" not in reply.text
    assert_secure_headers(reply)
