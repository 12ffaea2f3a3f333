"""list, status, stop, kill and adopt against the real systemd (issue: job control)."""

from __future__ import annotations

import json
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from slotmgr.systemd.features import parse_version

from .accounts import ensure_user, slotmgr_as, start_slotmgr_as, start_user_manager, user_env
from .conftest import (
    processes_with_marker,
    run_cli,
    start_cli,
    systemctl_show,
    unit_active,
    wait_until,
)

WORK = Path("/run/slotmgr-tests")
NO_PERMISSION, USAGE = 77, 64


@pytest.fixture(scope="module", autouse=True)
def work() -> Path:
    WORK.mkdir(exist_ok=True)
    return WORK


def systemd_version() -> int:
    out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, check=True)
    return parse_version(out.stdout.splitlines()[0])


def cgroup_dir(unit: str, slice_: str = "slotmgr.slice") -> Path:
    return Path("/sys/fs/cgroup") / slice_ / unit


def record_of(job_id: str) -> dict[str, Any]:
    out = run_cli("history", "--json")
    assert out.returncode == 0, out.stderr
    found: list[dict[str, Any]] = [r for r in json.loads(out.stdout) if r["job_id"] == job_id]
    if len(found) != 1:
        journal = subprocess.run(
            [
                "journalctl",
                "--no-pager",
                "-o",
                "cat",
                "-n",
                "20",
                "-u",
                f"slotmgr-{job_id}.service",
            ],
            capture_output=True,
            text=True,
        )
        raise AssertionError(f"{len(found)} records of {job_id}; its journal:\n{journal.stdout}")
    return found[0]


def job_processes(marker: str, launcher: subprocess.Popen[str]) -> list[int]:
    """The job's processes: those with the marker, but not its launcher."""
    return [pid for pid in processes_with_marker(marker) if pid != launcher.pid]


def forks_per_second() -> float:
    def forks() -> int:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("processes "):
                return int(line.split()[1])
        raise AssertionError("no processes line in /proc/stat")

    before = forks()
    time.sleep(1)
    return forks() - before


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("slotmgr: error: ") and "Traceback" not in out.stderr
    return lines[0]


def test_list_status_and_stop_with_its_record(unique: str) -> None:
    unit = f"slotmgr-{unique}.service"
    job = start_cli("run", "--job-id", unique, "--", "sh", "-c", f"sleep 600; : {unique}")
    try:
        wait_until(lambda: unit_active(unit) and bool(job_processes(unique, job)), what=unit)
        listed = run_cli("list", "--json")
        assert listed.returncode == 0, listed.stderr
        mine = {j["job_id"]: j for j in json.loads(listed.stdout)}[unique]
        assert (mine["unit"], mine["user"], mine["uid"], mine["slot"]) == (unit, "root", 0, None)
        assert mine["state"] == "active/running"
        assert mine["tasks_current"] >= 3  # the init, sh and sleep
        assert mine["memory_current_bytes"] > 0 and mine["cpu_usage_usec"] > 0
        assert mine["runtime_usec"] > 0
        table = run_cli("list").stdout.splitlines()
        assert table[0].split() == [
            "JOB",
            "USER",
            "SLOT",
            "STATE",
            "STARTED",
            "CPU",
            "MEMORY",
            "TASKS",
            "COMMAND",
        ]
        row = next(line for line in table[1:] if line.split()[0] == unique)
        assert row.split()[1:4] == ["root", "-", "running"]
        # The command is cut to fit 100 columns (a test's job id is long).
        assert " sh -c 'sleep" in row and len(row) <= 100
        assert mine["command"] == ["sh", "-c", f"sleep 600; : {unique}"]

        status = run_cli("status", unique)
        assert status.returncode == 0, status.stderr
        assert f"Job {unique} ({unit})" in status.stdout
        assert f"Command:   sh -c 'sleep 600; : {unique}'" in status.stdout
        detail = json.loads(run_cli("status", unit, "--json").stdout)
        commands = [p["command"] for p in detail["processes"]]
        assert "sleep 600" in commands and detail["main_pid"] > 1
        assert detail["memory_peak_bytes"] >= detail["memory_current_bytes"] > 0

        started = time.monotonic()
        stopped = run_cli("stop", unique, "--grace", "30")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == f"job {unique} ({unit}) stopped"
        assert time.monotonic() - started < 30
        # stop returned only once nothing was left, the record included.
        assert not cgroup_dir(unit).exists()
        assert job_processes(unique, job) == []
        record = record_of(unique)
        assert (record["exit_status"], record["result"], record["stopped_by"]) == (
            143,
            "cancelled",
            "slotmgr stop by uid 0",
        )
    finally:
        if job.poll() is None:
            job.send_signal(signal.SIGTERM)
        _out, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
    # A finished job's status is its whole record, from the history.
    finished = run_cli("status", unique)
    assert finished.returncode == 0 and f"Job {unique} ({unit}) finished" in finished.stdout
    for line in (
        "Result:      cancelled, exit status 143",
        "User:        root (uid 0)",
        "Stopped by:  slotmgr stop by uid 0",
        f"Command:     sh -c 'sleep 600; : {unique}'",
        "Slice:       slotmgr.slice",
    ):
        assert line in finished.stdout, finished.stdout
    for label in ("Started:", "Ended:", "Wall time:", "CPU time:", "Memory peak:", "IO:"):
        assert f"\n  {label}" in finished.stdout, finished.stdout


