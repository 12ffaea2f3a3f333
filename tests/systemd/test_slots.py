"""Batch slots on the real systemd (issue: slots): the slot's slice carries the
limits, and a job cannot get past them whatever it asks for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .accounts import as_user, ensure_user, slotmgr_as, start_user_manager, user_env
from .conftest import (
    processes_with_marker,
    run_cli,
    start_cli,
    systemctl_show,
    unit_active,
    wait_until,
)

WORK = Path("/run/slotmgr-tests")
NODE_CONF = Path("/etc/slotmgr/slots.conf")
JOB_OOM = 125
SLOT_BUSY = 75
USAGE = 64


@pytest.fixture
def slots_conf() -> Iterator[Callable[[str], dict[str, str]]]:
    """Write the node's own slots file (the guest is throwaway); put back what
    was there after the test. As root slotmgr reads only this file."""
    WORK.mkdir(exist_ok=True)
    before = NODE_CONF.read_bytes() if NODE_CONF.exists() else None
    NODE_CONF.parent.mkdir(parents=True, exist_ok=True)

    def write(text: str) -> dict[str, str]:
        NODE_CONF.write_text(textwrap.dedent(text))
        NODE_CONF.chmod(0o644)
        return dict(os.environ)

    yield write
    if before is None:
        NODE_CONF.unlink(missing_ok=True)
    else:
        NODE_CONF.write_bytes(before)


# Touches memory 4 MiB at a time up to 400 MiB, noting each step on disk, so
# the test sees how far the job got before it was killed.
GREEDY = textwrap.dedent("""
    import sys
    chunks = []
    for step in range(1, 101):
        chunks.append(bytearray(4 * 1024 * 1024))
        with open(sys.argv[1], "w") as f:
            f.write(str(step * 4))
    print("allocated 400 MiB")
