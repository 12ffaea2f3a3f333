"""The accounting can be trusted afterwards (issue: job control, history): a dead
launcher, 200 jobs at once and a daemon-reload lose no record."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from slotmgr.jobspec import JobSpec, unit_name_for, unit_properties
from slotmgr.systemd import Manager

from .accounts import ensure_user, slotmgr_as
from .conftest import processes_with_marker, run_cli, start_cli, unit_active, wait_until

WORK = Path("/run/slotmgr-tests")


@pytest.fixture(scope="module", autouse=True)
def work() -> Path:
    WORK.mkdir(exist_ok=True)
    return WORK


def history_json(*args: str) -> list[dict]:
    out = run_cli("history", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# Four processes burn 20 s of CPU between them and the job adds up what it
# measured itself (its own time and its reaped children's) in a file. The
# record also counts the job's PID-namespace init (one or two small Python
# processes, some 0.3 s each under emulation): 20 s keeps that under 5%.
BURN = textwrap.dedent("""
    import os, resource, sys, time
    out, ready = sys.argv[1], sys.argv[2]
    open(ready, "w").close()
    def burn(seconds):
        start = time.process_time()
        while time.process_time() - start < seconds:
            pass
    children = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            burn(5.0)
            os._exit(0)
        children.append(pid)
    burn(5.0)
    for pid in children:
        os.waitpid(pid, 0)
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    with open(out + ".tmp", "w") as f:
        f.write(repr(total))
    os.rename(out + ".tmp", out)
""")


def test_sigkilled_launcher_the_job_ends_cleanly_and_its_record_is_right(unique):
    unit = f"slotmgr-{unique}.service"
    measured, ready = WORK / f"{unique}.cpu", WORK / f"{unique}.ready"
    launcher = start_cli("run", "--job-id", unique, "--", sys.executable, "-c", BURN,
                         str(measured), str(ready), unique)
    wait_until(lambda: ready.exists() and unit_active(unit), what="the job")
    launcher.send_signal(signal.SIGKILL)
    launcher.communicate(timeout=60)
    assert launcher.returncode == -signal.SIGKILL
    # The job goes on without its launcher, ends by itself, and is recorded.
    wait_until(lambda: measured.exists(), timeout=300, what="the job's own figure")
    wait_until(lambda: any(r["job_id"] == unique for r in history_json()), timeout=120,
               what="the record")
    (record,) = [r for r in history_json() if r["job_id"] == unique]
    assert (record["result"], record["exit_status"]) == ("success", 0)
    own_usec = float(measured.read_text()) * 1e6
    print(f"\njob measured {own_usec / 1e6:.3f}s CPU, record says "
          f"{record['cpu_usage_usec'] / 1e6:.3f}s")
    assert abs(record["cpu_usage_usec"] - own_usec) <= 0.05 * own_usec
    assert processes_with_marker(unique) == []


# The test bed's DefaultTimeoutStopSec=10s (production: 90s) bounds each
# unit's ExecStopPost= recorder too, and an emulated guest busy with many
# recorders at once can need more: the jobs here state their own.
STOP_TIMEOUT = (("TimeoutStopSec", "5min"),)


def start_without_waiting(manager: Manager, job_id: str, command: list[str], db: Path) -> str:
    """Start a job as `slotmgr run` would, without a launcher waiting for it:
    its record comes from the unit's own recorder either way. No PID-namespace
    init, to keep 200 jobs within the guest's memory."""
    spec = JobSpec(command=tuple(command), job_id=job_id, unit=unit_name_for(job_id),
                   history_db=str(db), private_pids=False, limits=STOP_TIMEOUT)
    manager.start_transient_unit(spec.unit, unit_properties(spec, manager.features))
    return spec.unit


def stored_ids(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        try:
            return [row[0] for row in conn.execute("SELECT job_id FROM jobs")]
        except sqlite3.OperationalError:  # the first recorder is creating the table
            return []


def live_units(manager: Manager, prefix: str) -> list[str]:
    return [str(u[0]) for u in manager.list_units([f"slotmgr-{prefix}*.service"])
            if u[3] in ("active", "activating")]


def wait_for_records(db: Path, expected: list[str], timeout: float) -> None:
    """Wait for every record; on a timeout, say which are missing and why."""
    try:
        wait_until(lambda: len(stored_ids(db)) >= len(expected), timeout=timeout, interval=1,
                   what=f"{len(expected)} records")
    except AssertionError:
        missing = sorted(set(expected) - set(stored_ids(db)))
        journal = subprocess.run(["journalctl", "--no-pager", "-o", "cat", "-n", "15", "-u",
                                  unit_name_for(missing[0])], capture_output=True, text=True)
        raise AssertionError(f"{len(missing)} of {len(expected)} records missing, e.g. "
                             f"{missing[:5]}; journal of {missing[0]}:\n"
                             f"{journal.stdout}") from None


@pytest.fixture
def leftovers(unique):
    """After the test, whatever is left of its jobs is killed, so that a failed
    test does not leave a hundred jobs and recorders to slow the next ones."""
    yield
    subprocess.run(["systemctl", "kill", "--signal=SIGKILL", f"slotmgr-{unique}*.service"],
                   capture_output=True, check=False)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        listed = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                                 f"slotmgr-{unique}*.service"], capture_output=True, text=True)
        if not listed.stdout.strip():
            break
        time.sleep(1)


