"""The stop hook's file and the launcher's make one record, stored once
(slotmgr.history.hook, slotmgr/stophook.sh). The hook itself runs here under
/bin/sh with a stand-in `systemctl` on PATH; in the guests, under systemd."""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from slotmgr.history import hook as stophook
from slotmgr.history import launch as run_files
from slotmgr.history import stopnote
from slotmgr.history import store as history
from slotmgr.history.accounting import SYSTEMD_STOP_JOB
from slotmgr.history.stopnote import StopNote

RUN = "0123456789abcdef0123456789abcdef"
INVOCATION = "fedcba98765432100123456789abcdef"
SHOWN = """ExecMainStartTimestamp=Tue 2026-12-01 13:45:00.250000 UTC
ExecMainExitTimestamp=Tue 2026-12-01 13:45:02.750000 UTC
ExecMainCode=1
ExecMainStatus=3
Result=exit-code
CPUUsageNSec=2000000
MemoryPeak=[not set]
IOReadBytes=18446744073709551615
IOWriteBytes=
IPIngressBytes=1000
IPEgressBytes=2000
Job={job}
"""


def fake_systemctl(bin_dir: Path, job: str = "") -> None:
    """`systemctl show` prints SHOWN; `list-jobs` a pending stop job."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {bin_dir}/calls\n'
        'case "$2" in\n'
        f"  show) cat <<'EOF'\n{SHOWN.format(job=job)}EOF\n;;\n"
        f"  list-jobs) echo '{job} slotmgr-ab.service stop running' ;;\n"
        "esac\n"
    )
    script.chmod(0o755)


def launch(**kw: object) -> stophook.Launch:
    base: dict[str, object] = dict(
        job_id="ab",
        run_id=RUN,
        unit="slotmgr-ab.service",
        slice="slotmgr.slice",
        slot="2",
        user="root",
        uid=0,
        command=["sh", "-c", "exit 3"],
        systemd_version="257",
    )
    base.update(kw)
    return stophook.Launch(**base)  # type: ignore[arg-type]


def run_hook(
    tmp_path: Path, db: str, job: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    fake_systemctl(tmp_path / "bin", job)
    spool = history.private_spool_dir(db)
    full_env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", **env}
    return subprocess.run(
        ["/bin/sh", stophook.HOOK, spool, RUN, "slotmgr-ab.service", "system"],
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "state" / "history.db")


def test_the_hook_writes_how_the_job_ended_and_systemds_view_then_the_pair_is_one_record(
    tmp_path: Path, db: str
) -> None:
    run_files.write_launch(db, launch())
    out = run_hook(
        tmp_path,
        db,
        SERVICE_RESULT="exit-code",
        EXIT_CODE="exited",
        EXIT_STATUS="3",
        INVOCATION_ID=INVOCATION,
    )
    assert out.returncode == 0 and out.stderr == ""
    spool = Path(history.spool_dir(db))
    assert sorted(os.listdir(spool)) == [f"{RUN}.end", f"{RUN}.start"]  # no temporary left
    for name in spool.iterdir():
        assert stat.S_IMODE(name.stat().st_mode) == 0o600
    fields = stophook.parse_end((spool / f"{RUN}.end").read_text())
    assert fields["exit_code"] == "exited" and fields["invocation_id"] == INVOCATION
    assert "own_usec" in stophook.counters_of(fields), fields["hook.times"]
    # No job pending: one systemctl, show, for the unit named as an argument.
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("--system show --timestamp=us+utc")
    assert calls[0].endswith("-- slotmgr-ab.service")

    (item,) = stophook.pending(str(spool))
    rec = item.record
    assert (rec.job_id, rec.run_id, rec.slot, rec.user, rec.command) == (
        "ab",
        RUN,
        "2",
        "root",
        ["sh", "-c", "exit 3"],
    )
    assert (rec.result, rec.exit_status, rec.stopped_by) == ("exit-code", 3, None)
    started = datetime.datetime(2026, 12, 1, 13, 45, 0, 250000, tzinfo=datetime.timezone.utc)
    assert rec.start_time == started.timestamp()
    assert rec.wall_time_usec == 2_500_000
    assert (rec.ip_ingress_bytes, rec.ip_egress_bytes) == (1000, 2000)
    assert rec.end_time == pytest.approx((spool / f"{RUN}.end").stat().st_mtime)


def test_counters_and_systemds_fallbacks_are_read_from_the_hooks_lines() -> None:
    end = stophook.parse_end(
        "cgroup.memory.peak=4096\ncgroup.usage_usec=15000\ncgroup.user_usec=10000\n"
        "cgroup.system_usec=5000\ncgroup.oom_kill=0\ncgroup.io_read=7\ncgroup.io_write=8\n"
        "hook.times=0m0.005000s 0m0.002000s\n0m0.000000s 0m0.000000s\n"
        "exit_code=killed\nexit_status=KILL\nservice_result=signal\n"
        + "".join(f"systemd.{line}\n" for line in SHOWN.format(job="").splitlines())
    )
    rec = stophook.record_of(launch(), {"systemd.X": "1", **end}, end_time=1.0)
    assert (rec.memory_peak_bytes, rec.memory_peak_source) == (4096, "cgroup memory.peak")
    # The hook's own CPU (systemd's set-up of it included) is not the job's.
    assert (rec.cpu_usage_usec, rec.cpu_user_usec, rec.cpu_system_usec) == (8000, 5000, 3000)
    bash = stophook.counters_of({"hook.times": "1m0.002s 0m0.000s"})
    assert (bash["own_user_usec"], bash["own_system_usec"]) == (60_002_000, 0)
    assert (rec.io_read_bytes, rec.io_write_bytes) == (7, 8)
    assert (rec.result, rec.exit_status) == ("signal", 137)
    # Without the cgroup's counters: systemd's, where it has them.
    bare = stophook.record_of(
        launch(),
        {
            "exit_code": "exited",
            "exit_status": "0",
            "systemd.CPUUsageNSec": "2000000",
            "systemd.MemoryPeak": "[not set]",
        },
        end_time=1.0,
    )
    assert (bare.cpu_usage_usec, bare.memory_peak_bytes) == (2000, None)
    assert bare.memory_peak_source == "unavailable"


def test_no_exit_code_from_systemd_yet_takes_the_units_own(tmp_path: Path, db: str) -> None:
    # A stop that caught the job at its very start: systemd ran the hook before
    # it had the main process's end; ExecMainCode/Status a moment later have it.
    run_files.write_launch(db, launch())
    assert run_hook(tmp_path, db, SERVICE_RESULT="success").returncode == 0
    (item,) = stophook.pending(history.spool_dir(db))
    assert (item.record.result, item.record.exit_status) == ("exit-code", 3)


def test_a_pending_stop_job_makes_the_job_cancelled_by_systemd(tmp_path: Path, db: str) -> None:
    run_files.write_launch(db, launch())
    out = run_hook(
        tmp_path, db, job="42", SERVICE_RESULT="success", EXIT_CODE="killed", EXIT_STATUS="TERM"
    )
    assert out.returncode == 0, out.stderr
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    assert calls[1] == "--system list-jobs --no-legend -- slotmgr-ab.service"
    (item,) = stophook.pending(history.spool_dir(db))
    assert (item.record.result, item.record.stopped_by) == ("cancelled", SYSTEMD_STOP_JOB)


def spool_user_job_stopped_by(
    note: StopNote, tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch, **env: str
) -> None:
    """A user-manager job's pair in the spool, its hook run with `env`, and
    `note` left for its invocation, as its stopper leaves it."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))
    (tmp_path / "runtime").mkdir(mode=0o700)
    assert stopnote.leave(INVOCATION, note, user_manager=True)
    run_files.write_launch(db, launch(user_manager=True, user="nobody", uid=65534))
    run_hook(tmp_path, db, INVOCATION_ID=INVOCATION, **env)