""")


def test_a_job_cannot_exceed_its_slots_memory_whatever_it_asks(
    unique: str, slots_conf: Callable[[str], dict[str, str]]
) -> None:
    env = slots_conf("""
        [slot1]
        MemoryMax = 64M
        MemorySwapMax = 0
        """)
    progress = WORK / f"{unique}.progress"
    # The recorder then runs in the full slot, reclaiming as it loads: slow in
    # an emulated guest, but within slotmgr's own stop timeout (a job may not set one).
    # The job sets no memory limit of its own (asking for more than the slot
    # has is refused, see below): the slot's slice alone bounds it.
    out = run_cli(
        "run",
        "--slot",
        "1",
        "--job-id",
        unique,
        "--json",
        "-",
        "--",
        sys.executable,
        "-c",
        GREEDY,
        str(progress),
        env=env,
    )
    assert out.returncode == JOB_OOM, out.stderr
    *job_output, record_line = out.stdout.strip().splitlines()
    assert "allocated 400 MiB" not in job_output
    record = json.loads(record_line)
    assert record["result"] == "oom-kill"
    assert (record["slot"], record["slice"]) == ("1", "slotmgr-slot1.slice")
    # The kernel may overshoot a limit by a few charge batches before it reclaims.
    assert 32 * 1024**2 <= record["memory_peak_bytes"] <= 66 * 1024**2
    reached = int(progress.read_text())
    # Killed past what the slot allows, not earlier and not later.
    assert 32 <= reached <= 64, reached
    assert systemctl_show("slotmgr-slot1.slice", "MemoryMax", "MemorySwapMax") == {
        "MemoryMax": str(64 * 1024**2),
        "MemorySwapMax": "0",
    }
    assert (
        Path("/sys/fs/cgroup/slotmgr.slice/slotmgr-slot1.slice/memory.max").read_text()
        == f"{64 * 1024**2}\n"
    )


def test_slot_limits_reach_the_slice_and_follow_edits_of_the_file(
    slots_conf: Callable[[str], dict[str, str]],
) -> None:
    env = slots_conf("""
        [slot2]
        AllowedCPUs = 1
        TasksMax = 40
        IOWeight = 30
        CPUWeight = 50
        MemoryHigh = 900M
        """)
    # The job asks for no CPUs; the slot has only CPU 1.
    out = run_cli(
        "run",
        "--quiet",
        "--slot",
        "2",
        "--",
        sys.executable,
        "-c",
        "import os; print(sorted(os.sched_getaffinity(0)))",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1]"
    shown = systemctl_show(
        "slotmgr-slot2.slice",
        "AllowedCPUs",
        "TasksMax",
        "IOWeight",
        "CPUWeight",
        "MemoryHigh",
        "Slice",
        "ActiveState",
    )
    assert shown == {
        "AllowedCPUs": "1",
        "TasksMax": "40",
        "IOWeight": "30",
        "CPUWeight": "50",
        "MemoryHigh": str(900 * 1024**2),
        "Slice": "slotmgr.slice",
        "ActiveState": "active",
    }
    # An edited file takes effect at the next job; a key left out is lifted.
    env = slots_conf("""
        [slot2]
        AllowedCPUs = 0-1
        IOWeight = 60
        """)
    out = run_cli("run", "--quiet", "--slot", "2", "--", "true", env=env)
    assert out.returncode == 0, out.stderr
    shown = systemctl_show(
        "slotmgr-slot2.slice", "AllowedCPUs", "TasksMax", "IOWeight", "CPUWeight", "MemoryHigh"
    )
    assert shown == {
        "AllowedCPUs": "0-1",
        "TasksMax": "infinity",
        "IOWeight": "60",
        "CPUWeight": "[not set]",
        "MemoryHigh": "infinity",
    }


def test_tasks_max_of_the_slot_binds_the_job(slots_conf: Callable[[str], dict[str, str]]) -> None:
    env = slots_conf("""
        [slot4]
        TasksMax = 12
        """)
    script = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 40:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "except OSError:\n"
        "    pass\n"
        "print(n, flush=True)\n"
        "os.killpg(0, 9)\n"
    )
    out = run_cli(
        "run",
        "--quiet",
        "--slot",
        "4",
        "--tasks-max",
        "12",
        "--",
        sys.executable,
        "-c",
        script,
        env=env,
    )
    forked = int(out.stdout.strip().splitlines()[0])
    # The job's own processes (its init included) count against the slot's 12.
    assert 5 <= forked < 12, out.stdout


def test_slots_command_shows_limits_and_use_including_swap(
    unique: str, slots_conf: Callable[[str], dict[str, str]]
) -> None:
    env = slots_conf("""
        [slot3]
        MemoryMax = 256M
        TasksMax = 64

        [slot5]
        MemoryMax = 1G
        """)
    unit = f"slotmgr-{unique}.service"
    job = start_cli("run", "--slot", "3", "--job-id", unique, "--", "sleep", "600", env=env)
    try:
        wait_until(lambda: unit_active(unit), what=unit)
        out = run_cli("slots", "--json", env=env)
        assert out.returncode == 0, out.stderr
        by_slot = {s["slot"]: s for s in json.loads(out.stdout)}
        three = by_slot["3"]
        assert three["configured"] == {"MemoryMax": "256M", "TasksMax": "64"}
        assert three["active"] is True and three["jobs"] == 1
        assert three["memory_current_bytes"] > 0 and three["tasks_current"] >= 1
        assert three["memory_swap_bytes"] == 0  # read from memory.swap.current
        assert three["applied"]["memory.max"] == str(256 * 1024**2)
        assert three["applied"]["pids.max"] == "64"
        assert by_slot["5"]["jobs"] == 0
        table = run_cli("slots", env=env).stdout.splitlines()
        assert table[0].split() == [
            "SLOT",
            "SLICE",
            "JOBS",
            "MEMORY",
            "SWAP",
            "TASKS",
            "CPU",
            "CPUS",
            "LIMITS",
        ]
        assert table[1].split()[:3] == ["3", "slotmgr-slot3.slice", "1/1"]
        listed = {j["job_id"]: j for j in json.loads(run_cli("list", "--json").stdout)}
        assert listed[unique]["slot"] == "3"
    finally:
        job.send_signal(signal.SIGTERM)
        job.communicate(timeout=120)
    record = [
        r
        for r in json.loads(run_cli("history", "--slot", "3", "--json").stdout)
        if r["job_id"] == unique
    ]
    assert len(record) == 1 and record[0]["slot"] == "3"


def test_bad_slots_file_is_refused_before_any_unit(
    unique: str, slots_conf: Callable[[str], dict[str, str]]
) -> None:
    env = slots_conf("""
        [node]
        exclusive_cpus = yes
        [slot1]
        AllowedCPUs = 0-1
        [slot2]
        AllowedCPUs = 1
        """)
    out = run_cli("run", "--slot", "1", "--job-id", unique, "--", "true", env=env)
    assert out.returncode == 64
    assert out.stderr.strip() == (
        "slotmgr: error: /etc/slotmgr/slots.conf:7: [slot2] AllowedCPUs=1: CPUs 1 are also "
        "slot1's, and [node] exclusive_cpus = yes"
    )
    assert systemctl_show(f"slotmgr-{unique}.service", "LoadState")["LoadState"] == "not-found"


def test_as_root_slotmgr_slots_conf_is_ignored(
    unique: str, slots_conf: Callable[[str], dict[str, str]]
) -> None:
    """Which limits apply is the node admin's: a caller's environment cannot
    swap in its own slots file (issue: trust boundary, finding 8)."""
    env = slots_conf("""
        [slot1]
        MemoryMax = 64M
        """)
    mine = WORK / f"{unique}.mine.conf"
    mine.write_text("[slot1]\nMemoryMax = 8G\n[slot9]\n")
    env["SLOTMGR_SLOTS_CONF"] = str(mine)
    out = run_cli("run", "--quiet", "--slot", "1", "--", "true", env=env)
    assert out.returncode == 0, out.stderr
    assert systemctl_show("slotmgr-slot1.slice", "MemoryMax") == {"MemoryMax": str(64 * 1024**2)}
    out = run_cli("run", "--slot", "9", "--job-id", unique, "--", "true", env=env)
    assert (out.returncode, out.stderr) == (
        USAGE,
        "slotmgr: error: no slot 9 in /etc/slotmgr/slots.conf (slots: 1)\n",
    )
    slots_json = json.loads(run_cli("slots", "--json", env=env).stdout)
    assert [(s["slot"], s["configured"]) for s in slots_json] == [("1", {"MemoryMax": "64M"})]
    # A slots file others may write is no admin's: refused as a whole (78).
    NODE_CONF.chmod(0o666)
    out = run_cli("run", "--slot", "1", "--job-id", unique, "--", "true", env=env)
    assert out.returncode == 78 and "/etc/slotmgr/slots.conf is not root's alone" in out.stderr
    assert systemctl_show(f"slotmgr-{unique}.service", "LoadState")["LoadState"] == "not-found"


def test_a_job_asking_more_than_its_slot_is_refused_before_any_unit(
    unique: str, slots_conf: Callable[[str], dict[str, str]]
) -> None:
    env = slots_conf("""
        [slot2]
        MemoryMax = 1G
        AllowedCPUs = 1
        TasksMax = 40
        """)
    for args, message in [
        (["--memory-max", "4G"], "the job's MemoryMax=4G is above slot 2's MemoryMax=1G"),
        (["--cpus", "0"], "the job's AllowedCPUs=0 is outside slot 2's AllowedCPUs=1 (CPUs 0)"),
        (["--tasks-max", "1000"], "the job's TasksMax=1000 is above slot 2's TasksMax=40"),
        (
            ["-p", "MemoryMax=infinity"],
            "the job's MemoryMax=infinity is above slot 2's MemoryMax=1G",
        ),
    ]:
        out = run_cli("run", "--slot", "2", "--job-id", unique, *args, "--", "true", env=env)
        assert out.returncode == USAGE, out.stderr
        assert len(out.stderr.splitlines()) == 1, out.stderr
        assert out.stderr.startswith(f"slotmgr: error: {message} (hint: "), out.stderr
        assert systemctl_show(f"slotmgr-{unique}.service", "LoadState")["LoadState"] == "not-found"


def _wait_for_exit(
    launchers: list[subprocess.Popen[str]], timeout: float
) -> subprocess.Popen[str] | None:
    """The first launcher to end, or None if all still run after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for launcher in launchers:
            if launcher.poll() is not None:
                return launcher
        time.sleep(0.1)
    return None