def test_200_concurrent_jobs_make_200_records_none_lost_none_twice(unique, leftovers):
    # Ends 0.4 s apart: 200 recorders (each a Python start) in 80 s, which an
    # emulated 2-CPU guest keeps up with.
    count, lead, spacing = 200, 45.0, 0.4
    db = WORK / f"{unique}.db"
    prefix = f"{unique}x"
    ids = [f"{prefix}{i}" for i in range(count)]
    manager = Manager.connect()
    try:
        began = time.time()
        for i, job_id in enumerate(ids):
            # Every job ends at its own moment, all after the last one started,
            # so all 200 run at once and their recorders do not all start together.
            ends = began + lead + i * spacing
            start_without_waiting(manager, job_id, ["sleep", f"{ends - time.time():.2f}"], db)
        started_in = time.time() - began
        print(f"\nstarted {count} jobs in {started_in:.1f}s")
        # All 200 run at once: each is running (or still starting) before the first is due.
        with contextlib.suppress(AssertionError):
            wait_until(lambda: len(live_units(manager, prefix)) == count,
                       timeout=max(0.0, began + lead - 5 - time.time()), interval=0.5)
        running = live_units(manager, prefix)
        if len(running) != count:
            others = [(u[0], u[3], u[4]) for u in manager.list_units([f"slotmgr-{prefix}*"])
                      if str(u[0]) not in running]
            raise AssertionError(f"only {len(running)} of {count} running after "
                                 f"{started_in:.1f}s; the others: {others}; records: "
                                 f"{stored_ids(db)}")
    finally:
        manager.close()
    wait_for_records(db, ids, timeout=lead + count * spacing + 300)
    stored = stored_ids(db)
    assert sorted(stored) == sorted(ids)  # each once: none lost, none twice
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT job_id), "
                            "sum(result = 'success') FROM jobs").fetchone()
        assert rows == (count, count, count)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_history_survives_daemon_reload_during_jobs(unique, leftovers):
    count, lead, spacing = 20, 15.0, 1.0
    db = WORK / f"{unique}.db"
    prefix = f"{unique}r"
    manager = Manager.connect()
    try:
        began = time.time()
        ends, sleeps = {}, {}
        for i in range(count):
            job_id = f"{prefix}{i}"
            ends[job_id] = began + lead + i * spacing
            sleeps[job_id] = round(ends[job_id] - time.time(), 2)
            start_without_waiting(manager, job_id, ["sleep", str(sleeps[job_id])], db)
        reloads = 0
        while time.time() < began + lead + count * spacing:
            subprocess.run(["systemctl", "daemon-reload"], check=True, timeout=120)
            reloads += 1
            # Every job not yet due is still running after the reload.
            now = time.time()
            due_later = {j for j, end in ends.items() if end > now + 3}
            assert due_later <= set(u[len("slotmgr-"):-len(".service")]
                                    for u in live_units(manager, prefix))
            time.sleep(3)
        assert reloads >= 3
    finally:
        manager.close()
    wait_for_records(db, list(ends), timeout=300)
    assert sorted(stored_ids(db)) == sorted(ends)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        results = {r for (r,) in conn.execute("SELECT result FROM jobs")}
        assert results == {"success"}
        for job_id, record in conn.execute("SELECT job_id, record FROM jobs"):
            # Each job slept its whole time: no reload cut it short or restarted it.
            assert json.loads(record)["wall_time_usec"] / 1e6 >= sleeps[job_id] - 0.5


def test_history_command_filters_and_non_root_sees_only_their_own(unique):
    alice = ensure_user("slotalice")
    mine, theirs = f"{unique}a", f"{unique}r"
    assert run_cli("run", "--quiet", "--job-id", theirs, "--", "true").returncode == 0
    assert run_cli("run", "--quiet", "--job-id", mine, "--uid", alice.pw_name, "--",
                   "true").returncode == 0
    everything = {r["job_id"]: r for r in history_json()}
    assert {mine, theirs} <= set(everything)
    assert everything[mine]["user"] == "slotalice"
    assert [r["job_id"] for r in history_json("--user", "slotalice")
            if r["job_id"] in (mine, theirs)] == [mine]
    assert [r["job_id"] for r in history_json("--limit", "1")] == [mine]
    assert history_json("--since", f"@{time.time() + 60:.0f}") == []
    assert {mine, theirs} <= {r["job_id"] for r in history_json("--since", "10min")}
    table = run_cli("history", "--limit", "2").stdout.splitlines()
    assert [line.split()[0] for line in table[1:]] == [theirs, mine]

    # Alice may read the system history, which she may not write, and sees hers only.
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