def test_stop_escalates_to_sigkill_after_the_grace_period_and_keeps_the_record(unique: str) -> None:
    unit = f"slotmgr-{unique}.service"
    # SIGTERM is ignored by the shell and, inherited, by its sleep.
    job = start_cli(
        "run", "--job-id", unique, "--", "sh", "-c", f"trap '' TERM; sleep 600; : {unique}"
    )
    try:
        wait_until(lambda: unit_active(unit) and bool(job_processes(unique, job)), what=unit)
        started = time.monotonic()
        stopped = run_cli("stop", unique, "--grace", "3")
        elapsed = time.monotonic() - started
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == (
            f"job {unique} ({unit}) stopped: killed with SIGKILL after the 3s grace period"
        )
        assert elapsed >= 3
        assert job_processes(unique, job) == [] and not cgroup_dir(unit).exists()
        record = record_of(unique)  # the recorder ran after the SIGKILL, untouched by it
        # 137 either way: the init is killed itself, or sees its command
        # killed and exits with 128+9 as a shell does; stopped, either way.
        assert (record["exit_status"], record["result"], record["stopped_by"]) == (
            137,
            "cancelled",
            "slotmgr stop by uid 0",
        )
    finally:
        job.communicate(timeout=120)
    assert job.returncode == 137


