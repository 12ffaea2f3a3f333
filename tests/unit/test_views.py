"""The text of list, status, slots and history, and the commands' bad input
on a host without systemd (what needs no bus must not need one)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import pytest

from slotmgr.cli import main as cli
from slotmgr.cli import views
from slotmgr.errors import ExitCode
from slotmgr.history.record import JobRecord
from slotmgr.job import control
from slotmgr.job.control import JobDetail
from slotmgr.job.spec import PIDSHIM
from slotmgr.node import slots

if TYPE_CHECKING:

    class SlotmgrWithSlots(Protocol):
        """The `slotmgr_with_slots` fixture: `slotmgr ARGS` with the slots file at `conf`."""

        def __call__(self, conf: Path, *args: str) -> subprocess.CompletedProcess[str]: ...


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROPS = {
    "ActiveState": "active",
    "SubState": "running",
    "FreezerState": "frozen",
    "Slice": "slotmgr-slot1.slice",
    "User": "",
    "InactiveExitTimestamp": 1_700_000_000_000_000,
    "CPUUsageNSec": 2_500_000_000,
    "MemoryCurrent": 12 * 1024**2,
    "TasksCurrent": 3,
    "MainPID": 4242,
    "ControlGroup": "/slotmgr.slice/slotmgr-slot1.slice/slotmgr-ab12.service",
    "LogExtraFields": [b"SLOTMGR_JOB=ab12"],
    "Description": "slotmgr job ab12: sleep 9",
    "ExecStart": [
        (
            "/usr/bin/env",
            [
                "/usr/bin/env",
                "--block-signal",
                "/usr/bin/python3",
                "-I",
                "-S",
                PIDSHIM,
                "--",
                "sh",
                "-c",
                "sleep 9; echo done",
            ],
            False,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        )
    ],
}


def test_table_aligns_columns_and_does_not_pad_the_last() -> None:
    assert views.table(["A", "BB"], [["xxx", "y"], ["z", "long value"]]) == [
        "A    BB",
        "xxx  y",
        "z    long value",
    ]


def test_jobs_table() -> None:
    job = control.job_info("slotmgr-ab12.service", PROPS, owner_uid=0, now=1_700_000_090.0)
    header, row = views.jobs_table([job], now=1_700_000_090.0)
    assert header.split() == [
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
    started = time.strftime("%H:%M:%S", time.localtime(1_700_000_000))
    assert row.split() == [
        "ab12",
        "root",
        "1",
        "frozen",
        started,
        "2.500s",
        "12.0M",
        "3",
        "sh",
        "-c",
        "'sleep",
        "9;",
        "echo",
        "done'",
    ]
    assert header.index("COMMAND") == row.index("sh -c")
    running = control.job_info(
        "ux.service", {**PROPS, "FreezerState": "running"}, owner_uid=0, now=1_700_000_090.0
    )
    assert views.short_state(running) == "running"
    assert job.to_dict()["command"] == ["sh", "-c", "sleep 9; echo done"]


def test_jobs_table_fits_100_columns_cutting_the_command_only() -> None:
    long = {**PROPS, "ExecStart": [("/bin/x", ["/bin/x", "--input", "a" * 300], False)]}
    job = control.job_info("slotmgr-ab12.service", long, owner_uid=0, now=1_700_200_000.0)
    lines = views.jobs_table([job], now=1_700_200_000.0)
    assert max(len(line) for line in lines) <= 100
    assert lines[1].endswith("...") and " /bin/x --input aaa" in lines[1]
    # Started on another day: the date shows too.
    assert time.strftime("%m-%d %H:%M", time.localtime(1_700_000_000)) in lines[1]


def test_record_lines_show_the_whole_record() -> None:
    rec = JobRecord(
        job_id="ab12",
        unit="ux.service",
        slice="slotmgr-slot1.slice",
        slot="1",
        user="alice",
        uid=1000,
        command=["sh", "-c", "exit 3"],
        start_time=1_700_000_000.0,
        end_time=1_700_000_090.0,
        wall_time_usec=90_000_000,
        result="exit-code",
        exit_status=3,
        cpu_usage_usec=2_000_000,
        cpu_user_usec=1_500_000,
        cpu_system_usec=500_000,
        memory_peak_bytes=20 * 1024**2,
        memory_peak_source="cgroup memory.peak",
        io_read_bytes=4096,
        io_write_bytes=0,
        tasks_peak=4,
        ip_ingress_bytes=None,
        ip_egress_bytes=None,
        systemd_version="257",
        hostname="node1",
    )
    text = "\n".join(views.record_lines(rec))
    for part in (
        "Job ab12 (ux.service) finished",
        "Result:      exit-code, exit status 3",
        "User:        alice (uid 1000)",
        "Command:     sh -c 'exit 3'",
        "Slice:       slotmgr-slot1.slice (slot 1)",
        "Started:     " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1.7e9)),
        "Ended:       " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1.7e9 + 90)),
        "Wall time:   90.000s",
        "CPU time:    2.000s (user 1.500s, system 500ms)",
        "Memory peak: 20.0M [cgroup memory.peak]",
        "IO:          read 4.0K, written 0B",
        "Tasks peak:  4",
        "IP:          received -, sent -",
        "Node:        node1, systemd 257",
    ):
        assert part in text


def test_status_lines_show_limits_and_processes() -> None:
    job = control.job_info("slotmgr-ab12.service", PROPS, owner_uid=0, now=1_700_000_001.0)
    detail = JobDetail(
        info=job,
        description="slotmgr job ab12: sleep 9",
        command=["sleep", "9"],
        memory_peak_bytes=20 * 1024**2,
        memory_swap_bytes=0,
        io_read_bytes=None,
        io_write_bytes=4096,
        limits={"MemoryMax": "64.0M", "TasksMax": "10"},
        effective_cpus="0-1",
        processes=[(4242, "sleep 9")],
    )
    text = "\n".join(views.status_lines(detail))
    assert "Job ab12 (slotmgr-ab12.service)" in text
    assert "slotmgr-slot1.slice (slot 1)" in text and "Command:   sleep 9" in text
    assert "12.0M now, peak 20.0M, swap 0B" in text and "read -, written 4.0K" in text
    assert "Limits:    MemoryMax=64.0M, TasksMax=10" in text
    assert text.splitlines()[-1].split() == ["4242", "sleep", "9"]
    assert detail.to_dict()["processes"] == [{"pid": 4242, "command": "sleep 9"}]


def test_slots_table_idle_and_busy() -> None:
    one, two = slots.parse("[slot1]\nMemoryMax=64M\n[slot2]\n", "f", cpu_count=None).slots
    idle = slots.SlotUsage(
        slot=one,
        active=False,
        jobs=0,
        memory_current_bytes=None,
        memory_peak_bytes=None,
        memory_swap_bytes=None,
        tasks_current=None,
        cpu_usage_usec=None,
        effective_cpus=None,
    )
    busy = slots.SlotUsage(
        slot=two,
        active=True,
        jobs=2,
        memory_current_bytes=1024,
        memory_peak_bytes=2048,
        memory_swap_bytes=0,
        tasks_current=5,
        cpu_usage_usec=1_000_000,
        effective_cpus="0-1",
        applied={"memory.max": "max"},
    )
    lines = views.slots_table([idle, busy])
    assert lines[0].split() == [
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
    assert lines[1].split() == [
        "1",
        "slotmgr-slot1.slice",
        "0/1",
        "-",
        "-",
        "-",
        "-",
        "-",
        "MemoryMax=64M",
    ]
    assert lines[2].split() == [
        "2",
        "slotmgr-slot2.slice",
        "2/1",
        "1.0K",
        "0B",
        "5",
        "1.000s",
        "0-1",
        "none",
    ]
    assert busy.to_dict()["applied"] == {"memory.max": "max"}
    assert idle.to_dict()["configured"] == {"MemoryMax": "64M"}


@pytest.fixture
def slotmgr_with_slots(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> SlotmgrWithSlots:
    """`slotmgr ARGS` in-process with the node's slots file at `conf` (as root
    slotmgr reads only /etc/slotmgr/slots.conf, whatever the environment says)."""

    def run(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.setattr(slots, "DEFAULT_CONF", str(conf))
        monkeypatch.delenv(slots.CONF_ENV, raising=False)
        with pytest.raises(SystemExit) as info:
            cli.main(list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(
            args, cast(int, info.value.code), out.out, out.err
        )  # cli.main exits with an int

    return run


def test_slots_command_without_a_file(tmp_path: Path, slotmgr_with_slots: SlotmgrWithSlots) -> None:
    out = slotmgr_with_slots(tmp_path / "none.conf", "slots")
    assert out.returncode == 0 and "no slots configured" in out.stdout
    assert slotmgr_with_slots(tmp_path / "x", "slots", "--json").stdout == "[]\n"


@pytest.mark.parametrize("args", [["slots"], ["run", "--slot", "1", "true"]])
def test_bad_slots_file_is_one_line_and_exit_64_before_any_bus(
    tmp_path: Path, args: list[str], slotmgr_with_slots: SlotmgrWithSlots
) -> None:
    conf = tmp_path / "slots.conf"
    conf.write_text("[slot1]\nMemoryMax=64M\n\n[slot2]\nTasksMax=lots\n")
    out = slotmgr_with_slots(conf, *args)
    assert out.returncode == ExitCode.USAGE
    assert out.stderr.splitlines() == [
        f"slotmgr: error: {conf}:5: [slot2] TasksMax=lots: 'lots' is not a task count: use a "
        "number above 0, N% or 'infinity'"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--slot", "3", "true"], "no slot 3 in "),
        (["run", "--slot", "x", "true"], "invalid slot 'x'"),
        (
            ["run", "--slot", "1", "--slice", "a.slice", "true"],
            "--slot and --slice exclude each other",
        ),
        (["run", "--wait-for-slot", "1m", "true"], "--wait-for-slot needs --slot"),
        (
            ["run", "--slot", "1", "--wait-for-slot", "soon", "true"],
            "invalid --wait-for-slot: 'soon' is not a time span",
        ),
        (
            ["run", "--slot", "2", "--memory-max", "4G", "true"],
            "the job's MemoryMax=4G is above slot 2's MemoryMax=1G (hint: ask for at most 1G",
        ),
        (
            ["run", "--slot", "2", "--cpus", "0-1", "true"],
            "the job's AllowedCPUs=0-1 is outside slot 2's AllowedCPUs=1 (CPUs 0)",
        ),
        (
            ["run", "--slot", "2", "-p", "TasksMax=50", "true"],
            "the job's TasksMax=50 is above slot 2's TasksMax=40",
        ),
        (["stop", "j", "--grace", "soon"], "invalid --grace 'soon'"),
        (["stop", "j", "--grace", "infinity"], "use a finite time span"),
        (["kill", "j", "-s", "NOPE"], "invalid --signal: 'NOPE' is not a signal"),
        (["kill", "j", "-s", "99"], "invalid --signal"),
        (["adopt", "j", "1"], "invalid PID '1'"),
        (["adopt", "j", "abc"], "invalid PID 'abc'"),
        (["adopt", "j"], "Missing argument"),
    ],
)
def test_bad_control_input_is_one_line_and_exit_64(
    tmp_path: Path, args: list[str], message: str, slotmgr_with_slots: SlotmgrWithSlots
) -> None:
    conf = tmp_path / "slots.conf"
    conf.write_text("[slot1]\n[slot2]\nMemoryMax=1G\nAllowedCPUs=1\nTasksMax=40\n")
    out = slotmgr_with_slots(conf, *args)
    assert out.returncode == ExitCode.USAGE, out.stderr
    assert len(out.stderr.splitlines()) == 1 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_the_run_path_imports_no_job_control() -> None:
    """`slotmgr run` starts every job: it must not pay for list/status/kill code."""
    code = (
        "import sys, slotmgr.cli.main, slotmgr.job.runner, slotmgr.job.scope\n"
        "import slotmgr.history.hook\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('slotmgr'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
        check=True,
    )
    loaded = set(out.stdout.split())
    assert "slotmgr.naming" in loaded  # what a job is, shared with job control
    for control_module in (
        "job.control",
        "cli.commands",
        "job.delivery",
        "job.stopping",
        "cli.views",
        "job.adopt",
        "kernel.procs",
        "history.query",
        "pidshim",
    ):
        assert importlib.util.find_spec(f"slotmgr.{control_module}"), control_module
        assert f"slotmgr.{control_module}" not in loaded