def _stop(launchers: list[subprocess.Popen[str]]) -> None:
    for launcher in launchers:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
    for launcher in launchers:
        launcher.communicate(timeout=120)


def _running_in(slice_: str) -> list[str]:
    members = systemctl_show(slice_, "SliceOf")["SliceOf"].split()
    return sorted(u for u in members if unit_active(u))


def test_n_plus_one_jobs_at_once_into_a_slot_of_n_exactly_n_run(
    unique: str, slots_conf: Callable[[str], dict[str, str]]
) -> None:
    env = slots_conf("""
        [slot6]
        jobs = 2
        """)
    ids = [f"{unique}x{i}" for i in range(3)]
    # Three launchers ask for the slot's two places at the same moment.
    launchers = [
        start_cli("run", "--slot", "6", "--job-id", job, "--", "sleep", "300", env=env)
        for job in ids
    ]
    try:
        refused = _wait_for_exit(launchers, timeout=90)
        assert refused is not None, "no launcher was refused"
        _, err = refused.communicate(timeout=30)
        assert refused.returncode == SLOT_BUSY, err
        others = sorted(
            f"slotmgr-{job}.service"
            for job, launcher in zip(ids, launchers)
            if launcher is not refused
        )
        assert err == (
            f"slotmgr: error: slot 6 is full: it holds 2 jobs at a time, and "
            f"{others[0]}, {others[1]} run in it (hint: --wait-for-slot DURATION "
            "waits for a place)\n"
        )
        for unit in others:
            wait_until(lambda u=unit: unit_active(u), what=unit)
        assert _running_in("slotmgr-slot6.slice") == others
        assert _wait_for_exit([p for p in launchers if p is not refused], timeout=3) is None
        slot = {s["slot"]: s for s in json.loads(run_cli("slots", "--json", env=env).stdout)}["6"]
        assert (slot["jobs"], slot["jobs_max"]) == (2, 2)
    finally:
        _stop(launchers)
    lock = Path("/run/slotmgr/slot6.lock")
    assert oct(lock.stat().st_mode & 0o777) == "0o600" and lock.stat().st_uid == 0
    assert oct(lock.parent.stat().st_mode & 0o777) == "0o700"


