"""HTCondor and slotmgr together, on the guest's real one-node pool (257-batch).

slotmgr is added to the pool as an admin would: the sudo entry and its rule
(`batch_entry`), the job wrapper and the config snippet of packaging/htcondor/.
Every job is submitted by an unprivileged user with condor_submit. HTCondor is
packaged for Debian 13 only: in 252-batch conftest deselects this module, and says so.
"""

from __future__ import annotations

import os
import pwd
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import condor
from .condor import COMPLETED, HELD, IDLE, REMOVED, RUNNING, Job
from .conftest import BURN_SECONDS, REPO, run, wait_until, write_script

UNIT_STOP_DEADLINE = 30.0  # condor_rm -> the unit gone: SIGTERM, MachineMaxVacateTime 10 s
LAUNCHER_DEATH_DEADLINE = 5.0  # SIGKILL of the launcher -> the unit gone (slotmgr's binding)


@pytest.fixture(scope="module", autouse=True)
def pool(batch_entry: Path) -> Iterator[float]:
    """The pool with slotmgr installed; its value: guest uptime when both slots were up."""
    if not condor.have_condor():
        pytest.fail("no HTCondor in this guest: run these in guest 257-batch", pytrace=False)
    uptime = condor.wait_for_pool()
    print(f"\ncondor: pool up (slot1, slot2 Unclaimed) at guest uptime {uptime:.1f} s")
    condor.install_slotmgr()
    yield uptime


def _hold_until_go(directory: Path, owner: pwd.struct_passwd, body: str = "") -> Path:
    """A job script that reports who and where it is, then waits for a file `go`."""
    return write_script(
        directory,
        "job.sh",
        'echo "user $(id -un)"\n'
        'echo "cgroup $(cat /proc/self/cgroup)"\n'
        'echo "condor slot ${_CONDOR_SLOT:-none}"\n'
        "grep -E '^(Memory|Cpus|RequestMemory|RequestCpus) = ' "
        '"$_CONDOR_MACHINE_AD" "$_CONDOR_JOB_AD" | sed "s/^/ad /"\n'
        f"{body}"
        "n=0\n"
        'while [ ! -e go ] && [ "$n" -lt 1200 ]; do sleep 0.1; n=$((n + 1)); done\n'
        "echo done\n",
        owner,
    )


def _wait_unit_gone(batch_id: str, timeout: float, what: str) -> float:
    start = time.monotonic()
    wait_until(lambda: not condor.running_units_of(batch_id), timeout, what, interval=0.2)
    return time.monotonic() - start


def _remove_if_queued(job: Job) -> None:
    if condor.queue_ad(job, "JobStatus") is not None:
        run(["condor_rm", job.id], check=False)