def test_stops_racing_the_jobs_own_end_keep_systemd_answering_and_every_record(
    unique: str,
) -> None:
    """`stop --grace 0` of a job that dies of its SIGTERM at once: the
    SIGKILL step's freeze can catch the main process (the init) already
    exiting, and it ends in the frozen cgroup. systemd 257 then hangs
    starting the stop hook there until the cgroup is thawed: slotmgr must
    thaw it within seconds, not after its own 90 s call timeout (which left
    the hook to its stop timeout, and the job without its record)."""
    ids = [f"{unique}{n}" for n in range(6)]
    jobs = {
        job_id: start_cli("run", "--job-id", job_id, "--json", "-", "--", "sleep", "600")
        for job_id in ids
    }
    try:
        wait_until(
            lambda: all(unit_active(f"slotmgr-{job_id}.service") for job_id in ids),
            timeout=120,
            what="the jobs",
        )
        for job_id, job in jobs.items():
            stopped = run_cli("stop", job_id, "--grace", "0", timeout=60)
            assert stopped.returncode == 0, stopped.stderr
            out, err = job.communicate(timeout=60)  # a hung stop hook: 90 s
            record = json.loads(out.strip().splitlines()[-1])
            assert (record["job_id"], record["result"]) == (job_id, "cancelled"), err
            # Figures the stop hook read: it ran, and in time.
            assert record["cpu_usage_usec"] is not None, err
            assert record["memory_peak_source"] == "cgroup memory.peak", err
    finally:
        for job_id, job in jobs.items():
            if job.poll() is None:
                run_cli("stop", job_id, "--grace", "0")
                job.communicate(timeout=120)
    journal = subprocess.run(
        ["journalctl", "--no-pager", "-o", "cat", "-u", f"slotmgr-{unique}*.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "timed out" not in journal.stdout, journal.stdout


def test_stop_of_an_unknown_job_is_one_line_and_exit_64() -> None:
    out = run_cli("stop", "no-such-job-xyz")
    assert out.returncode == USAGE
    assert "no such job 'no-such-job-xyz'" in one_error_line(out)


# Forks without end: each process forks a child and exits at once, so the
# job's PIDs change all the time and a killer that reads the PIDs and then
# signals them one by one (KillUnit on systemd < 257) can always miss one.
# With --no-private-pids the main process is the orphans' reaper itself
# (PR_SET_CHILD_SUBREAPER), so the chains do not end up on PID 1.
FORK_LOOP = textwrap.dedent("""
    import ctypes, os, sys, time
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    for _ in range(4):
        if os.fork() == 0:
            while True:
                if os.fork():
                    os._exit(0)
    open(sys.argv[2], "w").close()
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.1)
""")


@pytest.mark.parametrize("isolation", [[], ["--no-private-pids"]], ids=["isolated", "plain"])
def test_kill_of_a_fork_loop_leaves_zero_processes(unique: str, isolation: list[str]) -> None:
    unit = f"slotmgr-{unique}.service"
    ready = WORK / f"{unique}.ready"
    job = start_cli(
        "run",
        "--job-id",
        unique,
        "--cpu-weight",
        "1",
        *isolation,
        "--",
        sys.executable,
        "-c",
        FORK_LOOP,
        unique,
        str(ready),
    )
    try:
        wait_until(lambda: ready.exists() and unit_active(unit), what="the fork loop")
        assert forks_per_second() >= 20  # it churns
        assert job_processes(unique, job)
        killed = run_cli("kill", unique, "-s", "KILL")
        assert killed.returncode == 0, killed.stderr
        # 257's KillUnit kills the whole cgroup at once (cgroup.kill); 252's
        # walks the PIDs, which only a frozen job cannot outrun.
        how = "at once (cgroup.kill)" if systemd_version() >= 257 else "while frozen"
        assert killed.stdout.strip() == (
            f"sent SIGKILL to every process of job {unique} ({unit}), {how}"
        )
        # Nothing escaped: what is left can only be dying, and is gone at once.
        wait_until(lambda: not job_processes(unique, job), timeout=5, what="no process")
        wait_until(lambda: not cgroup_dir(unit).exists(), timeout=60, what="the unit's end")
        # And none appears later: a chain that escaped would show its marker
        # again (the node's own fork rate is no measure: other units fork too).
        for _ in range(10):
            assert job_processes(unique, job) == []
            time.sleep(0.1)
    finally:
        if job.poll() is None:
            run_cli("stop", unique, "--grace", "0")
        job.communicate(timeout=120)
    assert job.returncode == 137


CATCHER = textwrap.dedent("""
    import os, signal, sys, time
    out, ready = sys.argv[1], sys.argv[2]
    def catcher(name):
        def handler(*_):
            with open(out, "a") as f:
                f.write(name + "\\n")
        return handler
    name = "child" if os.fork() == 0 else "parent"
    signal.signal(signal.SIGUSR1, catcher(name))
    open(f"{ready}.{name}", "w").close()
    while True:
        time.sleep(0.1)
""")


def test_kill_delivers_a_catchable_signal_to_every_process_and_thaws(unique: str) -> None:
    unit = f"slotmgr-{unique}.service"
    out, ready = WORK / f"{unique}.usr1", WORK / f"{unique}.ready"
    job = start_cli(
        "run", "--job-id", unique, "--", sys.executable, "-c", CATCHER, str(out), str(ready)
    )
    try:
        wait_until(
            lambda: Path(f"{ready}.child").exists() and Path(f"{ready}.parent").exists(),
            what="both processes",
        )
        killed = run_cli("kill", unit, "-s", "USR1")
        assert killed.returncode == 0, killed.stderr
        assert killed.stdout.strip() == (
            f"sent SIGUSR1 to every process of job {unique} ({unit}), while frozen"
        )
        wait_until(
            lambda: out.exists() and {"child", "parent"} <= set(out.read_text().split()),
            timeout=20,
            what="SIGUSR1 in both processes",
        )
        assert systemctl_show(unit, "FreezerState", "ActiveState") == {
            "FreezerState": "running",
            "ActiveState": "active",
        }
    finally:
        run_cli("stop", unique, "--grace", "0")
        job.communicate(timeout=120)


# Counts what each of its two processes receives: the signals are blocked
# and taken one by one with sigwaitinfo(), so a real-time signal sent twice
# is counted twice (standard ones merge only while both are pending).
COUNTER = textwrap.dedent("""
    import os, signal, sys
    out, ready = sys.argv[1], sys.argv[2]
    sigs = {signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGRTMIN + 3, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    name = "child" if os.fork() == 0 else "parent"
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    open(f"{ready}.{name}", "w").close()
    while True:
        os.write(fd, f"{name} {signal.sigwaitinfo(sigs).si_signo}\\n".encode())
""")
ROUNDS = 6  # 24 `slotmgr kill`s per job: a forwarding shim would double each one


def counts(out: Path) -> dict[tuple[str, int], int]:
    found: dict[tuple[str, int], int] = {}
    for line in out.read_text().splitlines() if out.exists() else []:
        who, signo = line.split()
        found[who, int(signo)] = found.get((who, int(signo)), 0) + 1
    return found


def _init_variants() -> list[tuple[str, ...]]:
    # The default init, and catatonit where the default is pidshim (a Landlock
    # scope, Linux 6.12: the 257 guest).
    from slotmgr.pidshim import LANDLOCK_SCOPE_ABI, landlock_abi

    return [(), ("--no-landlock",)] if landlock_abi() >= LANDLOCK_SCOPE_ABI else [()]


@pytest.mark.parametrize("init_options", _init_variants())
def test_every_signal_reaches_every_process_exactly_once(
    unique: str, init_options: tuple[str, ...]
) -> None:
    """slotmgr kill, and stop's SIGTERM, reach each process of the job once:
    not again through the PID-namespace init (257) or the process outside the
    namespace in front of it (252)."""
    unit = f"slotmgr-{unique}.service"
    out, ready = WORK / f"{unique}.count", WORK / f"{unique}.ready"
    job = start_cli(
        "run",
        "--job-id",
        unique,
        *init_options,
        "--",
        sys.executable,
        "-c",
        COUNTER,
        str(out),
        str(ready),
    )
    signals = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGRTMIN + 3]
    try:
        wait_until(
            lambda: Path(f"{ready}.child").exists() and Path(f"{ready}.parent").exists(),
            what="both processes",
        )
        for done in range(1, ROUNDS + 1):
            for signum in signals:
                killed = run_cli("kill", unique, "-s", str(int(signum)))
                assert killed.returncode == 0, killed.stderr
                wait_until(
                    lambda s=int(signum), n=done: all(
                        counts(out).get((who, s), 0) >= n for who in ("parent", "child")
                    ),
                    timeout=20,
                    what=f"round {done} of signal {int(signum)}",
                )
        time.sleep(2)  # a late second copy would show now
        assert counts(out) == {
            (who, int(s)): ROUNDS for who in ("parent", "child") for s in signals
        }
        # stop: SIGTERM once to each (they take it and go on), then SIGKILL.
        stopped = run_cli("stop", unique, "--grace", "3")
        assert stopped.returncode == 0 and "killed with SIGKILL" in stopped.stdout, stopped.stdout
        final = counts(out)
        assert [final.get((who, int(signal.SIGTERM))) for who in ("parent", "child")] == [1, 1]
    finally:
        if job.poll() is None:
            run_cli("stop", unique, "--grace", "0")
        job.communicate(timeout=120)
    assert job.returncode == 137
    assert not cgroup_dir(unit).exists()


# -- what makes a job a job -------------------------------------------------------------


def journal_of(job_id: str) -> str:
    return subprocess.run(
        ["journalctl", "--no-pager", "-o", "cat", f"SLOTMGR_JOB={job_id}"],
        capture_output=True,
        text=True,
    ).stdout


def test_a_job_is_known_by_its_marker_whatever_its_unit_is_named(unique: str) -> None:
    unit, scope = f"ux-{unique}.service", f"ux-{unique}s.scope"
    fake = f"slotmgr-{unique}f.service"
    job = start_cli(
        "run",
        "--unit",
        unit,
        "--job-id",
        unique,
        "--",
        "sh",
        "-c",
        f"logger -t slotmgr-test hello-{unique}; exec sleep 600",
    )
    scoped = start_cli(
        "run", "--scope", "--unit", scope, "--job-id", f"{unique}s", "--", "sleep", "600"
    )
    # A unit that slotmgr did not make, named and described like a job.
    subprocess.run(
        [
            "systemd-run",
            "--quiet",
            "--unit",
            fake,
            "--slice",
            "slotmgr.slice",
            "--description",
            f"slotmgr job {unique}f: sleep 600",
            "sleep",
            "600",
        ],
        check=True,
    )
    try:
        wait_until(lambda: unit_active(unit) and unit_active(scope), what="both jobs")
        listed = {j["job_id"]: j for j in json.loads(run_cli("list", "--json").stdout)}
        assert listed[unique]["unit"] == unit and listed[f"{unique}s"]["unit"] == scope
        assert listed[f"{unique}s"]["command"] == ["sleep", "600"]
        assert f"{unique}f" not in listed
        for arg in (unique, unit):
            status = run_cli("status", arg)
            assert status.returncode == 0, status.stderr
            assert f"Job {unique} ({unit})" in status.stdout
        assert f"Job {unique}s ({scope})" in run_cli("status", f"{unique}s").stdout
        # The marker tags the job's log (journald reads it for the unit's
        # processes); 257 tags systemd's own messages about the unit too.
        wait_until(lambda: f"hello-{unique}" in journal_of(unique), timeout=30, what="its log")
        if systemd_version() >= 257:
            assert f"Started {unit}" in journal_of(unique)

        for args in (["status", fake], ["stop", fake], ["kill", fake, "-s", "KILL"]):
            out = run_cli(*args)
            assert out.returncode == USAGE, (args, out.stderr)
            assert f"'{fake}' is not a slotmgr job" in one_error_line(out)
        out = run_cli("stop", f"{unique}f")
        assert out.returncode == USAGE and f"no such job '{unique}f'" in one_error_line(out)
        assert unit_active(fake)

        stopped = run_cli("stop", unit)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == f"job {unique} ({unit}) stopped"
        assert run_cli("stop", scope).returncode == 0
    finally:
        subprocess.run(["systemctl", "stop", fake], check=False)
        for job_id in (unique, f"{unique}s"):
            run_cli("stop", job_id, "--grace", "0")
        job.communicate(timeout=120)
        scoped.communicate(timeout=120)
    finished = run_cli("status", unit)
    assert finished.returncode == 0, finished.stderr
    assert f"Job {unique} ({unit}) finished" in finished.stdout
    assert "Result:      cancelled, exit status 143" in finished.stdout
    assert record_of(unique)["unit"] == unit


# -- adopt --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice() -> pwd.struct_passwd:
    return ensure_user("slotalice")


@pytest.fixture(scope="module")
def bob() -> pwd.struct_passwd:
    return ensure_user("slotbob")


def cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text().strip()


def test_adopt_moves_the_jobs_users_process_into_the_job(
    unique: str, alice: pwd.struct_passwd
) -> None:
    unit = f"slotmgr-{unique}.service"
    job = start_cli("run", "--job-id", unique, "--uid", alice.pw_name, "--", "sleep", "600")
    agent = subprocess.Popen(
        ["sleep", "1000"], user=alice.pw_uid, group=alice.pw_gid, extra_groups=[]
    )
    try:
        wait_until(lambda: unit_active(unit), what=unit)
        assert unit not in cgroup_of(agent.pid)
        out = run_cli("adopt", unique, str(agent.pid))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"adopted {agent.pid} into job {unique} ({unit})"
        assert cgroup_of(agent.pid) == f"0::/slotmgr.slice/{unit}"
        again = run_cli("adopt", unique, str(agent.pid))
        assert again.returncode == 0 and "already in job" in again.stdout
        # The adopted process now ends with the job.
        assert run_cli("stop", unique, "--grace", "10").returncode == 0
        agent.wait(timeout=10)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        run_cli("stop", unique, "--grace", "0")
        job.communicate(timeout=120)


def test_adopt_refuses_others_processes_and_processes_of_other_jobs(
    unique: str, alice: pwd.struct_passwd, bob: pwd.struct_passwd
) -> None:
    unit = f"slotmgr-{unique}.service"
    other = f"{unique}o"
    job = start_cli("run", "--job-id", unique, "--uid", alice.pw_name, "--", "sleep", "600")
    other_job = start_cli("run", "--job-id", other, "--uid", alice.pw_name, "--", "sleep", "600")
    bobs = subprocess.Popen(["sleep", "1000"], user=bob.pw_uid, group=bob.pw_gid, extra_groups=[])
    roots = subprocess.Popen(["sleep", "1000"])
    try:
        wait_until(
            lambda: unit_active(unit) and unit_active(f"slotmgr-{other}.service"), what="both jobs"
        )
        for pid, owner in ((bobs.pid, "slotbob"), (roots.pid, "root")):
            out = run_cli("adopt", unique, str(pid))
            assert out.returncode == NO_PERMISSION, out.stderr
            assert f"belongs to {owner} (uid " in one_error_line(out)
            assert f"job {unique} to slotalice" in out.stderr
            assert unit not in cgroup_of(pid)
        in_other = [
            int(p)
            for p in (
                Path("/sys/fs/cgroup/slotmgr.slice") / f"slotmgr-{other}.service" / "cgroup.procs"
            )
            .read_text()
            .split()
        ]
        sleeper = next(
            p for p in in_other if Path(f"/proc/{p}/comm").read_text().strip() == "sleep"
        )
        out = run_cli("adopt", unique, str(sleeper))
        assert out.returncode == NO_PERMISSION
        assert f"is already in slotmgr job {other}" in one_error_line(out)
        dead = subprocess.Popen(["true"])
        dead.wait()
        out = run_cli("adopt", unique, str(dead.pid))
        assert out.returncode == USAGE and f"no process {dead.pid}" in one_error_line(out)
        # One bad PID among good ones: nothing at all is moved.
        mine = subprocess.Popen(
            ["sleep", "1000"], user=alice.pw_uid, group=alice.pw_gid, extra_groups=[]
        )
        out = run_cli("adopt", unique, str(mine.pid), str(bobs.pid))
        assert out.returncode == NO_PERMISSION
        assert unit not in cgroup_of(mine.pid)
        mine.kill()
        mine.wait()
    finally:
        for proc in (bobs, roots):
            proc.kill()
            proc.wait()
        run_cli("stop", unique, "--grace", "0")
        run_cli("stop", other, "--grace", "0")
        job.communicate(timeout=120)
        other_job.communicate(timeout=120)


# -- who may do what -------------------------------------------------------------------


def test_non_root_sees_only_their_own_system_jobs_and_may_not_control_them(
    unique: str, alice: pwd.struct_passwd
) -> None:
    mine, roots = f"{unique}a", f"{unique}r"
    jobs = [
        start_cli("run", "--job-id", mine, "--uid", alice.pw_name, "--", "sleep", "600"),
        start_cli("run", "--job-id", roots, "--", "sleep", "600"),
    ]
    try:
        wait_until(
            lambda: (
                unit_active(f"slotmgr-{mine}.service") and unit_active(f"slotmgr-{roots}.service")
            ),
            what="both jobs",
        )
        listed = slotmgr_as(alice, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        ids = {j["job_id"] for j in json.loads(listed.stdout)}
        assert mine in ids and roots not in ids
        assert all(j["user"] == "slotalice" for j in json.loads(listed.stdout))
        assert slotmgr_as(alice, "status", mine).returncode == 0

        out = slotmgr_as(alice, "status", roots)
        assert out.returncode == NO_PERMISSION
        assert one_error_line(out).endswith(
            f"job {roots} belongs to root: you may status only your own jobs"
        )
        for args in (
            ["stop", mine],
            ["kill", mine, "-s", "KILL"],
            ["adopt", mine, "4242"],
            ["stop", roots],
        ):
            out = slotmgr_as(alice, *args)
            assert out.returncode == NO_PERMISSION, (args, out.stderr)
            line = one_error_line(out)
            if args[1] == mine:
                assert f"{args[0]} of job {mine} needs root" in line
                assert "slotmgr --user run" in line
        assert unit_active(f"slotmgr-{mine}.service")
    finally:
        for job_id in (mine, roots):
            run_cli("stop", job_id, "--grace", "0")
        for job in jobs:
            job.communicate(timeout=120)


def test_user_manager_jobs_are_their_owners_to_control(
    unique: str, alice: pwd.struct_passwd, bob: pwd.struct_passwd
) -> None:
    """--user: the job runs under the caller's own user manager; the owner
    lists, kills and stops it there, and another user cannot reach it."""
    start_user_manager(alice)
    start_user_manager(bob)
    unit = f"slotmgr-{unique}.service"
    job = start_slotmgr_as(
        alice, "--user", "run", "--job-id", unique, "--no-private-pids", "--", "sleep", "600"
    )
    try:
        wait_until(
            lambda: any(
                j["job_id"] == unique
                for j in json.loads(slotmgr_as(alice, "--user", "list", "--json").stdout or "[]")
            ),
            what="alice's job",
        )
        listed = json.loads(slotmgr_as(alice, "--user", "list", "--json").stdout)
        assert [j["user"] for j in listed if j["job_id"] == unique] == ["slotalice"]
        # Not a system job: root's list does not have it.
        assert unique not in run_cli("list").stdout
        out = slotmgr_as(bob, "--user", "stop", unique)
        assert out.returncode == USAGE and "no such job" in one_error_line(out)
        out = slotmgr_as(
            bob,
            "--user",
            "stop",
            unique,
            env=user_env(bob, XDG_RUNTIME_DIR=f"/run/user/{alice.pw_uid}"),
        )
        assert out.returncode == 69
        assert f"/run/user/{alice.pw_uid}/systemd/private" in one_error_line(out)
        killed = slotmgr_as(alice, "--user", "kill", unique, "-s", "USR2")
        assert killed.returncode == 0, killed.stderr
        assert f"sent SIGUSR2 to every process of job {unique} ({unit})" in killed.stdout
        _out, err = job.communicate(timeout=120)
        assert job.returncode == 128 + signal.SIGUSR2, err
        history = json.loads(slotmgr_as(alice, "--user", "history", "--json").stdout)
        assert [r["exit_status"] for r in history if r["job_id"] == unique] == [140]
    finally:
        if job.poll() is None:
            slotmgr_as(alice, "--user", "stop", unique, "--grace", "0")
            job.communicate(timeout=120)
