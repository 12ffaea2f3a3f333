"""What a batch system needs of `slotmgr run`, without a batch system (issue 13):
the job's life bound to its launcher's, the launcher's cgroup limits, the
caller's environment, the batch job's id.

A batch system is played here by what it does on the node: it runs the
launcher in a cgroup of its own (a transient service made with systemd-run,
with the limits a batch job would have), kills that cgroup, or SIGKILLs the
launcher. The real batch systems are tests/batch's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slotmgr.history.accounting import LAUNCHER_GONE
from slotmgr.naming import launcher_unit_for

from .conftest import (
    REPO,
    processes_with_marker,
    run_cli,
    start_cli,
    systemctl_show,
    unit_active,
    wait_until,
)

WORK = Path("/run/slotmgr-tests")
# "The job's unit is stopped within 5 s" of its launcher's end (issue 13).
BINDING_DEADLINE_S = 5.0


@pytest.fixture(autouse=True)
def work() -> Path:
    WORK.mkdir(exist_ok=True)
    return WORK


def history_record(job_id: str, timeout: float = 120) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def stored() -> bool:
        out = run_cli("history", "--json")
        assert out.returncode == 0, out.stderr
        found[:] = [r for r in json.loads(out.stdout) if r["job_id"] == job_id]
        return bool(found)

    wait_until(stored, timeout=timeout, what=f"the record of {job_id}")
    (record,) = found
    return record


def seconds_until_stopped(unit: str, marker: str) -> float:
    """From now until `unit` is no longer active and no process of the job is
    left; the phases on the way printed (systemd's monotonic clock, seconds)."""
    start = time.monotonic()
    left_active: list[float] = []

    def stopped() -> bool:
        if not left_active and not unit_active(unit):
            left_active.append(time.monotonic() - start)
        return bool(left_active) and processes_with_marker(marker) == []

    wait_until(stopped, timeout=60, interval=0.05, what=f"{unit} stopped")
    took = time.monotonic() - start
    print(f"\n{unit}: left active after {left_active[0]:.2f} s, no process after {took:.2f} s")
    return took


def batch_job(name: str, *launcher_args: str, props: tuple[str, ...] = ()) -> None:
    """`slotmgr run LAUNCHER_ARGS` started in a service of its own, as a batch
    system runs its job in a cgroup of its own; not waited for."""
    subprocess.run(
        [
            "systemd-run",
            "--quiet",
            f"--unit={name}",
            "--collect",
            "-p",
            "KillMode=control-group",
            *(arg for prop in props for arg in ("-p", prop)),
            f"--setenv=PYTHONPATH={REPO}",
            f"--working-directory={WORK}",
            "--",
            sys.executable,
            "-m",
            "slotmgr",
            "run",
            *launcher_args,
        ],
        check=True,
    )


@pytest.fixture
def cleanup(unique: str) -> Iterator[None]:
    yield
    for pattern in (f"batch-{unique}*.service", f"slotmgr-{unique}*.service"):
        subprocess.run(
            ["systemctl", "kill", "--signal=SIGKILL", pattern], capture_output=True, check=False
        )


def test_a_sigkilled_launcher_stops_its_job_and_the_record_says_so(unique: str) -> None:
    unit = f"slotmgr-{unique}.service"
    launcher = start_cli("run", "--job-id", unique, "--", "sh", "-c", f"sleep 300; : {unique}")
    try:
        wait_until(lambda: unit_active(unit) and processes_with_marker(unique), what=unit)
        (watcher,) = systemctl_show(unit, "BindsTo")["BindsTo"].split()
        shown = systemctl_show(
            watcher,
            "ActiveState",
            "DynamicUser",
            "ExecStart",
            "Slice",
            "MainPID",
            "Description",
        )
        # The watcher is cat on a pipe from the launcher, as a user of its own,
        # outside any slot; no interpreter.
        assert shown["ActiveState"] == "active" and shown["DynamicUser"] == "yes", shown
        assert "path=/usr/bin/cat " in shown["ExecStart"], shown
        # (StandardInput= shows "null": systemd keeps a passed descriptor apart.)
        assert shown["Slice"] == "slotmgr.slice", shown
        assert f"(PID {launcher.pid})" in shown["Description"], shown
        cat = int(shown["MainPID"])
        assert os.readlink(f"/proc/{cat}/exe") == "/usr/bin/cat"
        # Its stdin is the pipe the launcher holds the write end of.
        pipe = os.readlink(f"/proc/{cat}/fd/0")
        assert pipe.startswith("pipe:"), pipe
        launcher_fds = [
            os.readlink(f"/proc/{launcher.pid}/fd/{fd}")
            for fd in os.listdir(f"/proc/{launcher.pid}/fd")
        ]
        assert pipe in launcher_fds, launcher_fds
        launcher.send_signal(signal.SIGKILL)
        launcher.communicate(timeout=60)
        took = seconds_until_stopped(unit, unique)
        print(f"\njob stopped {took:.2f} s after its launcher's SIGKILL (goal < 5 s)")
        assert took < BINDING_DEADLINE_S
    finally:
        if launcher.poll() is None:
            launcher.kill()
    record = history_record(unique)
    assert (record["result"], record["stopped_by"]) == ("cancelled", LAUNCHER_GONE), record
    wait_until(
        lambda: systemctl_show(watcher, "LoadState")["LoadState"] == "not-found",
        what="the watcher unit gone",
    )


def test_a_launcher_whose_cgroup_is_killed_stops_its_job(unique: str, cleanup: None) -> None:
    unit, batch = f"slotmgr-{unique}.service", f"batch-{unique}.service"
    batch_job(batch, "--job-id", unique, "--", "sh", "-c", f"sleep 300; : {unique}")
    wait_until(lambda: unit_active(unit) and processes_with_marker(unique), what=unit)
    # What a batch system does at a job's end: every process of its cgroup killed at once.
    subprocess.run(["systemctl", "kill", "--signal=SIGKILL", batch], check=True)
    took = seconds_until_stopped(unit, unique)
    print(f"\njob stopped {took:.2f} s after its launcher's cgroup was killed (goal < 5 s)")
    assert took < BINDING_DEADLINE_S
    record = history_record(unique)
    assert (record["result"], record["stopped_by"]) == ("cancelled", LAUNCHER_GONE), record


def test_a_job_that_ends_by_itself_is_not_called_stopped_and_leaves_no_watcher(
    unique: str,
) -> None:
    out = run_cli("run", "--job-id", unique, "--json", "-", "--", "true")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert (record["result"], record["stopped_by"]) == ("success", None), record
    watcher = launcher_unit_for(record["run_id"])
    wait_until(
        lambda: systemctl_show(watcher, "LoadState")["LoadState"] == "not-found",
        what=f"{watcher} gone after its launcher",
    )


def test_inherited_limits_are_the_launchers_cgroups(unique: str, cleanup: None) -> None:
    unit, batch = f"slotmgr-{unique}.service", f"batch-{unique}.service"
    batch_job(
        batch,
        "--job-id",
        unique,
        "--inherit-limits",
        "--tasks-max",
        "100",  # looser than the batch job's 40: the tighter holds
        "--memory-max",
        "32M",  # tighter than its 64M: kept
        "--batch-id",
        "77.0",
        "--",
        "sleep",
        "300",
        props=(
            "MemoryMax=64M",
            "MemoryHigh=60M",
            "MemorySwapMax=0",
            "TasksMax=40",
            "CPUQuota=50%",
            "AllowedCPUs=0",
        ),
    )
    wait_until(lambda: unit_active(unit), what=unit)
    shown = systemctl_show(
        unit,
        "MemoryMax",
        "MemoryHigh",
        "MemorySwapMax",
        "TasksMax",
        "CPUQuotaPerSecUSec",
        "AllowedCPUs",
        "LogExtraFields",
    )
    assert shown["MemoryMax"] == str(32 << 20)
    assert shown["MemoryHigh"] == str(60 << 20)
    assert shown["MemorySwapMax"] == "0"
    assert shown["TasksMax"] == "40"
    assert shown["CPUQuotaPerSecUSec"] == "500ms"
    assert shown["AllowedCPUs"] == "0"
    assert "SLOTMGR_BATCH_ID=77.0" in shown["LogExtraFields"].split()
    # The batch system ends its job as Slurm's scancel does: SIGTERM, then the cgroup.
    subprocess.run(["systemctl", "stop", batch], check=True)
    wait_until(lambda: not unit_active(unit), what=f"{unit} stopped with its launcher")
    record = history_record(unique)
    assert record["batch_id"] == "77.0" and record["result"] == "cancelled", record


def test_an_inherited_memory_limit_holds_for_the_job(unique: str) -> None:
    hog = "data = b'x' * (200 << 20); print(len(data))"  # touches every page
    out = subprocess.run(
        [
            "systemd-run",
            "--quiet",
            "--wait",
            "--pipe",
            "--collect",
            "-p",
            "MemoryMax=64M",
            "-p",
            "MemorySwapMax=0",
            f"--setenv=PYTHONPATH={REPO}",
            f"--working-directory={WORK}",
            "--",
            sys.executable,
            "-m",
            "slotmgr",
            "run",
            "--quiet",
            "--job-id",
            unique,
            "--inherit-limits",
            "--json",
            str(WORK / f"{unique}.json"),
            "--",
            sys.executable,
            "-c",
            hog,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    record = json.loads((WORK / f"{unique}.json").read_text())
    assert record["result"] == "oom-kill", (record, out.stderr)
    assert record["memory_peak_bytes"] <= 64 << 20


def test_the_callers_environment_reaches_the_job_as_asked(unique: str) -> None:
    env = {
        **os.environ,
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_ID": "3",
        "SLURM_PROCID": "1",
        "SLURM_NODELIST": "n1",
        "CHOSEN": "yes",
        "NOT_ASKED_FOR": "no",
    }
    env.pop("ABSENT", None)
    record_file = WORK / f"{unique}.json"
    out = run_cli(
        "run",
        "--quiet",
        "--job-id",
        unique,
        "--json",
        str(record_file),
        "--pass-env",
        "SLURM_*",
        "-E",
        "CHOSEN",
        "-E",
        "ABSENT",
        "-E",
        "SLURM_NODELIST=overridden",
        "--",
        "env",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    seen = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert seen["SLURM_JOB_ID"] == "4242" and seen["SLURM_STEP_ID"] == "3"
    assert seen["SLURM_NODELIST"] == "overridden"  # -E wins over --pass-env
    assert seen["CHOSEN"] == "yes"
    assert "NOT_ASKED_FOR" not in seen and "ABSENT" not in seen
    # Slurm's ids name the batch job: job.step.task.
    assert json.loads(record_file.read_text())["batch_id"] == "4242.3.1"

    everything = run_cli("run", "--quiet", "--pass-env", "*", "--", "env", env=env)
    assert everything.returncode == 0, everything.stderr
    assert "NOT_ASKED_FOR=no" in everything.stdout.splitlines()
