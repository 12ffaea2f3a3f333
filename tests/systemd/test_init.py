"""The job's PID-namespace init in the guests: catatonit where it is installed
(both guests have it), pidshim where a Landlock scope is wanted or the node's
/etc/slotmgr/slotmgr.conf says so (issue 11: a compiled init)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from slotmgr.job.init import find_catatonit
from slotmgr.pidshim import LANDLOCK_SCOPE_ABI, landlock_abi

from .conftest import run_cli, start_cli, systemctl_show, unit_active, wait_until

WORK = Path("/run/slotmgr-tests")  # not /tmp: each job has its own /tmp
NODE_CONF = Path("/etc/slotmgr/slotmgr.conf")
SYSTEMD_VERSION = int(
    subprocess.run(
        ["systemctl", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
)
MIB = 2**20


@pytest.fixture(scope="module", autouse=True)
def work() -> Path:
    WORK.mkdir(exist_ok=True)
    return WORK


@pytest.fixture(scope="module")
def catatonit() -> str:
    path = find_catatonit()
    assert path, "the guests install catatonit (tests/testbed/guests.py PACKAGES)"
    return path


@pytest.fixture
def node_init() -> Iterator[Callable[[str], None]]:
    """Sets `[node] init = VALUE` in the node's file, removed afterwards."""
    assert not NODE_CONF.exists(), "the guests have no slotmgr.conf of their own"

    def set_to(value: str) -> None:
        NODE_CONF.parent.mkdir(parents=True, exist_ok=True)
        NODE_CONF.write_text(f"[node]\ninit = {value}\n")
        NODE_CONF.chmod(0o644)

    try:
        yield set_to
    finally:
        NODE_CONF.unlink(missing_ok=True)


def summary_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines()]


def unit_argv(unit: str) -> str:
    return systemctl_show(unit, "ExecStart")["ExecStart"]


def test_the_summary_status_and_unit_say_which_init_ran(unique: str, catatonit: str) -> None:
    unit = f"slotmgr-{unique}.service"
    record = WORK / f"{unique}.json"
    job = start_cli(
        "run",
        "--job-id",
        unique,
        "--no-landlock",
        "--json",
        str(record),
        "-E",
        "A=1",
        "--",
        "sleep",
        "600",
    )
    try:
        wait_until(lambda: unit_active(unit), what=unit)
        assert catatonit in unit_argv(unit) and "pidshim" not in unit_argv(unit)
        main = int(systemctl_show(unit, "MainPID")["MainPID"])
        main_argv = Path(f"/proc/{main}/cmdline").read_bytes().split(b"\0")
        # 257: catatonit is the main process, PID 1 of the job's namespace; 252:
        # util-linux's unshare outside it.
        expected = catatonit if SYSTEMD_VERSION >= 257 else "/usr/bin/unshare"
        assert main_argv[0] == expected.encode(), main_argv
        status = run_cli("status", unique)
        assert status.returncode == 0, status.stderr
        assert "Init: catatonit" in status.stdout, status.stdout
        listed = json.loads(run_cli("list", "--json").stdout)
        assert [j["command"] for j in listed if j["job_id"] == unique] == [["sleep", "600"]]
    finally:
        run_cli("stop", unique)
        _out, err = job.communicate(timeout=120)
    assert "init: catatonit" in summary_lines(err), err
    assert json.loads(record.read_text())["command"] == ["sleep", "600"]


def test_a_landlock_scope_keeps_pidshim_and_says_so(unique: str) -> None:
    out = run_cli("run", "--verbose", "--", "true")
    assert out.returncode == 0, out.stderr
    if landlock_abi() >= LANDLOCK_SCOPE_ABI:
        assert "init: pidshim (Landlock scope)" in summary_lines(out.stderr), out.stderr
    else:
        assert "init: catatonit" in summary_lines(out.stderr), out.stderr
    if SYSTEMD_VERSION >= 257:
        assert landlock_abi() >= LANDLOCK_SCOPE_ABI, "the 257 guest boots Linux 6.12"


