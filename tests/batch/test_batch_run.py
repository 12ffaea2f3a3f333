"""A Slurm user's jobs under slotmgr by the documented route, any Slurm
(22.05 has no SPANK argv prepend): the batch script execs slotmgr's sudo entry,

    exec sudo -n /usr/libexec/slotmgr/batch-run --pass-env 'SLURM_*' -- CMD...

and the job runs as a systemd unit of the user's, outside Slurm's cgroup,
while Slurm keeps control of it: scancel, a killed launcher, --mem, srun
steps, two nodes. Jobs are submitted by an unprivileged user, as on a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from slotmgr.history.accounting import LAUNCHER_GONE

from .conftest import (
    JOB_DEADLINE,
    REPO,
    install_epilog,
    job_info,
    output_of,
    run,
    sbatch,
    slotmgr_argv,
    slotmgr_units_of,
    slurm_config,
    wait_for_end,
    wait_for_state,
    wait_until,
    write_script,
)

# "The job's unit is stopped within 5 s" of its launcher's end (issue 13).
BINDING_DEADLINE_S = 5.0


def show(unit: str, *props: str) -> dict[str, str]:
    out = run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wrapped(entry: Path, command: str, options: str = "--pass-env 'SLURM_*'") -> str:
    """A batch script's body that execs the job through slotmgr's entry."""
    return f"exec sudo -n {entry} {options} -- {command}\n"


def the_unit_of(job_id: str) -> tuple[str, str]:
    """The one running slotmgr unit of Slurm job `job_id`, and its batch id."""
    found: dict[str, str] = {}

    def one() -> bool:
        found.clear()
        found.update(slotmgr_units_of(job_id))
        return len(found) == 1 and show(next(iter(found)), "ActiveState")["ActiveState"] == (
            "active"
        )

    wait_until(one, JOB_DEADLINE, f"a running slotmgr unit of Slurm job {job_id}")
    ((unit, batch_id),) = found.items()
    return unit, batch_id


def records_of(batch_job: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [*slotmgr_argv(), "history", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return [
        r for r in json.loads(out.stdout) if str(r.get("batch_id") or "").split(".")[0] == batch_job
    ]


def record_of(batch_job: str, count: int = 1) -> list[dict[str, Any]]:
    wait_until(
        lambda: len(records_of(batch_job)) >= count, 120, f"{count} record(s) of {batch_job}"
    )
    return sorted(records_of(batch_job), key=lambda r: str(r["batch_id"]))


def test_a_users_batch_job_runs_as_their_unit_with_slurms_limits_and_scancel_stops_it(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(workdir, "job.sh", wrapped(batch_entry, "sleep 300"), test_user)
    job_id = sbatch(script, "--mem=200M", user=test_user.pw_name)
    unit, batch_id = the_unit_of(job_id)
    assert batch_id == f"{job_id}.batch"
    props = show(unit, "User", "MemoryMax", "ControlGroup")
    assert props["User"] == test_user.pw_name, props
    assert props["MemoryMax"] == str(200 << 20), props  # Slurm's --mem, inherited
    assert props["ControlGroup"].startswith("/slotmgr.slice/"), props
    run(["scancel", job_id])
    wait_until(lambda: not slotmgr_units_of(job_id), 30, f"{unit} stopped after scancel")
    assert wait_for_end(job_id)["JobState"] == "CANCELLED"
    (record,) = record_of(job_id)
    assert record["result"] == "cancelled" and record["user"] == test_user.pw_name, record
    assert record["stopped_by"] in ("signal SIGTERM to slotmgr run", LAUNCHER_GONE), record


def test_a_killed_launcher_stops_the_job_within_5_s(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(workdir, "job.sh", wrapped(batch_entry, "sleep 300"), test_user)
    job_id = sbatch(script, user=test_user.pw_name)
    unit, _ = the_unit_of(job_id)
    # The launcher, as the job's watcher names it: "launcher of job J (PID N)".
    (watcher,) = show(unit, "BindsTo")["BindsTo"].split()
    description = show(watcher, "Description")["Description"]
    launcher = int(description.rsplit("(PID ", 1)[1].rstrip(")"))
    assert "batch-run" in Path(f"/proc/{launcher}/cmdline").read_text()
    main_pid = int(show(unit, "MainPID")["MainPID"])
    assert main_pid > 0
    os.kill(launcher, signal.SIGKILL)
    began = time.monotonic()
    # Stopped: systemd is stopping the unit (or has) and the job's processes are
    # gone; the unit's stop hook then writes the record, which takes longer.
    wait_until(
        lambda: (
            show(unit, "ActiveState")["ActiveState"] != "active"
            and not os.path.exists(f"/proc/{main_pid}")
        ),
        30,
        f"{unit} stopping and its main process gone",
        interval=0.05,
    )
    took = time.monotonic() - began
    wait_until(lambda: not slotmgr_units_of(job_id), 60, f"{unit} inactive")
    print(
        f"\njob stopped {took:.2f} s after its launcher's SIGKILL (goal < 5 s); "
        f"its unit inactive, record written, after {time.monotonic() - began:.2f} s"
    )
    assert took < BINDING_DEADLINE_S
    info = wait_for_end(job_id)
    print(f"Slurm: {info['JobState']} {info['ExitCode']}")
    (record,) = record_of(job_id)
    assert (record["result"], record["stopped_by"]) == ("cancelled", LAUNCHER_GONE), record


def test_slurms_memory_limit_holds_for_the_job(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    hog = f"{sys.executable} -c \"b = b'x' * (200 << 20); print(len(b))\""
    script = write_script(workdir, "hog.sh", wrapped(batch_entry, hog), test_user)
    job_id = sbatch(script, "--mem=64M", user=test_user.pw_name)
    info = wait_for_end(job_id)
    print(f"Slurm: {info['JobState']} {info['ExitCode']}")
    (record,) = record_of(job_id)
    assert record["result"] == "oom-kill", record
    assert record["memory_peak_bytes"] <= 64 << 20, record
    # slotmgr's exit status for an OOM kill (125) is the batch script's.
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "125:0", info


def test_an_srun_inside_the_wrapped_job_stays_a_step_of_it(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    inner = "srun -N1 -n1 sh -c 'echo step=$SLURM_JOB_ID.$SLURM_STEP_ID'"
    script = write_script(workdir, "steps.sh", wrapped(batch_entry, inner), test_user)
    job_id = sbatch(script, user=test_user.pw_name)
    info = wait_for_end(job_id)
    out = output_of(workdir, job_id)
    assert info["JobState"] == "COMPLETED", (info, out)
    assert f"step={job_id}.0" in out.split(), out  # a step of this job, not a new job
    (record,) = record_of(job_id)
    assert record["batch_id"] == f"{job_id}.batch" and record["result"] == "success"


def test_a_batch_job_cannot_claim_another_jobs_batch_id(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    """The batch id is the step's that the task's cgroup names (root's
    slurmstepd made it): a label of the user's (--batch-id) or their own
    SLURM_JOB_ID naming another job changes nothing but a refusal."""
    body = (
        f"sudo -n {batch_entry} --batch-id 424242.batch -- true\n"
        'echo "forged-label-exit=$?"\n'
        f"SLURM_JOB_ID=424242 exec sudo -n {batch_entry} --pass-env 'SLURM_*' -- "
        "sh -c 'echo job-saw=$SLURM_JOB_ID'\n"
    )
    script = write_script(workdir, "forge.sh", body, test_user)
    job_id = sbatch(script, user=test_user.pw_name)
    info = wait_for_end(job_id)
    out = output_of(workdir, job_id)
    assert info["JobState"] == "COMPLETED", (info, out)
    assert "forged-label-exit=64" in out.split(), out  # ExitCode.USAGE, one line naming it
    assert "--batch-id '424242.batch' is not this Slurm step's" in out, out
    assert "job-saw=424242" in out.split(), out  # the job's own environment is its own
    (record,) = record_of(job_id)
    assert record["batch_id"] == f"{job_id}.batch", record
    assert records_of("424242") == []


def test_srun_on_two_nodes_runs_each_task_under_slotmgr(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    task = (
        f"sudo -n {batch_entry} --pass-env 'SLURM_*' --pass-env 'SLURMD_*' -- "
        "sh -c 'echo task=$SLURM_PROCID node=$SLURMD_NODENAME'"
    )
    script = write_script(workdir, "two.sh", f"srun -N2 -n2 {task}\n", test_user)
    job_id = sbatch(script, "-N2", user=test_user.pw_name)
    info = wait_for_end(job_id)
    out = output_of(workdir, job_id)
    assert info["JobState"] == "COMPLETED", (info, out)
    assert sorted(w for w in out.split() if w.startswith(("task=", "node="))) == [
        "node=n1",
        "node=n2",
        "task=0",
        "task=1",
    ], out
    # One job per step and node: the step's unit on n1 and its unit on n2.
    records = record_of(job_id, count=2)
    assert [r["batch_id"] for r in records] == [f"{job_id}.0", f"{job_id}.0"], records
    assert len({r["unit"] for r in records}) == 2, records
    assert all(r["result"] == "success" and r["user"] == test_user.pw_name for r in records)


# Two ranks of one step on one node, as MPI's shared-memory transport needs
# them: each puts its PID in a POSIX shared-memory object (/dev/shm), finds
# its peer's there, and checks that it can see that PID; then both wait for
# each other, so that neither is gone while the other looks.
RANK = """
import os, sys, time
rank, job = int(os.environ["SLURM_PROCID"]), os.environ["SLURM_JOB_ID"]
def shm(name):
    return "/dev/shm/slotmgr-test-%s-%s" % (job, name)
