"""The RPM's files installed in the guest run a job under the installed slice
(issue: RPM packaging). The RPM is built on the host by the 'rpm' stage of
the test command, before the guests boot."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, systemctl_show, unit_active, wait_until


def built_rpm() -> str:
    folder = REPO / "rpmbuild" / "RPMS" / "noarch"
    rpms = sorted(folder.glob("slotmgr-[0-9]*.noarch.rpm")) if folder.is_dir() else []
    assert rpms, f"no RPM in {folder}: run `make rpm` on the host first (scripts/check does)"
    return str(rpms[-1])


@pytest.fixture(scope="module")
def installed() -> dict[str, str]:
    """The RPM installed into the guest; the environment that runs the
    installed command, not the source tree (no PYTHONPATH)."""
    check = subprocess.run(
        ["sh", str(REPO / "tests/packaging/guest_install_check.sh"), built_rpm()],
        capture_output=True,
        text=True,
        env=dict(os.environ, SLOTMGR_GUEST="1"),
    )
    assert check.returncode == 0, check.stderr
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_installed_slotmgr_runs_a_job_in_the_installed_slice(
    unique: str, installed: dict[str, str]
) -> None:
    fragment = systemctl_show("slotmgr.slice", "FragmentPath")["FragmentPath"]
    # Debian 12 names it through the merged-/usr /lib symlink: the same file.
    assert os.path.realpath(fragment) == "/usr/lib/systemd/system/slotmgr.slice"
    env = installed
    version = subprocess.run(
        ["/usr/bin/slotmgr", "--version"], capture_output=True, text=True, env=env, cwd="/"
    )
    assert version.returncode == 0 and version.stdout.startswith("slotmgr ")
    unit = f"slotmgr-{unique}.service"
    job = subprocess.Popen(
        ["/usr/bin/slotmgr", "run", "--job-id", unique, "--", "sleep", "600"],
        env=env,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: unit_active(unit), what=unit)
        status = subprocess.run(
            ["systemctl", "status", "--no-pager", "slotmgr.slice"], capture_output=True, text=True
        ).stdout
        assert "lib/systemd/system/slotmgr.slice" in status
        assert unit in status
        exec_start = systemctl_show(unit, "ExecStart")["ExecStart"]
        # The installed package's init: pidshim where a Landlock scope is had, else
        # the catatonit the package requires.
        assert (
            "site-packages/slotmgr/pidshim.py" in exec_start
            or "catatonit -- /usr/bin/env --default-signal" in exec_start
        ), exec_start
        # The stop hook is the installed shell script (package data of the wheel).
        # (One ExecStopPost= line per command: the scratch directory's removal too.)
        stop_post = subprocess.run(
            ["systemctl", "show", unit, "--property=ExecStopPost"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "site-packages/slotmgr/stophook.sh" in stop_post, stop_post
    finally:
        job.send_signal(signal.SIGTERM)
        _out, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
    history = subprocess.run(
        ["/usr/bin/slotmgr", "history", "--json"], capture_output=True, text=True, env=env, cwd="/"
    )
    assert history.returncode == 0, history.stderr
    runs = [r for r in json.loads(history.stdout) if r["job_id"] == unique]
    assert [(r["result"], r["exit_status"]) for r in runs] == [("cancelled", 143)]


def test_installed_ingest_timer_is_enabled_and_stores_what_a_dead_launcher_left(
    unique: str, installed: dict[str, str]
) -> None:
    # What %post does on a first install (the crude install runs no scriptlets).
    preset = subprocess.run(
        ["systemctl", "preset", "slotmgr-ingest.timer"], capture_output=True, text=True
    )
    assert preset.returncode == 0, preset.stderr
    enabled = subprocess.run(
        ["systemctl", "is-enabled", "slotmgr-ingest.timer"], capture_output=True, text=True
    )
    assert enabled.stdout.strip() == "enabled"
    # A launcher killed while its job runs: the job, bound to it, is stopped, and
    # its record waits in the spool.
    unit = f"slotmgr-{unique}.service"
    job = subprocess.Popen(
        ["/usr/bin/slotmgr", "run", "--job-id", unique, "--", "sleep", "3"],
        env=installed,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: unit_active(unit), what=unit)
    job.kill()
    job.wait()
    spool = "/var/lib/slotmgr/history.db.spool"
    wait_until(
        lambda: any(n.endswith(".end") for n in os.listdir(spool)),
        timeout=60,
        what="the stop hook's file",
    )
    # The timer's service stores it, with the installed command.
    ingest = subprocess.run(
        ["systemctl", "start", "slotmgr-ingest.service"], capture_output=True, text=True
    )
    assert ingest.returncode == 0, ingest.stderr
    shown = systemctl_show("slotmgr-ingest.service", "Result", "ExecMainStatus", "ConditionResult")
    assert shown == {"Result": "success", "ExecMainStatus": "0", "ConditionResult": "yes"}
    # Every pair with an end is stored, and nothing of this job is left. (A
    # lone launch file of another test's job, whose unit never ran, is no
    # record and stays.)
    left = os.listdir(spool)
    assert [n for n in left if n.endswith(".end")] == []
    assert [n for n in left if n.endswith(".start") and _launch_of(spool, n) == unique] == []
    with sqlite3.connect("file:/var/lib/slotmgr/history.db?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT result FROM jobs WHERE job_id = ?", (unique,)).fetchall()
    assert rows == [("cancelled",)]


def _launch_of(spool: str, name: str) -> str:
    """The job id a launch file names ('' if unreadable)."""
    try:
        return str(json.loads(Path(spool, name).read_text()).get("job_id", ""))
    except (OSError, ValueError):
        return ""