def test_the_pair_is_stored_once_with_its_users_copy_and_its_note_removed(
    tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool_user_job_stopped_by(
        StopNote(by="slotmgr stop by uid 0"),
        tmp_path,
        db,
        monkeypatch,
        SERVICE_RESULT="success",
        EXIT_CODE="killed",
        EXIT_STATUS="TERM",
    )
    # Readers see it before it is stored, as a spooled record; the note stays.
    (waiting,) = history.spooled(db)
    assert waiting[1].stopped_by == "slotmgr stop by uid 0"
    assert stopnote.read(INVOCATION, user_manager=True) is not None
    assert history.store_spooled(db)
    assert os.listdir(history.spool_dir(db)) == []
    assert stopnote.read(INVOCATION, user_manager=True) is None
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT run_id, result FROM jobs").fetchall()
    assert rows == [(RUN, "cancelled")]
    assert history.store_spooled(db)  # nothing left: nothing more stored
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


def test_an_ingester_that_died_after_storing_leaves_a_pair_that_is_stored_again_once(
    tmp_path: Path, db: str
) -> None:
    run_files.write_launch(db, launch(user="nobody", uid=65534))
    run_hook(tmp_path, db, SERVICE_RESULT="success", EXIT_CODE="exited", EXIT_STATUS="0")
    spool = history.spool_dir(db)
    (item,) = stophook.pending(spool)
    saved = {name: Path(spool, name).read_bytes() for name in os.listdir(spool)}
    assert history.store_spooled(db)
    for name, data in saved.items():  # as if it died before removing the files
        Path(spool, name).write_bytes(data)
    os.chmod(spool, 0o700)
    for name in saved:
        os.chmod(Path(spool, name), 0o600)
    assert history.store_spooled(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
    copy = history.read_user_copy(history.user_copy_path(db, 65534))
    assert [r.run_id for r in copy] == [item.record.run_id]


def test_an_end_without_its_start_or_a_start_alone_is_no_record(tmp_path: Path, db: str) -> None:
    spool = history.private_spool_dir(db)
    Path(spool, f"{RUN}.end").write_text("exit_code=exited\nexit_status=0\n")
    Path(spool, "feed.start").write_text(launch(run_id="feed").to_json())
    assert stophook.pending(spool) == []
    assert history.spooled(db) == []


def test_a_refused_unit_leaves_no_start_file(db: str) -> None:
    name = run_files.write_launch(db, launch())
    assert json.loads(Path(name).read_text())["run_id"] == RUN
    run_files.discard_launch(db, RUN)
    assert os.listdir(history.spool_dir(db)) == []


@pytest.mark.parametrize("text", ["", "Tue 2026-12-01 13:45:00 UTC", "n/a", "Tue 2026-12-01"])
def test_a_timestamp_systemd_did_not_set_is_none(text: str) -> None:
    assert (
        stophook.properties_of(launch(), {"systemd.ExecMainStartTimestamp": text})[
            "ExecMainStartTimestamp"
        ]
        is None
    )


def test_the_first_record_is_found_and_listed_before_any_database_exists(
    tmp_path: Path, db: str
) -> None:
    # The launcher looks for its record before anything has made the database.
    from slotmgr.history import query as history_query

    run_files.write_launch(db, launch())
    run_hook(tmp_path, db, SERVICE_RESULT="success", EXIT_CODE="exited", EXIT_STATUS="0")
    assert not os.path.exists(db)
    rec = history_query.get_run(db, RUN)
    assert rec is not None and rec.run_id == RUN
    # `slotmgr history` as the spool's owner stores it, then lists it.
    listed = history_query.records(db, history_query.HistoryQuery())
    assert [r.run_id for r in listed] == [RUN] and os.path.exists(db)
    assert os.listdir(history.spool_dir(db)) == []


def test_collect_returns_its_own_run_and_stores_every_waiting_pair(tmp_path: Path, db: str) -> None:
    """The launcher reads its own pair alone, then stores all that wait (one
    turn at the lock); a run another launcher stored already is found in the
    database."""
    other = "f" * 32
    run_files.write_launch(db, launch(run_id=other, job_id="other"))
    spool = history.spool_dir(db)
    Path(spool, f"{other}.end").write_text(
        "service_result=success\nexit_code=exited\nexit_status=0\n"
    )
    os.chmod(Path(spool, f"{other}.end"), 0o600)
    run_files.write_launch(db, launch())
    run_hook(tmp_path, db, SERVICE_RESULT="exit-code", EXIT_CODE="exited", EXIT_STATUS="3")
    rec = run_files.collect(db, RUN, timeout=1)
    assert rec is not None and (rec.run_id, rec.exit_status) == (RUN, 3)
    assert os.listdir(spool) == []
    with sqlite3.connect(db) as conn:
        rows = sorted(conn.execute("SELECT run_id, result FROM jobs").fetchall())
    assert rows == sorted([(RUN, "exit-code"), (other, "success")])
    again = run_files.collect(db, other, timeout=1)  # stored by the first: from the database
    assert again is not None and (again.job_id, again.exit_status) == ("other", 0)


def test_a_launcher_whose_pair_another_stored_meanwhile_reports_the_stored_record(
    tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """collect() reads its own pair without the lock. Another launcher may store
    that pair, and take its stop note, between the read of the files and the
    read of the note: the launcher must then report the stored record, not
    one without the note (seen in the 252 guest: a job stopped by its
    launcher's SIGTERM summarised as exit-code 143, not cancelled)."""
    note = StopNote(by="signal SIGTERM to slotmgr run")
    spool_user_job_stopped_by(
        note,
        tmp_path,
        db,
        monkeypatch,
        SERVICE_RESULT="exit-code",
        EXIT_CODE="exited",
        EXIT_STATUS="143",
    )
    real_read = stopnote.read
    raced: list[bool] = []

    def read_after_another_stored_it(invocation: str, *, user_manager: bool) -> StopNote | None:
        if not raced:
            raced.append(True)
            assert history.store_spooled(db)  # the other launcher, under the lock
        return real_read(invocation, user_manager=user_manager)

    monkeypatch.setattr(stopnote, "read", read_after_another_stored_it)
    rec = run_files.collect(db, RUN, timeout=5)
    assert raced and rec is not None
    assert (rec.result, rec.stopped_by) == ("cancelled", note.by)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT run_id, result FROM jobs").fetchall()
    assert rows == [(RUN, "cancelled")]