def test_wait_for_slot_starts_once_the_running_job_ends(
    unique: str, slots_conf: Callable[[str], dict[str, str]]
) -> None:
    env = slots_conf("""
        [slot7]
        """)
    first_unit = f"slotmgr-{unique}a.service"
    first = start_cli("run", "--slot", "7", "--job-id", f"{unique}a", "--", "sleep", "300", env=env)
    waiter = None
    try:
        wait_until(lambda: unit_active(first_unit), timeout=60, what=first_unit)
        waiter = start_cli(
            "run",
            "--slot",
            "7",
            "--wait-for-slot",
            "10min",
            "--job-id",
            f"{unique}b",
            "--json",
            "-",
            "--",
            "sh",
            "-c",
            "echo second ran",
            env=env,
        )
        # It waits: no unit of its own while the slot is full.
        assert _wait_for_exit([waiter], timeout=8) is None
        assert systemctl_show(f"slotmgr-{unique}b.service", "LoadState")["LoadState"] == "not-found"
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
        out, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, err
        job_output, record_line = out.strip().splitlines()
        assert job_output == "second ran"
        record = json.loads(record_line)
        assert (record["slot"], record["result"]) == ("7", "success")
    finally:
        _stop([p for p in (first, waiter) if p is not None])


def test_wait_for_slot_gives_75_when_its_timeout_passes(
    unique: str, slots_conf: Callable[[str], dict[str, str]]
) -> None:
    env = slots_conf("""
        [slot8]
        """)
    first_unit = f"slotmgr-{unique}a.service"
    first = start_cli("run", "--slot", "8", "--job-id", f"{unique}a", "--", "sleep", "300", env=env)
    try:
        wait_until(lambda: unit_active(first_unit), timeout=60, what=first_unit)
        # The refused job makes no file: an output of an earlier job stays whole.
        earlier = WORK / f"{unique}.out"
        earlier.write_text("an earlier job's output\n")
        begun = time.monotonic()
        out = run_cli(
            "run",
            "--slot",
            "8",
            "--wait-for-slot",
            "3s",
            "--job-id",
            f"{unique}b",
            "--output",
            str(earlier),
            "--",
            "true",
            env=env,
        )
        waited = time.monotonic() - begun
        assert out.returncode == SLOT_BUSY, out.stderr
        assert out.stderr == (
            f"slotmgr: error: slot 8 is full: it holds 1 job at a time, and "
            f"{first_unit} runs in it; waited 3.000s for a place\n"
        )
        assert waited >= 3
        assert earlier.read_text() == "an earlier job's output\n"
        assert systemctl_show(f"slotmgr-{unique}b.service", "LoadState")["LoadState"] == "not-found"
        assert unit_active(first_unit)
    finally:
        _stop([first])


