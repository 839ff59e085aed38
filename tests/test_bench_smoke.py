"""The benchmark harness itself runs end to end (tiny counts), so it cannot rot."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is installed by .ci/run")
def test_bench_run_prints_every_scenario() -> None:
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--scale", "1000", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    table = result.stdout
    for scenario in (
        "register",
        "register, cluster of 2",
        "dispatch burst",
        "dispatch burst, cluster of 2",
        "burst start",
        "1 node side by side",
        "3 nodes side by side",
        "burst beside history",
        "timing",
        "retry storm",
        "scale",
        "disk",
        "start-up",
        "list",
    ):
        assert f"| {scenario} |" in table, table
    assert "Target: " in table


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is installed by .ci/run")
def test_bench_runs_on_postgresql() -> None:
    result = subprocess.run(
        [
            str(ROOT / "bench" / "run"),
            "--database",
            "postgres",
            "--scale",
            "1000",
            "--runs",
            "1",
            *("--only", "register", "--only", "burst", "--only", "nodes"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Database: postgres." in result.stdout
    for scenario in ("register", "dispatch burst", "2 nodes side by side"):
        assert f"| {scenario} |" in result.stdout, result.stdout
