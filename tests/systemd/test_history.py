"""The accounting can be trusted afterwards (issue: job control, history): a dead
launcher, 200 jobs at once and a daemon-reload lose no record."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slotmgr.history import launch as run_files
from slotmgr.history import store as history
from slotmgr.job.runner import launch_of
from slotmgr.job.spec import JobSpec, unit_name_for, unit_properties
from slotmgr.systemd.manager import Manager

from .accounts import as_user, ensure_user, slotmgr_as
from .conftest import run_cli, wait_until

WORK = Path("/run/slotmgr-tests")


@pytest.fixture(scope="module", autouse=True)
def work() -> Path:
    WORK.mkdir(exist_ok=True)
    return WORK


def history_json(*args: str) -> list[dict[str, Any]]:
    out = run_cli("history", "--json", *args)
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


# The unit's stop timeout bounds its ExecStopPost= stop hook too, and an
# emulated guest busy with many hooks at once can need minutes for one:
# what is tested here is that no record is lost or doubled, not how fast.
STOP_TIMEOUT = (("TimeoutStopSec", "30min"),)


def start_without_waiting(manager: Manager, job_id: str, command: list[str], db: Path) -> str:
    """Start a job as `slotmgr run` would (its launch file, then its unit),
    without a launcher waiting for it: its record is made from the unit's own
    stop hook either way, and stored by whoever ingests the spool (here
    stored_ids, as slotmgr-ingest.timer does on an installed node). No
    PID-namespace init, to keep 200 jobs within the guest's memory."""
    spec = JobSpec(
        command=tuple(command),
        job_id=job_id,
        unit=unit_name_for(job_id),
        history_db=str(db),
        private_pids=False,
        limits=STOP_TIMEOUT,
    )
    run_files.write_launch(spec.history_db, launch_of(spec, manager))
    manager.start_transient_unit(spec.unit, unit_properties(spec, manager.features))
    return spec.unit


def stored_ids(db: Path) -> list[str]:
    """The job ids in the database, once what waits in the spool is stored."""
    if Path(history.spool_dir(str(db))).exists():
        history.store_spooled(str(db))
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        try:
            return [row[0] for row in conn.execute("SELECT job_id FROM jobs")]
        except sqlite3.OperationalError:  # no record stored yet: no table
            return []


def live_units(manager: Manager, prefix: str) -> list[str]:
    return [
        str(u[0])
        for u in manager.list_units([f"slotmgr-{prefix}*.service"])
        if u[3] in ("active", "activating")
    ]


def wait_for_records(db: Path, expected: list[str], timeout: float) -> None:
    """Wait for every record; on a timeout, say which are missing and why."""
    try:
        wait_until(
            lambda: len(stored_ids(db)) >= len(expected),
            timeout=timeout,
            interval=1,
            what=f"{len(expected)} records",
        )
    except AssertionError:
        missing = sorted(set(expected) - set(stored_ids(db)))
        journal = subprocess.run(
            ["journalctl", "--no-pager", "-o", "cat", "-n", "15", "-u", unit_name_for(missing[0])],
            capture_output=True,
            text=True,
        )
        raise AssertionError(
            f"{len(missing)} of {len(expected)} records missing, e.g. "
            f"{missing[:5]}; journal of {missing[0]}:\n"
            f"{journal.stdout}"
        ) from None


