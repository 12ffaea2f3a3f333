"""The CLI as a user runs it, on a host where systemd is not PID 1 (CI's)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import slotmgr

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def slotmgr_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", "slotmgr", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_version_and_help() -> None:
    out = slotmgr_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"slotmgr {slotmgr.__version__}"
    out = slotmgr_cli("--help")
    assert out.returncode == 0 and "run" in out.stdout and "Usage:" in out.stdout


@pytest.mark.skipif(
    os.path.isdir("/run/systemd/system"), reason="this host runs systemd; the guests test that case"
)
@pytest.mark.parametrize("args", [(), ("run", "true")])
def test_no_systemd_gives_one_line_and_points_to_the_test_bed(args: tuple[str, ...]) -> None:
    out = slotmgr_cli(*args)
    assert out.returncode == 69
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "systemd is not running on this host" in lines[0]
    assert "tests.testbed" in lines[0]
    assert "Traceback" not in out.stderr


def test_usage_errors_exit_64_without_traceback() -> None:
    out = slotmgr_cli("run", "--memory-max", "lots", "true")
    assert out.returncode == 64
    assert out.stderr.strip() == (
        "slotmgr: error: MemoryMax=lots: 'lots' is not a size: use bytes with an optional "
        "K, M, G, T suffix (e.g. 512M, 2G) or 'infinity'"
    )
    out = slotmgr_cli("frobnicate")
    assert out.returncode == 64 and "Traceback" not in out.stderr
