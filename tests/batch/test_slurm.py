"""Slurm and slotmgr together, on the guest's real two-node cluster."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from .conftest import (
    JOB_DEADLINE,
    job_info,
    output_of,
    run,
    sbatch,
    slotmgr_argv,
    slotmgr_env_line,
    wait_for_end,
    wait_for_state,
    wait_until,
    write_script,
)

STOP_DEADLINE = 30.0  # scancel -> the job's unit gone: SIGTERM, then KillWait=5 s at most


def systemctl_show(unit: str, *props: str) -> dict[str, str]:
    out = run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.mark.parametrize("as_root", [True, False], ids=["root", "user"])
def test_a_batch_job_runs_and_its_output_comes_back(
    as_root: bool, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    user = None if as_root else test_user.pw_name
    script = write_script(
        workdir,
        "hello.sh",
        'echo "job $SLURM_JOB_ID on $SLURMD_NODENAME as $(id -un) in $(pwd)"\n',
        test_user,
    )
    job_id = sbatch(script, "--job-name=hello", user=user)
    info = wait_for_end(job_id)
    assert info["JobState"] == "COMPLETED", info
    assert info["ExitCode"] == "0:0", info
    node = info["NodeList"]
    assert node in ("n1", "n2"), info
    who = "root" if as_root else test_user.pw_name
    assert output_of(workdir, job_id) == f"job {job_id} on {node} as {who} in {workdir}\n"


def test_srun_runs_one_task_on_each_node(workdir: Path, test_user: pwd.struct_passwd) -> None:
    proc = run(
        ["srun", "-N2", "-l", "sh", "-c", "echo $SLURMD_NODENAME $(id -un)"],
        user=test_user.pw_name,
        cwd=workdir,
        timeout=JOB_DEADLINE,
    )
    lines = sorted(proc.stdout.splitlines())
    assert lines == [f"0: n1 {test_user.pw_name}", f"1: n2 {test_user.pw_name}"], proc


def test_scancel_stops_the_slotmgr_unit_of_a_batch_job(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    """A batch script that execs `slotmgr run --uid USER`: the job runs as a
    systemd unit outside Slurm's cgroup, and scancel still stops it."""
    launcher = " ".join(slotmgr_argv())
    script = write_script(
        workdir,
        "wrapped.sh",
        slotmgr_env_line() + f"exec {launcher} run --uid {test_user.pw_name} "
        '--job-id "slurm-$SLURM_JOB_ID" -- sleep 300\n',
        test_user,
    )
    job_id = sbatch(script, "--job-name=wrapped")  # as root: only root may pass --uid
    wait_for_state(job_id, ("RUNNING",))
    slot_id = f"slurm-{job_id}"
    unit = f"slotmgr-{slot_id}.service"

    def unit_running() -> bool:
        return systemctl_show(unit, "ActiveState")["ActiveState"] == "active"

    wait_until(unit_running, JOB_DEADLINE, f"{unit} to be active")
    props = systemctl_show(unit, "User", "MainPID", "ControlGroup")
    assert props["User"] == test_user.pw_name, props
    assert props["ControlGroup"].startswith("/slotmgr.slice/"), props
    main_pid = int(props["MainPID"])
    assert main_pid > 0, props
    listed = subprocess.run(
        [*slotmgr_argv(), "list"], capture_output=True, text=True, timeout=60, check=True
    )
    assert slot_id in listed.stdout, listed.stdout
    # The batch script's process is slotmgr itself (exec), inside Slurm's step.
    assert job_info(job_id)["JobState"] == "RUNNING"

    run(["scancel", job_id])

    def unit_gone() -> bool:
        state = systemctl_show(unit, "ActiveState")["ActiveState"]
        return state not in ("active", "activating", "deactivating", "reloading")

    wait_until(unit_gone, STOP_DEADLINE, f"{unit} to stop after scancel {job_id}")
    assert not os.path.exists(f"/proc/{main_pid}"), f"the job's process {main_pid} still runs"
    assert wait_for_end(job_id)["JobState"] == "CANCELLED"

    def recorded() -> subprocess.CompletedProcess[str] | None:
        proc = subprocess.run(
            [*slotmgr_argv(), "status", slot_id], capture_output=True, text=True, timeout=60
        )
        return proc if proc.returncode == 0 else None

    wait_until(recorded, 30, f"a record of {slot_id} in slotmgr status")
    status = recorded()
    assert status is not None
    print(status.stdout)
    assert slot_id in status.stdout and "cancelled" in status.stdout, status.stdout