def test_a_vanilla_job_runs_as_a_slotmgr_unit_of_its_user(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = _hold_until_go(workdir, test_user)
    job = condor.submit(workdir, test_user, str(script))
    try:
        unit = condor.wait_for_unit(job)
        listed = run(["systemctl", "list-units", "--plain", "--no-legend", "slotmgr-*"]).stdout
        assert unit.name in listed, listed
        assert unit.user == test_user.pw_name, unit
        props = condor.systemctl_show(unit.name, "ControlGroup", "MemoryMax", "CPUQuotaPerSecUSec")
        print(unit, props)
        assert props["ControlGroup"].startswith("/slotmgr.slice/"), props
        # The slot's Memory (512 MiB) and Cpus (1), as the wrapper read them.
        assert props["MemoryMax"] == str(512 * 1024 * 1024), props
        assert props["CPUQuotaPerSecUSec"] == "1s", props
        assert condor.wait_for_status(job, (RUNNING,)) == RUNNING
        (workdir / "go").touch()
        assert condor.wait_for_status(job, (COMPLETED, HELD)) == COMPLETED
    finally:
        _remove_if_queued(job)
    out = job.read("job.out")
    print(out)
    lines = out.splitlines()
    assert f"user {test_user.pw_name}" in lines, out
    assert any(line.startswith("cgroup 0::/slotmgr.slice/") for line in lines), out
    assert any(line.startswith("condor slot slot") for line in lines), out  # _CONDOR_* passed
    assert lines[-1] == "done", out
    ad = condor.wait_for_history(job, "ExitCode", "SlotmgrResult")
    assert ad["ExitCode"] == "0", ad
    assert ad["SlotmgrResult"] == '"success"', ad

    def recorded() -> bool:
        return condor.slotmgr_record(unit.name) is not None

    wait_until(recorded, 30, f"a record of {unit.name} in slotmgr status")
    record = condor.slotmgr_record(unit.name)
    assert record is not None
    assert record["batch_id"] == job.id, record
    assert record["user"] == test_user.pw_name, record
    assert record["result"] == "success", record
    assert ad["SlotmgrRunId"] == f'"{record["run_id"]}"', (ad, record)


def test_condor_rm_stops_the_unit_and_frees_the_slot(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = _hold_until_go(workdir, test_user)
    job = condor.submit(workdir, test_user, str(script))
    try:
        unit = condor.wait_for_unit(job)
        condor.wait_for_status(job, (RUNNING,))
        slot = condor.remote_slot(job)
        run(["condor_rm", job.id], user=test_user.pw_name)
        took = _wait_unit_gone(job.id, UNIT_STOP_DEADLINE, f"{unit.name} to stop after condor_rm")
        print(f"condor_rm {job.id}: {unit.name} gone after {took:.1f} s")
        assert not os.path.exists(f"/proc/{unit.main_pid}"), unit
        freed = condor.assert_not_double_booked(slot, job.id)
        print(f"{slot} Unclaimed {freed:.1f} s later")
        assert condor.wait_for_status(job, (REMOVED,)) == REMOVED
    finally:
        _remove_if_queued(job)
    wait_until(lambda: condor.slotmgr_record(unit.name) is not None, 30, "the job's record")
    record = condor.slotmgr_record(unit.name)
    assert record is not None
    print(record["result"], record["stopped_by"])
    assert record["result"] == "cancelled", record
    # The wrapper forwarded HTCondor's SIGTERM to slotmgr, which stopped the unit.
    assert record["stopped_by"] == "signal SIGTERM to slotmgr run", record


def test_sigkill_of_the_launcher_stops_the_unit_frees_the_slot_and_requeues_the_job(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = _hold_until_go(workdir, test_user)
    job = condor.submit(workdir, test_user, str(script), extra="max_retries = 0\n")
    try:
        unit = condor.wait_for_unit(job)
        condor.wait_for_status(job, (RUNNING,))
        slot = condor.remote_slot(job)
        launchers = condor.launcher_pids(job.id)
        assert len(launchers) == 1, launchers
        killed_at = time.monotonic()
        os.kill(launchers[0], signal.SIGKILL)
        # The job itself ends within the deadline; the unit then still runs
        # slotmgr's stop hook (its record) before systemd has it inactive.
        wait_until(
            lambda: not os.path.exists(f"/proc/{unit.main_pid}"),
            LAUNCHER_DEATH_DEADLINE,
            f"the job's process {unit.main_pid} to end after SIGKILL of its launcher",
            interval=0.1,
        )
        ended = time.monotonic() - killed_at
        took = condor.wait_for_unit_stop(unit.name, killed_at, UNIT_STOP_DEADLINE)
        print(
            f"SIGKILL of batch-run {launchers[0]}: the job's process gone after {ended:.2f} s, "
            f"{unit.name} inactive after {took:.2f} s"
        )
        assert not os.path.exists(f"/proc/{unit.main_pid}"), unit
        freed = condor.assert_not_double_booked(slot, job.id)
        print(f"{slot} Unclaimed {freed:.1f} s later")
        # The wrapper found no record: a failure of slotmgr's, written to
        # $_CONDOR_WRAPPER_ERROR_FILE and as SlotmgrFailed = true, for which
        # 50-slotmgr.conf re-queues the job (max_retries = 0: HTCondor's own
        # retries play no part); never Completed.
        seen: list[dict[str, str]] = []

        def started_again() -> bool:
            ad = condor.queue_ad(job, "JobStatus", "NumJobStarts", "SlotmgrFailed", "HoldReason")
            if ad is None:
                seen.append(condor.history_ad(job) or {})
                return True  # left the queue: fails below
            seen.append(ad)
            return ad["JobStatus"] == str(HELD) or int(ad["NumJobStarts"] or 0) >= 2

        wait_until(started_again, 120, f"job {job.id} to be re-queued and started again")
        print(f"job {job.id} after its launcher's SIGKILL: {seen[-1]}")
        ad = seen[-1]
        assert ad.get("JobStatus") in (str(IDLE), str(RUNNING)), ad
        assert int(ad["NumJobStarts"]) >= 2 and ad["SlotmgrFailed"] == "true", ad
    finally:
        _remove_if_queued(job)
        _wait_unit_gone(job.id, UNIT_STOP_DEADLINE, f"every unit of {job.id} to stop")


def test_a_job_past_request_memory_is_oom_killed_and_held(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(
        workdir,
        "hog.sh",
        "echo start\nexec python3 -c \"b = b'x' * (200 << 20); print('touched', len(b))\"\n",
        test_user,
    )
    job = condor.submit(workdir, test_user, str(script), extra="request_memory = 64\n")
    try:
        assert condor.wait_for_status(job, (HELD, COMPLETED)) == HELD
        ad = condor.queue_ad(job, "HoldReasonSubCode", "ExitCode", "HoldReason")
        print(ad)
        held = run(["condor_q", "-hold", job.id]).stdout
        print(held)
    finally:
        _remove_if_queued(job)
    assert ad is not None
    assert "OOM killer" in ad["HoldReason"], ad
    assert ad["HoldReasonSubCode"] == "125", ad
    assert ad["ExitCode"] == "125", ad
    assert "OOM killer" in held, held
    assert "touched" not in job.read("job.out")
    # What the wrapper asked of slotmgr (sudo logs the command line).
    asked = condor.sudo_commands(job.id)
    assert len(asked) == 1 and "--memory-max 64M" in asked[0], asked


def test_condor_history_has_slotmgr_s_cpu_figures(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(
        workdir,
        "burn.py",
        "",
        test_user,
    )
    script.write_text(
        "#!/usr/bin/python3\n"
        "import resource, time\n"
        f"while time.process_time() < {BURN_SECONDS}:\n"
        "    pass\n"
        "use = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(int((use.ru_utime + use.ru_stime) * 1e6))\n"
    )
    job = condor.submit(workdir, test_user, str(script))
    deadline = condor.JOB_DEADLINE + BURN_SECONDS
    try:
        assert condor.wait_for_status(job, (COMPLETED, HELD), deadline) == COMPLETED
    finally:
        _remove_if_queued(job)
    own = int(job.read("job.out").split()[-1])
    wanted = (
        "SlotmgrCpuUsec",
        "SlotmgrCpuUserUsec",
        "SlotmgrCpuSystemUsec",
        "SlotmgrMemoryPeakBytes",
        "SlotmgrIoReadBytes",
        "SlotmgrIoWriteBytes",
        "SlotmgrRunId",
        "SlotmgrResult",
        "SlotmgrWallTimeUsec",
    )
    ad = condor.wait_for_history(job, *wanted)
    print({k: ad[k] for k in (*wanted, "RemoteUserCpu", "RemoteSysCpu")})
    cpu = int(ad["SlotmgrCpuUsec"])
    above = (cpu - own) / own
    print(
        f"job's own CPU {own / 1e6:.3f} s, slotmgr's {cpu / 1e6:.3f} s: {above:+.1%}, "
        f"{(cpu - own) / 1e6:.3f} s more (goal: within 5%; the unit's figure counts "
        "its start and its init too)"
    )
    # slotmgr counts the whole unit: never less than the job's own.
    assert own <= cpu <= 1.05 * own, (cpu, own)
    assert int(ad["SlotmgrCpuUserUsec"]) + int(ad["SlotmgrCpuSystemUsec"]) <= cpu + 1000, ad
    assert int(ad["SlotmgrMemoryPeakBytes"]) > 0, ad
    assert ad["SlotmgrResult"] == '"success"', ad


def test_the_mpd_case_leaves_nothing_on_the_node(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    """examples/mpd-job.sh double-forks a daemon listening on a socket in
    /tmp and exits: under slotmgr, neither outlives the job."""
    example = REPO / "examples" / "mpd-job.sh"
    job = condor.submit(workdir, test_user, "/bin/sh", arguments=str(example))
    try:
        assert condor.wait_for_status(job, (COMPLETED, HELD)) == COMPLETED
    finally:
        _remove_if_queued(job)
    out = job.read("job.out")
    print(out)
    assert "mpd-demo.sock" in out, out  # it ran, and listened, inside the job
    wait_until(lambda: not condor.running_units_of(job.id), 30, "the job's unit to be gone")
    daemons = [
        pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_has(pid, "mpd_daemon.py")
    ]
    assert daemons == [], daemons
    assert not Path("/tmp/mpd-demo.sock").exists()
    sockets = run(["ss", "-x", "-l", "-p"]).stdout
    assert "mpd-demo" not in sockets, sockets


def _cmdline_has(pid: str, word: str) -> bool:
    try:
        return word.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
