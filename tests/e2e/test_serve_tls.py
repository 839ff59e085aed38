"""`tasks-server serve` speaks HTTPS when PATH_TLS_CERT and PATH_TLS_KEY are set, checked
by a TLS client that trusts only the test CA; a wrong TLS file is a clear usage error."""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import httpx
import trustme

from tests.served import EXECUTABLE, free_port
from tests.targets import wait_until


def serve_env(tmp_path: Path, port: int, **tls: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH_SQLITE": str(tmp_path / "data" / "tasks.db"),
        "CIPHER_KEY": "e2e-cipher-key",
        "PORT": str(port),
        "LOG": "1",
        "SHUTDOWN_GRACE_MS": "1000",
        **tls,
    }


def test_serve_over_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    port = free_port()
    env = serve_env(
        tmp_path,
        port,
        PATH_TLS_CERT=str(tmp_path / "cert.pem"),
        PATH_TLS_KEY=str(tmp_path / "key.pem"),
    )
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(EXECUTABLE), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    client = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=10)

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return client.get("/status").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=20, interval=0.05)
        reply = client.get("/status")
        assert reply.headers["strict-transport-security"].startswith("max-age=")
        assert client.post("/v1/owners/register", json={"name": "tls-e2e"}).status_code == 201
        assert f"https://127.0.0.1:{port}" in (tmp_path / "serve.log").read_text()
    finally:
        client.close()
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        log.close()


def test_a_missing_tls_file_is_a_usage_error(tmp_path: Path) -> None:
    env = serve_env(tmp_path, free_port(), PATH_TLS_CERT=str(tmp_path / "missing.pem"))
    done = subprocess.run(
        [str(EXECUTABLE), "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2  # click's usage error
    assert "PATH_TLS_CERT" in done.stderr
    assert "Traceback" not in done.stderr
