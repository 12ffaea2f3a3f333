"""Shared pieces of the real-systemd tier (run inside the test-bed guests).

Every test here needs systemd as PID 1 and root. Off such a host the whole
tier FAILS with a pointer to the test bed: it never skips, so a run that
could not reach systemd cannot pass for one that did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


# Tests run in one guest only, so that CI's whole run (this tier in both
# guests, one after the other, under emulation) stays within its time: the
# test's name -> the systemd major whose guest runs it, and why that one is enough.
ONE_GUEST_ONLY = {
    "test_200_concurrent_jobs_make_200_records_none_lost_none_twice": (
        257,
        "200 concurrent jobs test slotmgr's own history store (~250 s a guest); "
        "the 257 guest runs it, and 252's stop-hook path is test_records.py's",
    ),
}


def _systemd_major() -> int | None:
    try:
        out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True).stdout
        return int(out.split()[1])
    except (OSError, IndexError, ValueError):
        return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/systemd/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.systemd)
    # Deselected, not skipped, and said: off systemd nothing is (the tier fails).
    major = _systemd_major()
    if major is None:
        return
    dropped = [
        item
        for item in items
        if getattr(item, "originalname", item.name) in ONE_GUEST_ONLY
        and ONE_GUEST_ONLY[getattr(item, "originalname", item.name)][0] != major
    ]
    if not dropped:
        return
    items[:] = [item for item in items if item not in dropped]
    config.hook.pytest_deselected(items=dropped)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for name in sorted({getattr(item, "originalname", item.name) for item in dropped}):
        guest, why = ONE_GUEST_ONLY[name]
        line = (
            f"systemd: {name} deselected in this {major} guest: runs in the {guest} guest ({why})"
        )
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(line)
        else:
            print(line)


@pytest.fixture(autouse=True, scope="session")
def _require_real_systemd() -> None:
    if not os.path.isdir("/run/systemd/system") or os.geteuid() != 0:
        pytest.fail(
            "the real-systemd tests need systemd as PID 1 and root: run them in the test bed, "
            "e.g. python3 -m tests.testbed run --guest 257 -- python3 -m pytest tests/systemd",
            pytrace=False,
        )


def run_cli(
    *args: str | bytes, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """`slotmgr ARGS` as a subprocess, the way a batch system calls it."""
    return subprocess.run(
        [sys.executable, "-m", "slotmgr", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def start_cli(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "slotmgr", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def systemctl_show(unit: str, *props: str) -> dict[str, str]:
    out = subprocess.run(
        ["systemctl", "show", unit, *(f"--property={p}" for p in props)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_until(
    predicate: Callable[..., object],  # ...: lambdas bind loop variables as defaults
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "",
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def unit_active(unit: str) -> bool:
    return systemctl_show(unit, "ActiveState")["ActiveState"] == "active"


def processes_with_marker(marker: str) -> list[int]:
    """PIDs, in the whole guest, whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


def processes_of(unit: str) -> list[int]:
    """PIDs in the unit's cgroup and below (none while it has no cgroup)."""
    group = systemctl_show(unit, "ControlGroup")["ControlGroup"]
    pids: list[int] = []
    if not group:  # "": not the root cgroup, every process of the guest
        return pids
    for root, _dirs, files in os.walk(f"/sys/fs/cgroup{group}"):
        if "cgroup.procs" in files:
            try:
                pids += [int(p) for p in Path(root, "cgroup.procs").read_text().split()]
            except OSError:
                continue  # removed while walked
    return pids


def job_sleeps(unit: str) -> list[int]:
    """The unit's processes that are `sleep` itself: the job's own command,
    not the init or env in front of it, whose command lines name it too."""
    found = []
    for pid in processes_of(unit):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0"):
                found.append(pid)
        except OSError:
            continue
    return found


def taken_for_not_its_child(unit: str) -> bool:
    """Did systemd 257 take the unit's main process (its PID-namespace init) for
    "not our child"? It does when it learns of it while its executor still
    lives; a StopUnit of such a unit may then SIGKILL it at once (README)."""
    return "which is not our child" in unit_journal(unit)


def unit_journal(unit: str) -> str:
    """What systemd logged of the unit (messages only)."""
    return subprocess.run(
        ["journalctl", "--no-pager", "-o", "cat", "-u", unit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A marker string unique to this test, to find its processes and units."""
    name = "".join(c for c in request.node.name if c.isalnum())[:20]
    return f"t{name}{os.getpid()}{time.monotonic_ns() % 100000}"


@pytest.fixture(scope="session")
def scratch_mount() -> Iterator[Path]:
    """The test bed's spare disk with a fresh ext4, for real block I/O."""
    device = os.environ.get("SLOTMGR_TESTBED_SCRATCH_DISK")
    if not device:
        pytest.fail("SLOTMGR_TESTBED_SCRATCH_DISK is not set: run in the test bed", pytrace=False)
    mount = Path("/mnt/slotmgr-scratch")
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", device], check=True)
    subprocess.run(["mount", device, str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