def test_a_user_slot_is_counted_under_the_users_own_lock(unique: str) -> None:
    """--user: the user's own slots file (the environment may name it for a
    non-root caller), the count under a lock in the user's runtime dir."""
    alice = ensure_user("slotalice")
    runtime = start_user_manager(alice)
    conf = Path(alice.pw_dir) / f"{unique}.slots.conf"
    conf.write_text("[slot3]\nTasksMax = 50\n")
    os.chown(conf, alice.pw_uid, alice.pw_gid)
    env = user_env(alice, SLOTMGR_SLOTS_CONF=str(conf))
    unit = f"slotmgr-{unique}a.service"
    first = subprocess.Popen(
        **as_user(
            alice,
            [
                sys.executable,
                "-m",
                "slotmgr",
                "--user",
                "run",
                "--slot",
                "3",
                "--job-id",
                f"{unique}a",
                "--no-private-pids",
                "--",
                "sleep",
                "300",
            ],
            env=env,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: any(
                j["job_id"] == f"{unique}a"
                for j in json.loads(slotmgr_as(alice, "--user", "list", "--json").stdout or "[]")
            ),
            timeout=60,
            what="alice's job",
        )
        out = slotmgr_as(
            alice,
            "--user",
            "run",
            "--slot",
            "3",
            "--job-id",
            f"{unique}b",
            "--no-private-pids",
            "--",
            "true",
            env=env,
        )
        assert out.returncode == SLOT_BUSY, out.stderr
        assert out.stderr == (
            f"slotmgr: error: slot 3 is full: it holds 1 job at a time, and "
            f"{unit} runs in it (hint: --wait-for-slot DURATION waits for a "
            "place)\n"
        )
        out = slotmgr_as(
            alice, "--user", "run", "--slot", "3", "--tasks-max", "51", "--", "true", env=env
        )
        assert out.returncode == USAGE and "above slot 3's TasksMax=50" in out.stderr
        lock = Path(runtime) / "slotmgr" / "slot3.lock"
        assert (lock.stat().st_uid, lock.stat().st_mode & 0o777) == (alice.pw_uid, 0o600)
        assert lock.parent.stat().st_mode & 0o777 == 0o700
    finally:
        slotmgr_as(alice, "--user", "stop", f"{unique}a", "--grace", "0")
        first.communicate(timeout=120)
    assert first.returncode != SLOT_BUSY


def test_scopes_and_services_share_the_slots_places(
    unique: str, slots_conf: Callable[[str], dict[str, str]]
) -> None:
    """--scope jobs take a place and are counted like services; a refused
    scope job leaves no process behind (its forked child never runs)."""
    env = slots_conf("""
        [slot5]
        """)
    scope_unit = f"slotmgr-{unique}s.scope"
    holder = start_cli(
        "run", "--scope", "--slot", "5", "--job-id", f"{unique}s", "--", "sleep", "300", env=env
    )
    try:
        wait_until(lambda: unit_active(scope_unit), timeout=60, what=scope_unit)
        out = run_cli("run", "--slot", "5", "--job-id", f"{unique}v", "--", "true", env=env)
        assert (out.returncode, out.stderr) == (
            SLOT_BUSY,
            (
                f"slotmgr: error: slot 5 is full: it holds 1 job at a time, and {scope_unit} runs "
                "in it (hint: --wait-for-slot DURATION waits for a place)\n"
            ),
        )
    finally:
        _stop([holder])
    service_unit = f"slotmgr-{unique}v.service"
    holder = start_cli(
        "run", "--slot", "5", "--job-id", f"{unique}v", "--", "sleep", "300", env=env
    )
    try:
        wait_until(lambda: unit_active(service_unit), timeout=60, what=service_unit)
        marker = f"{unique}-refused"
        out = run_cli(
            "run",
            "--scope",
            "--slot",
            "5",
            "--job-id",
            f"{unique}r",
            "--",
            "sh",
            "-c",
            f"sleep 300 # {marker}",
            env=env,
        )
        assert out.returncode == SLOT_BUSY, out.stderr
        assert f"and {service_unit} runs in it" in out.stderr
        assert processes_with_marker(marker) == []
        assert systemctl_show(f"slotmgr-{unique}r.scope", "LoadState")["LoadState"] == "not-found"
    finally:
        _stop([holder])
