"""`slotmgr run` end to end, as a batch system runs it (issue: slotmgr run)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from slotmgr.history.record import validate

from .conftest import (
    REPO,
    job_sleeps,
    processes_with_marker,
    run_cli,
    start_cli,
    systemctl_show,
    unit_active,
    wait_until,
)

WORK = Path("/run/slotmgr-tests")  # not /tmp: each job has its own /tmp

MPD = REPO / "examples" / "mpd_daemon.py"  # double-forks, world-writable socket in /tmp


@pytest.fixture(scope="module")
def work() -> Path:
    WORK.mkdir(exist_ok=True)
    return WORK


def mpd_job(marker: str, go_file: Path) -> list[str]:
    script = (
        f"{sys.executable} {MPD} {marker}; "
        f"while [ ! -e /tmp/mpd-{marker}.ready ]; do sleep 0.1; done; "
        "echo TMP:; ls /tmp; echo PS:; ps -eo pid=,args=; "
        f"while [ ! -e {go_file} ]; do sleep 0.1; done"
    )
    return ["sh", "-c", script]


def mpd_daemons(marker: str) -> list[int]:
    """The processes running mpd_daemon.py (the daemon and, for a moment, its
    forks); one that exits while being read is left out."""
    found = []
    for pid in processes_with_marker(marker):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3]
        except OSError:
            continue
        if args == [bytes(MPD), marker.encode()]:
            found.append(pid)
    return found


def wait_for_ready_daemon(marker: str) -> int:
    """The daemon's PID once its forks have exited and it has made its ready
    file, seen through its own root (the job's private /tmp). One snapshot of
    /proc serves both checks: a fork may exit between two."""
    found: list[int] = []

    def one_ready_daemon() -> bool:
        found[:] = mpd_daemons(marker)
        return len(found) == 1 and Path(f"/proc/{found[0]}/root/tmp/mpd-{marker}.ready").exists()

    wait_until(one_ready_daemon, what="one MPD daemon, ready")
    return found[0]


def test_mpd_case_is_contained_and_cleaned_up(work: Path, unique: str) -> None:
    go = work / f"{unique}.go"
    unit = f"slotmgr-{unique}.service"
    job = start_cli("run", "--job-id", unique, "--", *mpd_job(unique, go))
    try:
        wait_until(
            lambda: bool(processes_with_marker(unique)) and unit_active(unit),
            what="the job and its daemon",
        )
        # A person sees the job with systemctl, with a description that says what it is.
        status = subprocess.run(
            ["systemctl", "status", "--no-pager", unit], capture_output=True, text=True
        ).stdout
        assert unit in status and f"slotmgr job {unique}" in status and "active (running)" in status
        assert systemctl_show(unit, "Transient", "Slice") == {
            "Transient": "yes",
            "Slice": "slotmgr.slice",
        }

        # The daemon escaped its parent but not the unit's cgroup.
        daemon = wait_for_ready_daemon(unique)
        cgroup = Path(f"/proc/{daemon}/cgroup").read_text().strip()
        assert cgroup == f"0::/slotmgr.slice/{unit}"
        # Its world-writable socket is in the job's own /tmp, not the node's...
        assert not Path(f"/tmp/mpd-{unique}.sock").exists()
        # ...nor in a second job's.
        other = run_cli("run", "--quiet", "--", "ls", "-a", "/tmp")
        assert other.returncode == 0, other.stderr
        assert f"mpd-{unique}" not in other.stdout
    finally:
        go.touch()
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    listed_tmp = out.split("TMP:")[1].split("PS:")[0]
    assert f"mpd-{unique}.sock" in listed_tmp
    # Inside, the job saw only its own processes, with the init as PID 1.
    ps_lines = [line.split(None, 1) for line in out.split("PS:")[1].strip().splitlines()]
    pids = {int(pid): args for pid, args in ps_lines}
    assert "pidshim.py" in pids[1] or pids[1].startswith(
        ("/usr/bin/catatonit --", "/usr/libexec/catatonit/catatonit --")
    )
    assert all("systemd" not in args and "pytest" not in args for args in pids.values()), pids
    assert len(pids) <= 6, pids
    # When the job ended, nothing of it survived: no process, no cgroup.
    wait_until(lambda: not processes_with_marker(unique), timeout=10, what="no leftovers")
    assert not Path(f"/sys/fs/cgroup/slotmgr.slice/{unit}").exists()
    assert "Job " + unique in err and "finished: success" in err


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -TERM $$", 143),
        ("kill -KILL $$", 137),
    ],
)
def test_exit_status_passes_through(script: str, expected: int) -> None:
    out = run_cli("run", "--quiet", "--", "sh", "-c", script)
    assert out.returncode == expected, out.stderr


@pytest.mark.parametrize(
    "isolation", [[], ["--no-private-pids", "--no-private-tmp"]], ids=["isolated", "plain"]
)
def test_stdio_is_the_callers_own(isolation: list[str]) -> None:
    out = run_cli(
        "run",
        "--quiet",
        *isolation,
        "--",
        "sh",
        "-c",
        "cat; echo to-stdout; echo to-stderr >&2",
        input="from-stdin\n",
    )
    assert out.returncode == 0
    assert out.stdout == "from-stdin\nto-stdout\n"
    assert out.stderr == "to-stderr\n"


def test_a_stop_at_the_very_start_of_a_job_is_not_lost(unique: str) -> None:
    # SIGTERM to slotmgr as soon as systemd says the job is active, while its PID-namespace
    # init is still starting: the stop must end the job, by SIGTERM (143) or, on 257 when
    # the init is not up yet, by systemd's SIGKILL (137), and be reported as such; not be
    # lost until the stop timeout (124), nor be reported as a success (0: systemd ran the
    # stop hook before it had taken the main process's end in).
    for attempt in range(3):
        job_id = f"{unique}{attempt}"
        job = start_cli("run", "--job-id", job_id, "--", "sleep", "600")
        unit = f"slotmgr-{job_id}.service"
        wait_until(lambda unit=unit: unit_active(unit), interval=0.02, what="the job")
        job.send_signal(signal.SIGTERM)
        _out, err = job.communicate(timeout=120)
        assert job.returncode in (143, 137), err
        assert (
            f"finished: cancelled (signal SIGTERM to slotmgr run), exit status {job.returncode}"
        ) in err


def test_sigterm_to_slotmgr_stops_every_process(work: Path, unique: str) -> None:
    job = start_cli(
        "run", "--job-id", unique, "--", "sh", "-c", f"{sys.executable} {MPD} {unique}; sleep 600"
    )
    unit = f"slotmgr-{unique}.service"
    wait_for_ready_daemon(unique)
    assert unit_active(unit)
    job.send_signal(signal.SIGTERM)
    _out, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
    assert "stopping" in err
    assert processes_with_marker(unique) == []
    assert systemctl_show(unit, "ActiveState")["ActiveState"] in ("inactive", "failed")


def test_signals_are_forwarded_to_the_job_through_the_init(work: Path, unique: str) -> None:
    ready = work / f"{unique}.ready"  # written once the job's trap is set
    job = start_cli(
        "run",
        "--job-id",
        unique,
        "--",
        "sh",
        "-c",
        f'trap "exit 42" TERM; touch {ready}; sleep 600 & wait',
    )
    wait_until(ready.exists, what="the job's trap")
    job.send_signal(signal.SIGTERM)
    _out, err = job.communicate(timeout=120)
    assert job.returncode == 42, err


def json_of(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert validate(record) == [], validate(record)
    return record


def test_memory_max_ends_as_oom_kill() -> None:
    out = run_cli(
        "run",
        "--memory-max",
        "48M",
        "--json",
        "-",
        "--",
        sys.executable,
        "-c",
        "b = bytearray(400 * 1024 * 1024); print(len(b))",
    )
    assert out.returncode == 125, out.stderr
    record = json_of(out)
    assert record["result"] == "oom-kill"
    assert "finished: oom-kill" in out.stderr


def test_runtime_max_ends_as_timeout() -> None:
    out = run_cli("run", "--runtime-max", "2s", "--json", "-", "--", "sleep", "60")
    assert out.returncode == 124, out.stderr
    record = json_of(out)
    assert record["result"] == "timeout"
    assert 1_500_000 <= record["wall_time_usec"] <= 30_000_000


BURNER = textwrap.dedent("""
    import os, time
    # 200 short-lived children, each burning CPU. The job measures them itself
    # the way a shell's `time` does: each child's whole rusage from wait4(),
    # which counts its exit too, plus this process's own CPU time.
    total = 0.0
    running = 0

    def reap():
        _pid, _status, usage = os.wait4(-1, 0)
        return usage.ru_utime + usage.ru_stime

    for _ in range(200):
        if os.fork() == 0:
            start = time.process_time()
            while time.process_time() - start < 0.06:
                pass
            os._exit(0)
        running += 1
        if running >= 4:
            total += reap()
            running -= 1
    while running:
        total += reap()
        running -= 1
    print(total + time.process_time())
""")


def test_cpu_time_of_200_short_lived_children_is_accounted() -> None:
    # Without the PID-namespace init, whose own start-up the job cannot measure:
    # what is compared is exactly the job and its short-lived children.
    out = run_cli(
        "run", "--no-private-pids", "--json", "-", "--", sys.executable, "-c", BURNER, timeout=600
    )
    assert out.returncode == 0, out.stderr
    measured_usec = float(out.stdout.splitlines()[0]) * 1e6
    record = json_of(out)
    reported = record["cpu_usage_usec"]
    print(f"\nchildren measured {measured_usec / 1e6:.3f}s, slotmgr reported {reported / 1e6:.3f}s")
    assert abs(reported - measured_usec) <= 0.05 * measured_usec
    assert record["cpu_user_usec"] + record["cpu_system_usec"] == pytest.approx(reported, rel=0.05)


def test_block_io_is_accounted(scratch_mount: Path) -> None:
    target = scratch_mount / "io-test"
    script = (
        f"dd if=/dev/zero of={target} bs=1M count=32 oflag=direct status=none && "
        f"dd if={target} of=/dev/null bs=1M iflag=direct status=none"
    )
    out = run_cli("run", "--json", "-", "--", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    record = json_of(out)
    assert record["io_write_bytes"] >= 32 * 1024**2
    assert record["io_read_bytes"] >= 32 * 1024**2
    assert "IO:" in out.stderr


def test_json_file_and_summary_fields(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    out = run_cli(
        "run",
        "--json",
        str(path),
        "--cpu-weight",
        "50",
        "--tasks-max",
        "64",
        "--",
        "sh",
        "-c",
        "echo hi",
    )
    assert out.returncode == 0 and out.stdout == "hi\n"
    record = json.loads(path.read_text())
    assert validate(record) == []
    assert record["command"] == ["sh", "-c", "echo hi"]
    assert record["memory_peak_bytes"] > 0
    assert record["memory_peak_source"] == "cgroup memory.peak"
    assert record["user"] == "root" and record["slice"] == "slotmgr.slice"
    for label in ("Wall time", "CPU time", "Memory peak", "IO:", "Tasks peak", "IP:"):
        assert label in out.stderr


def test_limits_reach_the_unit(unique: str) -> None:
    unit = f"slotmgr-{unique}.service"
    job = start_cli(
        "run",
        "--job-id",
        unique,
        "--memory-max",
        "300M",
        "--memory-high",
        "200M",
        "--cpu-quota",
        "50%",
        "--cpu-weight",
        "77",
        "--cpus",
        "0",
        "--io-weight",
        "33",
        "--tasks-max",
        "99",
        "--runtime-max",
        "5min",
        "-p",
        "MemoryLow=1M",
        "-E",
        "FOO=bar baz",
        "--working-directory",
        "/var",
        "--",
        "sleep",
        "600",
    )
    try:
        wait_until(lambda: unit_active(unit), what=unit)
        shown = systemctl_show(
            unit,
            "MemoryMax",
            "MemoryHigh",
            "CPUQuotaPerSecUSec",
            "CPUWeight",
            "AllowedCPUs",
            "IOWeight",
            "TasksMax",
            "RuntimeMaxUSec",
            "MemoryLow",
            "WorkingDirectory",
            "Environment",
        )
        assert shown["MemoryMax"] == str(300 * 1024**2)
        assert shown["MemoryHigh"] == str(200 * 1024**2)
        assert shown["CPUQuotaPerSecUSec"] == "500ms"
        assert (shown["CPUWeight"], shown["AllowedCPUs"], shown["IOWeight"]) == ("77", "0", "33")
        assert shown["TasksMax"] == "99" and shown["RuntimeMaxUSec"] == "5min"
        # "-": a job that removes its directory does not cost its record.
        assert shown["MemoryLow"] == str(1024**2) and shown["WorkingDirectory"] == "!/var"
        assert shown["Environment"] == ""  # the environment never reaches the unit itself
        # The job's own sleep (the shim's command line names it too, and env's
        # before it execs sleep): the shim never gets the job's variables.
        wait_until(lambda: job_sleeps(unit), what="the job's sleep")
        environ = Path(f"/proc/{job_sleeps(unit)[0]}/environ").read_bytes().split(b"\0")
        assert b"FOO=bar baz" in environ
    finally:
        job.send_signal(signal.SIGTERM)
        _out, err = job.communicate(timeout=120)
    # Stopped by its SIGTERM (143), not by the stop timeout (124) nor anything else.
    assert job.returncode == 143, err


def test_uid_runs_the_job_as_that_user_without_capabilities() -> None:
    out = run_cli(
        "run",
        "--quiet",
        "--uid",
        "nobody",
        "--",
        "sh",
        "-c",
        "id -un; echo pid=$$; grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status",
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "nobody"
    assert lines[1] == "pid=2"  # in its own PID namespace, under the init
    # On 252 the shim was given CAP_SYS_ADMIN to make that namespace; none is left.
    assert [line.split()[1] for line in lines[2:]] == ["0000000000000000"] * 3, lines


def test_dollar_signs_reach_the_job_unexpanded() -> None:
    out = run_cli("run", "--quiet", "--", "sh", "-c", "echo \"$0\" '$HOME'")
    assert out.returncode == 0
    assert out.stdout.strip() == "sh $HOME"


def test_environment_cannot_reach_the_root_stop_hook(unique: str) -> None:
    # The job's PATH (and ENV, which some shells read at start) must not make
    # the root ExecStopPost= hook run the job's own systemctl, sync or mv.
    evil = WORK / unique
    evil.mkdir(parents=True)
    pwned = WORK / f"{unique}-pwned"
    for tool in ("systemctl", "sync", "mv", "sh"):
        (evil / tool).write_text(f'#!/bin/sh\n[ "$(id -u)" = 0 ] && touch {pwned}\n')
        (evil / tool).chmod(0o755)
    (evil / "env.sh").write_text(f"touch {pwned}\n")
    out = run_cli(
        "run",
        "--quiet",
        "--json",
        "-",
        "--job-id",
        unique,
        "-E",
        f"PATH={evil}:/usr/bin:/bin",
        "-E",
        f"ENV={evil}/env.sh",
        "--",
        "true",
    )
    assert out.returncode == 0, out.stderr
    assert not pwned.exists()
    rec = json.loads(out.stdout)
    # The hook ran systemd's systemctl: its view (the main process's start
    # and end) is in the record.
    assert rec["result"] == "success" and rec["wall_time_usec"] > 0


def test_scope_job_is_isolated_accounted_and_passes_its_status(unique: str) -> None:
    unit = f"slotmgr-{unique}.scope"
    out = run_cli(
        "run",
        "--scope",
        "--job-id",
        unique,
        "--memory-max",
        "256M",
        "--json",
        "-",
        "--",
        "sh",
        "-c",
        f"touch /tmp/{unique}; echo pid=$$; cat /proc/self/cgroup; exit 7",
    )
    assert out.returncode == 7, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "pid=2"  # under the init, in its own PID namespace
    assert lines[1] == f"0::/slotmgr.slice/{unit}"  # in the scope from its first instruction
    assert not Path(f"/tmp/{unique}").exists()  # its /tmp was its own
    record = json_of(out)
    assert (record["unit"], record["result"], record["exit_status"]) == (unit, "exit-code", 7)
    assert record["cpu_usage_usec"] > 0 and record["memory_peak_bytes"] > 0
    assert "finished: exit-code, exit status 7" in out.stderr
