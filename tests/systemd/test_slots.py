"""Batch slots on the real systemd (issue: slots): the slot's slice carries the
limits, and a job cannot get past them whatever it asks for."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import run_cli, start_cli, systemctl_show, unit_active, wait_until

WORK = Path("/run/slotmgr-tests")
JOB_OOM = 125


@pytest.fixture
def slots_conf(unique):
    """Write a slots file; return the environment that points slotmgr at it."""
    WORK.mkdir(exist_ok=True)
    path = WORK / f"{unique}.slots.conf"

    def write(text: str) -> dict[str, str]:
        path.write_text(textwrap.dedent(text))
        return {**os.environ, "SLOTMGR_SLOTS_CONF": str(path)}

    return write


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


def test_a_job_cannot_exceed_its_slots_memory_whatever_it_asks(unique, slots_conf):
    env = slots_conf("""
        [slot1]
        MemoryMax = 64M
        MemorySwapMax = 0
        """)
    progress = WORK / f"{unique}.progress"
    # The recorder then runs in the full slot, reclaiming as it loads: slow in
    # an emulated guest, whose DefaultTimeoutStopSec=10s would cut it short.
    out = run_cli("run", "--slot", "1", "--memory-max", "1G", "--job-id", unique, "--json", "-",
                  "-p", "TimeoutStopSec=2min", "--", sys.executable, "-c", GREEDY, str(progress),
                  env=env)
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
        "MemoryMax": str(64 * 1024**2), "MemorySwapMax": "0"}
    assert Path("/sys/fs/cgroup/slotmgr.slice/slotmgr-slot1.slice/memory.max").read_text() == \
        f"{64 * 1024**2}\n"


def test_slot_limits_reach_the_slice_and_follow_edits_of_the_file(slots_conf):
    env = slots_conf("""
        [slot2]
        AllowedCPUs = 1
        TasksMax = 40
        IOWeight = 30
        CPUWeight = 50
        MemoryHigh = 900M
        """)
    # The job asks for CPU 0; the slot has only CPU 1, and the slot wins.
    out = run_cli("run", "--quiet", "--slot", "2", "--cpus", "0", "--", sys.executable, "-c",
                  "import os; print(sorted(os.sched_getaffinity(0)))", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1]"
    shown = systemctl_show("slotmgr-slot2.slice", "AllowedCPUs", "TasksMax", "IOWeight",
                           "CPUWeight", "MemoryHigh", "Slice", "ActiveState")
    assert shown == {"AllowedCPUs": "1", "TasksMax": "40", "IOWeight": "30", "CPUWeight": "50",
                     "MemoryHigh": str(900 * 1024**2), "Slice": "slotmgr.slice",
                     "ActiveState": "active"}
    # An edited file takes effect at the next job; a key left out is lifted.
    env = slots_conf("""
        [slot2]
        AllowedCPUs = 0-1
        IOWeight = 60
        """)
    out = run_cli("run", "--quiet", "--slot", "2", "--", "true", env=env)
    assert out.returncode == 0, out.stderr
    shown = systemctl_show("slotmgr-slot2.slice", "AllowedCPUs", "TasksMax", "IOWeight",
                           "CPUWeight", "MemoryHigh")
    assert shown == {"AllowedCPUs": "0-1", "TasksMax": "infinity", "IOWeight": "60",
                     "CPUWeight": "[not set]", "MemoryHigh": "infinity"}


def test_tasks_max_of_the_slot_binds_the_job(slots_conf):
    env = slots_conf("""
        [slot4]
        TasksMax = 12
        """)
    script = ("import os, time\n"
              "n = 0\n"
              "try:\n"
              "    while n < 40:\n"
              "        if os.fork() == 0:\n"
              "            time.sleep(30); os._exit(0)\n"
              "        n += 1\n"
              "except OSError:\n"
              "    pass\n"
              "print(n, flush=True)\n"
              "os.killpg(0, 9)\n")
    out = run_cli("run", "--quiet", "--slot", "4", "--tasks-max", "1000", "--", sys.executable,
                  "-c", script, env=env)
    forked = int(out.stdout.strip().splitlines()[0])
    # The job's own processes (its init included) count against the slot's 12.
    assert 5 <= forked < 12, out.stdout


def test_slots_command_shows_limits_and_use_including_swap(unique, slots_conf):
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
        assert table[0].split() == ["SLOT", "SLICE", "JOBS", "MEMORY", "SWAP", "TASKS", "CPU",
                                    "CPUS", "LIMITS"]
        assert table[1].split()[:3] == ["3", "slotmgr-slot3.slice", "1"]
        listed = {j["job_id"]: j for j in json.loads(run_cli("list", "--json").stdout)}
        assert listed[unique]["slot"] == "3"
    finally:
        job.send_signal(signal.SIGTERM)
        job.communicate(timeout=120)
    record = [r for r in json.loads(run_cli("history", "--slot", "3", "--json").stdout)
              if r["job_id"] == unique]
    assert len(record) == 1 and record[0]["slot"] == "3"


def test_bad_slots_file_is_refused_before_any_unit(unique, slots_conf):
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
    assert out.stderr.strip().endswith(
        ".slots.conf:7: [slot2] AllowedCPUs=1: CPUs 1 are also slot1's, and [node] "
        "exclusive_cpus = yes")
    assert systemctl_show(f"slotmgr-{unique}.service", "LoadState")["LoadState"] == "not-found"