def publish(name, text):
    with open(shm(name) + ".new", "w") as f:
        f.write(text)
    os.rename(shm(name) + ".new", shm(name))
def await_(name):
    deadline = time.time() + 120
    while not os.path.exists(shm(name)):
        if time.time() > deadline:
            print("rank=%d no-peer-object=%s" % (rank, name), flush=True)
            sys.exit(3)
        time.sleep(0.1)
    return open(shm(name)).read()
publish("pid%d" % rank, str(os.getpid()))
peer = int(await_("pid%d" % (1 - rank)))
visible = os.path.exists("/proc/%d" % peer)
publish("seen%d" % rank, "1")
await_("seen%d" % (1 - rank))
print("rank=%d pid=%d peer=%d peer-visible=%s" % (rank, os.getpid(), peer, visible), flush=True)
"""


def test_two_tasks_of_a_step_on_a_node_are_one_job_sharing_shm_and_pids(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    rank = write_script(workdir, "rank.py", RANK, test_user)
    task = f"sudo -n {batch_entry} --pass-env 'SLURM_*' -- python3 {rank}"
    script = write_script(workdir, "ranks.sh", f"srun -N1 -n2 {task}\n", test_user)
    job_id = sbatch(script, "-N1", "-n2", user=test_user.pw_name)
    info = wait_for_end(job_id)
    out = output_of(workdir, job_id)
    print(out)
    assert info["JobState"] == "COMPLETED", (info, out)
    lines = sorted(line for line in out.splitlines() if line.startswith("rank="))
    assert len(lines) == 2, out
    seen = [dict(word.split("=", 1) for word in line.split()) for line in lines]
    # Each found the other's shared-memory object and sees the other's PID.
    assert [s["peer-visible"] for s in seen] == ["True", "True"], out
    assert seen[0]["pid"] == seen[1]["peer"] and seen[1]["pid"] == seen[0]["peer"], out
    # One job: one unit, one record, for the step on the node.
    (record,) = record_of(job_id)
    assert record["batch_id"] == f"{job_id}.0" and record["result"] == "success", record
    assert record["unit"].startswith(f"slotmgr-slurm-{job_id}.0-"), record
    # The step's command, its tasks' (not the task host slotmgr runs in the unit).
    assert record["command"] == ["python3", str(rank)], record


def _cgroup_pids(unit: str, comm: str | None = None) -> list[int]:
    """The unit's processes (named `comm` only, if given)."""
    group = show(unit, "ControlGroup")["ControlGroup"]
    if not group:
        return []  # the unit is gone (an empty ControlGroup is not the root's)
    try:
        pids = [int(p) for p in Path(f"/sys/fs/cgroup{group}/cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []
    if comm is None:
        return pids
    named = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                named.append(pid)
        except OSError:
            pass
    return named


def _launchers_of(marker: str) -> list[int]:
    """The batch-run launchers (root's, outside the unit) whose task names `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        launcher = not words[0].endswith("sudo") and any(w.endswith("batch-run") for w in words[:3])
        if launcher and marker in words:
            found.append(int(entry.name))
    return found


def test_a_killed_launcher_takes_its_task_and_the_last_one_the_steps_unit(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    marker = f"step-task-{workdir.name[-12:]}"
    task = f"sudo -n {batch_entry} -- sh -c 'exec sleep 300' {marker}"
    script = write_script(
        workdir, "two.sh", f"srun -N1 -n2 --kill-on-bad-exit=0 {task}\n", test_user
    )
    job_id = sbatch(script, "-N1", "-n2", user=test_user.pw_name)
    try:
        found: dict[str, str] = {}

        def step_unit_with_two_tasks() -> bool:
            found.clear()
            found.update({u: b for u, b in slotmgr_units_of(job_id).items() if b == f"{job_id}.0"})
            return len(found) == 1 and len(_launchers_of(marker)) == 2

        wait_until(step_unit_with_two_tasks, JOB_DEADLINE, f"job {job_id}'s step unit, two tasks")
        (unit,) = found
        wait_until(lambda: len(_cgroup_pids(unit, "sleep")) == 2, 60, f"two tasks in {unit}")
        first, second = _launchers_of(marker)
        os.kill(first, signal.SIGKILL)
        began = time.monotonic()
        wait_until(
            lambda: len(_cgroup_pids(unit, "sleep")) <= 1, 30, "the first task gone", interval=0.05
        )
        took_first = time.monotonic() - began
        if Path(f"/proc/{second}").exists():
            # The other task runs on while its launcher does (srun -K0 keeps the step).
            assert show(unit, "ActiveState")["ActiveState"] == "active"
            assert len(_cgroup_pids(unit, "sleep")) == 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(second, signal.SIGKILL)
        began = time.monotonic()
        wait_until(
            lambda: show(unit, "ActiveState")["ActiveState"] != "active" and not _cgroup_pids(unit),
            30,
            f"{unit} stopped with its last task's launcher",
            interval=0.05,
        )
        took_last = time.monotonic() - began
        print(
            f"\nSIGKILL of a task's launcher: its task gone after {took_first:.2f} s; "
            f"of the last: {unit} stopped after {took_last:.2f} s (goal < 5 s)"
        )
        assert took_first < BINDING_DEADLINE_S and took_last < BINDING_DEADLINE_S
    finally:
        run(["scancel", job_id], check=False)
        wait_for_end(job_id)


def test_the_mpd_case_through_sbatch_leaves_nothing_on_the_node(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    mpd = f"sh {REPO / 'examples' / 'mpd-job.sh'}"
    script = write_script(workdir, "mpd.sh", wrapped(batch_entry, mpd), test_user)
    job_id = sbatch(script, user=test_user.pw_name)
    info = wait_for_end(job_id)
    out = output_of(workdir, job_id)
    assert info["JobState"] == "COMPLETED", (info, out)
    assert "mpd-demo.sock" in out  # the daemon's socket existed, in the job's own /tmp
    (record,) = record_of(job_id)
    assert record["result"] == "success", record
    left = subprocess.run(["pgrep", "-f", "mpd_daemon.py"], capture_output=True, text=True)
    assert left.stdout == "", f"the job's daemon outlived it: {left.stdout}"
    assert not Path("/tmp/mpd-demo.sock").exists() and not Path("/tmp/mpd-demo.ready").exists()


def test_the_job_has_its_users_identity_and_slurms_variables_not_sudos(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(
        workdir, "env.sh", wrapped(batch_entry, "env", options="--pass-env '*'"), test_user
    )
    job_id = sbatch(script, user=test_user.pw_name)
    assert wait_for_end(job_id)["JobState"] == "COMPLETED"
    seen = dict(
        line.split("=", 1) for line in output_of(workdir, job_id).splitlines() if "=" in line
    )
    assert seen["SLURM_JOB_ID"] == job_id  # kept by the sudoers rule, passed by --pass-env
    assert (seen["USER"], seen["HOME"]) == (test_user.pw_name, test_user.pw_dir), seen
    assert not any(name.startswith("SUDO_") for name in seen), seen


def test_a_requeued_job_is_a_new_run_with_a_record_of_its_own(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(workdir, "again.sh", wrapped(batch_entry, "sleep 300"), test_user)
    job_id = sbatch(script, "--requeue", user=test_user.pw_name)
    first, batch_id = the_unit_of(job_id)
    run(["scontrol", "requeue", job_id])  # Slurm runs the same job id again
    wait_until(lambda: first not in slotmgr_units_of(job_id), 60, f"{first} stopped")
    # A requeued job is held back (its BeginTime) before it runs again: not here.
    wait_until(lambda: job_info(job_id).get("JobState") == "PENDING", 60, f"{job_id} pending again")
    run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
    second, again = the_unit_of(job_id)
    run(["scancel", job_id])
    wait_until(lambda: not slotmgr_units_of(job_id), 60, f"{second} stopped")
    records = record_of(job_id, count=2)
    assert second != first and again == batch_id == f"{job_id}.batch"
    assert [r["batch_id"] for r in records] == [batch_id, batch_id]
    assert len({r["run_id"] for r in records}) == 2 and len({r["job_id"] for r in records}) == 2


def test_the_epilog_stops_a_unit_of_the_job_left_running_on_this_route(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    """README "With Slurm", item 4, where the batch script execs the entry (the
    one route on 22.05): at the job's end the Epilog stops a slotmgr unit of
    the job still running (root's, made by hand with the job's batch id) and
    logs it. It writes the job's AdminComment where slurmdbd keeps accounting
    (257-batch), and where it does not (252-batch) it tries nothing and logs
    no failure of it."""
    install_epilog()
    slurmdbd = slurm_config().get("AccountingStorageType") == "accounting_storage/slurmdbd"
    script = write_script(
        workdir,
        "wait.sh",
        wrapped(batch_entry, "sh -c 'while [ ! -e go ]; do sleep 1; done'"),
        test_user,
    )
    job_id = sbatch(script, "--time=5", user=test_user.pw_name)
    wait_for_state(job_id, ("RUNNING",))
    stray = f"{job_id}.x"
    launcher = subprocess.Popen(
        [*slotmgr_argv(), "run", "--quiet", "--uid", test_user.pw_name, "--batch-id", stray,
         "--", "sleep", "600"],
        cwd=workdir, env=dict(os.environ, PYTHONPATH=str(REPO)), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        units: dict[str, str] = {}

        def both_running() -> bool:
            units.clear()
            units.update(slotmgr_units_of(job_id))
            return sorted(units.values()) == [f"{job_id}.batch", stray]

        wait_until(both_running, JOB_DEADLINE, f"job {job_id}'s unit and the stray {stray}")
        (unit,) = [name for name, bid in units.items() if bid == stray]
        (workdir / "go").touch()
        info = wait_for_end(job_id)
        assert info["JobState"] == "COMPLETED", info
        wait_until(
            lambda: unit not in slotmgr_units_of(job_id),
            JOB_DEADLINE,
            f"the Epilog to stop {unit} ({stray})",
        )
        code = launcher.wait(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
            launcher.wait(timeout=60)
    # The Epilog's stop is systemd's (StopUnit): SIGTERM, or on 257 rarely an
    # immediate SIGKILL (README, "not our child").
    assert code in (143, 137), (code, launcher.communicate(timeout=10))
    (record,) = [r for r in records_of(job_id) if r["batch_id"] == stray]
    assert record["result"] == "cancelled", record

    def logged() -> list[str]:
        journal = run(["journalctl", "-t", "slotmgr-epilog", "--no-pager", "-o", "cat"]).stdout
        return [line for line in journal.splitlines() if line.startswith(f"job {job_id}: ")]

    wait_until(lambda: not slurmdbd or any("AdminComment" in line for line in logged()),
               JOB_DEADLINE, "the Epilog's accounting")  # fmt: skip
    lines = logged()
    print("\n".join(lines))
    assert f"job {job_id}: stopping {unit} (batch id {stray})" in lines, lines
    if slurmdbd:
        assert any(line.startswith(f"job {job_id}: AdminComment: slotmgr ") for line in lines)
    else:
        assert not any("sacctmgr" in line or "AdminComment" in line for line in lines), lines