@pytest.fixture
def leftovers(unique: str) -> Iterator[None]:
    """After the test, whatever is left of its jobs is killed, so that a failed
    test does not leave a hundred jobs and hooks to slow the next ones."""
    yield
    subprocess.run(
        ["systemctl", "kill", "--signal=SIGKILL", f"slotmgr-{unique}*.service"],
        capture_output=True,
        check=False,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        listed = subprocess.run(
            [
                "systemctl",
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                f"slotmgr-{unique}*.service",
            ],
            capture_output=True,
            text=True,
        )
        if not listed.stdout.strip():
            break
        time.sleep(1)


@contextlib.contextmanager
def barrier(unique: str) -> Iterator[Path]:
    """A lock file the test holds while it starts jobs that wait on it
    (`flock -s LOCK CMD`): they run at once when it lets go, however long
    starting them all took, and waiting costs them no CPU."""
    lock = WORK / f"{unique}.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield lock


def waiting_on(lock: Path, command: list[str]) -> list[str]:
    return ["flock", "--shared", str(lock), *command]


def test_200_concurrent_jobs_make_200_records_none_lost_none_twice(
    unique: str, leftovers: None
) -> None:
    # After the barrier the jobs end 0.5 s apart: each one's stop hook asks
    # systemd for the unit (systemctl show), and 200 units stopping at once
    # keep an emulated PID 1 busy for longer than the 25 s systemctl waits.
    count, spacing = 200, 0.5
    db = WORK / f"{unique}.db"
    prefix = f"{unique}x"
    ids = [f"{prefix}{i}" for i in range(count)]
    manager = Manager.connect()
    try:
        with barrier(unique) as lock:
            began = time.monotonic()
            for i, job_id in enumerate(ids):
                command = waiting_on(lock, ["sleep", f"{1 + i * spacing:.1f}"])
                start_without_waiting(manager, job_id, command, db)
            print(f"\nstarted {count} jobs in {time.monotonic() - began:.1f}s")
            # All 200 run at once: each one is up, waiting at the barrier.
            with contextlib.suppress(AssertionError):
                wait_until(
                    lambda: len(live_units(manager, prefix)) == count, timeout=300, interval=1
                )
            running = live_units(manager, prefix)
            if len(running) != count:
                others = [
                    (u[0], u[3], u[4])
                    for u in manager.list_units([f"slotmgr-{prefix}*"])
                    if str(u[0]) not in running
                ]
                raise AssertionError(
                    f"only {len(running)} of {count} running; the others: {others[:5]}"
                )
            assert stored_ids(db) == []
    finally:
        manager.close()
    wait_for_records(db, ids, timeout=count * spacing + 900)
    print(f"all {count} records in {time.monotonic() - began:.0f}s")
    stored = stored_ids(db)
    assert sorted(stored) == sorted(ids)  # each once: none lost, none twice
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT job_id), sum(result = 'success') FROM jobs"
        ).fetchone()
        assert rows == (count, count, count)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_history_survives_daemon_reload_during_jobs(unique: str, leftovers: None) -> None:
    count, spacing = 20, 1.5
    db = WORK / f"{unique}.db"
    prefix = f"{unique}r"
    sleeps = {f"{prefix}{i}": 3 + i * spacing for i in range(count)}
    manager = Manager.connect()
    try:
        with barrier(unique) as lock:
            for job_id, seconds in sleeps.items():
                start_without_waiting(
                    manager, job_id, waiting_on(lock, ["sleep", str(seconds)]), db
                )
            wait_until(
                lambda: len(live_units(manager, prefix)) == count,
                timeout=300,
                interval=1,
                what="all jobs up",
            )
        released = time.monotonic()
        reloads = 0
        while time.monotonic() < released + max(sleeps.values()):
            subprocess.run(["systemctl", "daemon-reload"], check=True, timeout=300)
            reloads += 1
            # Every job not yet due is still running after the reload.
            due_later = {j for j, t in sleeps.items() if released + t > time.monotonic() + 3}
            assert due_later <= {
                u[len("slotmgr-") : -len(".service")] for u in live_units(manager, prefix)
            }
            time.sleep(2)
        assert reloads >= 3
    finally:
        manager.close()
    wait_for_records(db, list(sleeps), timeout=600)
    assert sorted(stored_ids(db)) == sorted(sleeps)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        results = {r for (r,) in conn.execute("SELECT result FROM jobs")}
        assert results == {"success"}
        for job_id, record in conn.execute("SELECT job_id, record FROM jobs"):
            # Each job slept its whole time: no reload cut it short or restarted it.
            assert json.loads(record)["wall_time_usec"] / 1e6 >= sleeps[job_id] - 0.5


def test_history_command_filters_and_non_root_sees_only_their_own(unique: str) -> None:
    alice = ensure_user("slotalice")
    mine, theirs = f"{unique}a", f"{unique}r"
    assert run_cli("run", "--quiet", "--job-id", theirs, "--", "true").returncode == 0
    assert (
        run_cli("run", "--quiet", "--job-id", mine, "--uid", alice.pw_name, "--", "true").returncode
        == 0
    )
    everything = {r["job_id"]: r for r in history_json()}
    assert {mine, theirs} <= set(everything)
    assert everything[mine]["user"] == "slotalice"
    assert [
        r["job_id"] for r in history_json("--user", "slotalice") if r["job_id"] in (mine, theirs)
    ] == [mine]
    assert [r["job_id"] for r in history_json("--limit", "1")] == [mine]
    assert history_json("--since", f"@{time.time() + 60:.0f}") == []
    assert {mine, theirs} <= {r["job_id"] for r in history_json("--since", "10min")}
    table = run_cli("history", "--limit", "2").stdout.splitlines()
    assert [line.split()[0] for line in table[1:]] == [theirs, mine]

    # Alice may not open the system history (root's alone: she could lock it),
    # and sees her own records, from the copy the root recorder keeps for her.
    denied = subprocess.run(
        **as_user(
            alice,
            [
                sys.executable,
                "-c",
                "import sys; open(sys.argv[1], 'rb')",
                "/var/lib/slotmgr/history.db",
            ],
        ),
        capture_output=True,
        text=True,
    )
    assert denied.returncode != 0 and "PermissionError" in denied.stderr
    out = slotmgr_as(alice, "history", "--json")
    assert out.returncode == 0, out.stderr
    seen = {r["job_id"] for r in json.loads(out.stdout)}
    assert mine in seen and theirs not in seen
    assert {r["user"] for r in json.loads(out.stdout)} == {"slotalice"}
    state = os.stat("/var/lib/slotmgr")
    assert state.st_uid == 0 and not state.st_mode & 0o022  # root's alone to write
    out = slotmgr_as(alice, "history", "--user", "root")
    assert out.returncode == 77
    assert "you may see only your own history" in out.stderr.strip().splitlines()[0]