def in_job_peak(unit: str, slice_: str) -> list[str]:
    """A job whose whole work is to print its own cgroup's memory.peak: the init's
    and the executor's share of it, before any ExecStopPost= hook has run."""
    return ["cat", f"/sys/fs/cgroup/{slice_}/{unit}/memory.peak"]


def test_a_jobs_memory_peak_is_close_to_systemd_runs(
    unique: str, node_init: Callable[[str], None]
) -> None:
    """The init's cost on the job's own bill: with catatonit within 1 MiB of a
    plain systemd-run unit's, measured in the same guest; pidshim's (the node's
    setting) for contrast."""
    peaks: dict[str, list[int]] = {"systemd-run": [], "catatonit": [], "pidshim": []}

    def slotmgr_peak(unit: str) -> int:
        out = run_cli(
            "run", "--unit", unit, "--no-landlock", "--", *in_job_peak(unit, "slotmgr.slice")
        )
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    for round_ in range(3):
        base = f"{unique}b{round_}.service"
        out = subprocess.run(
            [
                "systemd-run",
                "--wait",
                "--pipe",
                "--quiet",
                f"--unit={base}",
                "-p",
                "MemoryAccounting=yes",
                *in_job_peak(base, "system.slice"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        peaks["systemd-run"].append(int(out.stdout))
        peaks["catatonit"].append(slotmgr_peak(f"{unique}c{round_}.service"))
    node_init("pidshim")
    peaks["pidshim"] = [slotmgr_peak(f"{unique}p{round_}.service") for round_ in range(2)]
    print({name: [round(p / MIB, 2) for p in values] for name, values in peaks.items()})
    assert min(peaks["catatonit"]) <= min(peaks["systemd-run"]) + MIB, peaks
    assert min(peaks["pidshim"]) > min(peaks["catatonit"]) + 2 * MIB, peaks
    # A `true` job's record: the stop hook reads memory.peak before anything
    # of its own could add to it (a shell, no interpreter), so it is the job's.
    NODE_CONF.unlink()
    record = WORK / f"{unique}.json"
    out = run_cli("run", "--no-landlock", "--json", str(record), "--", "true")
    assert out.returncode == 0, out.stderr
    recorded = json.loads(record.read_text())["memory_peak_bytes"]
    print("true, record's memory peak:", recorded)
    assert recorded <= min(peaks["systemd-run"]) + MIB, (recorded, peaks)


def test_the_node_may_choose_pidshim_and_it_still_works(
    unique: str, node_init: Callable[[str], None]
) -> None:
    node_init("pidshim")
    out = run_cli(
        "run",
        "--verbose",
        "--uid",
        "nobody",
        "--working-directory",
        "/",
        "--no-landlock",
        "-E",
        "A=from -E",
        "--",
        "sh",
        "-c",
        "echo $A; exit 3",
    )
    assert out.returncode == 3, out.stderr
    assert out.stdout == "from -E\n"
    assert f"init: pidshim ([node] init = pidshim in {NODE_CONF})" in summary_lines(out.stderr), (
        out.stderr
    )


def test_the_node_may_choose_catatonit_over_a_landlock_scope(
    unique: str, node_init: Callable[[str], None], catatonit: str
) -> None:
    node_init("catatonit")
    out = run_cli("run", "--verbose", "--", "true")
    assert out.returncode == 0, out.stderr
    lines = summary_lines(out.stderr)
    assert "init: catatonit" in lines, out.stderr
    assert not any("landlock" in line for line in lines if line.startswith("isolation:"))
    if landlock_abi() >= LANDLOCK_SCOPE_ABI:
        assert any("the node's init is catatonit" in line for line in lines), out.stderr


def test_a_bad_init_setting_is_one_line_and_78(node_init: Callable[[str], None]) -> None:
    node_init("tini")
    out = run_cli("run", "--", "true")
    assert out.returncode == 78
    assert out.stderr.splitlines() == [
        f"slotmgr: error: invalid init 'tini' in {NODE_CONF}: use one of auto, catatonit, pidshim"
    ]


def record_of(job_id: str) -> dict[str, Any]:
    out = run_cli("history", "--json")
    assert out.returncode == 0, out.stderr
    found: list[dict[str, Any]] = [r for r in json.loads(out.stdout) if r["job_id"] == job_id]
    assert len(found) == 1, (job_id, found)
    return found[0]


# On 257 the namespace's PID 1 is exec'd by systemd with no signal blocked: a
# SIGTERM before catatonit's (or env's, for pidshim) first instruction is lost
# and the job waits for the stop timeout (seen in 2 of 9 stops right after the
# unit appeared, under the test bed's load). And a stop while a Type=exec unit is
# still starting made systemd 257.13 itself abort (Assertion
# '!s->exec_fd_event_source' failed, PID 1 frozen: seen with either init), so
# there the stop waits for the unit to be active. README: the start-up window.
WINDOW_OPEN = pytest.mark.xfail(
    SYSTEMD_VERSION >= 257,
    strict=False,
    reason="257: PID 1 of the namespace is exec'd unblocked; a SIGTERM before the init's "
    "first instruction is lost (README: the start-up window)",
)


def up_enough_to_stop(unit: str) -> bool:
    if SYSTEMD_VERSION >= 257:  # not while starting: see WINDOW_OPEN
        return systemctl_show(unit, "ActiveState")["ActiveState"] == "active"
    return systemctl_show(unit, "LoadState")["LoadState"] == "loaded"


@WINDOW_OPEN
@pytest.mark.parametrize("who", ["root", "nobody"])
def test_a_job_stopped_right_after_it_started_ends_promptly_with_its_record(
    unique: str, who: str
) -> None:
    """systemd's own stop (systemctl stop) at moments from the unit's first
    appearance on (252; 257: from its start): a SIGTERM the namespace's init
    missed would leave the job to the 90 s stop timeout's SIGKILL. Each must
    end well before, with its record (the stop includes the stop hook: a
    shell and a systemctl)."""
    took = []
    for round_, delay in enumerate((0, 0, 0.05, 0.1, 0.2, 0.4)):
        job_id = f"{unique[:20]}{who[0]}{round_}"
        unit = f"slotmgr-{job_id}.service"
        job = start_cli(
            "run",
            "--job-id",
            job_id,
            "--uid",
            who,
            "--working-directory",
            "/",
            "--no-landlock",
            "--",
            "sleep",
            "300",
        )
        try:
            wait_until(lambda u=unit: up_enough_to_stop(u), timeout=60, interval=0.01, what=unit)
            time.sleep(delay)
            started = time.monotonic()
            subprocess.run(["systemctl", "stop", unit], check=True, timeout=150)
            _out, err = job.communicate(timeout=150)
            took.append(round(time.monotonic() - started, 2))
        finally:
            if job.poll() is None:
                job.kill()
                job.communicate()
        assert "init: catatonit" in summary_lines(err), err
        rec = record_of(job_id)
        assert rec["result"] in ("cancelled", "signal", "exit-code"), rec
        assert rec["command"] == ["sleep", "300"], rec
        if took[-1] >= 60:
            journal = subprocess.run(
                ["journalctl", "--no-pager", "-o", "short-monotonic", "-u", unit],
                capture_output=True,
                text=True,
            ).stdout
            fields = {
                k: rec.get(k) for k in ("result", "exit_status", "stopped_by", "wall_time_usec")
            }
            raise AssertionError(f"delay {delay}: {took} s; {fields}\n{err}\n{journal}")
    print(f"{who}: stop to launcher exit, s:", took)
