"""`slotmgr history` without systemd: --since, the non-root rule, read-only
access, and the command itself against a database made here."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from slotmgr.caller import Caller
from slotmgr.errors import ExitCode, PermissionDenied, UsageError
from slotmgr.history import query as history_query
from slotmgr.history import store as history
from slotmgr.history.query import HistoryQuery, parse_since
from slotmgr.history.record import JobRecord, validate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - 7200),
        ("2h ago", NOW - 7200),
        ("-90s", NOW - 90),
        ("1h 30min", NOW - 5400),
        ("3d", NOW - 3 * 86400),
        ("@1600000000", 1_600_000_000),
        ("@1.5", 1.5),
        ("infinity", 0.0),
    ],
)
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, now=NOW) == pytest.approx(expected)


def test_parse_since_dates_are_local_time() -> None:
    assert parse_since("2024-05-01", now=NOW) == datetime.datetime(2024, 5, 1).timestamp()
    assert (
        parse_since("2024-05-01 14:30", now=NOW)
        == datetime.datetime(2024, 5, 1, 14, 30).timestamp()
    )
    assert (
        parse_since("2024-05-01T14:30:05", now=NOW)
        == datetime.datetime(2024, 5, 1, 14, 30, 5).timestamp()
    )
    midnight = datetime.datetime.fromtimestamp(NOW).replace(hour=0, minute=0, second=0)
    assert parse_since("today", now=NOW) == midnight.timestamp()
    assert parse_since("yesterday", now=NOW) == (midnight - datetime.timedelta(days=1)).timestamp()


@pytest.mark.parametrize(
    "text", ["", "soon", "2024-13-01", "2024-05-01 25:00", "@x", "5 parsecs", "1h ago ago"]
)
def test_parse_since_refuses(text: str) -> None:
    with pytest.raises(UsageError, match=rf"invalid --since {text!r}: use a date") as err:
        parse_since(text, now=NOW)
    assert err.value.exit_code == ExitCode.USAGE


def test_non_root_sees_only_their_own_history() -> None:
    query = HistoryQuery(slot="1", limit=5)
    assert history_query.scoped_query(query, Caller(0, user_mode=False), "root") == query
    mine = history_query.scoped_query(query, Caller(1000, user_mode=False), "alice")
    assert mine == HistoryQuery(user="alice", slot="1", limit=5)
    assert (
        history_query.scoped_query(
            HistoryQuery(user="alice"), Caller(1000, user_mode=False), "alice"
        ).user
        == "alice"
    )
    with pytest.raises(PermissionDenied, match="--user bob: you may see only your own history"):
        history_query.scoped_query(HistoryQuery(user="bob"), Caller(1000, user_mode=False), "alice")
    # The user's own database under --user holds only their jobs: no filter needed.
    assert (
        history_query.scoped_query(
            HistoryQuery(user="bob"), Caller(1000, user_mode=True), "alice"
        ).user
        == "bob"
    )


def record(
    job_id: str, end: float, user: str = "root", slot: str | None = None, run_id: str | None = None
) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        unit=f"slotmgr-{job_id}.service",
        slice="slotmgr.slice",
        slot=slot,
        user=user,
        uid=0 if user == "root" else 1000,
        command=["sleep", "1"],
        start_time=end - 1,
        end_time=end,
        wall_time_usec=1_000_000,
        result="success",
        exit_status=0,
        cpu_usage_usec=1000,
        cpu_user_usec=600,
        cpu_system_usec=400,
        memory_peak_bytes=4096,
        memory_peak_source="cgroup memory.peak",
        io_read_bytes=0,
        io_write_bytes=0,
        tasks_peak=1,
        ip_ingress_bytes=None,
        ip_egress_bytes=None,
        systemd_version="252",
        hostname="node1",
        run_id=run_id or f"run-{job_id}",
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "state" / "history.db")
    with history.open_db(path) as conn:
        for i in range(6):
            history.insert(
                conn,
                record(
                    f"j{i}", NOW + i, user="alice" if i % 2 else "root", slot="1" if i < 3 else None
                ),
            )
    return path


def test_records_filters_and_limit_keeps_the_newest(db: str) -> None:
    everything = history_query.records(db, HistoryQuery())
    assert [r.job_id for r in everything] == ["j0", "j1", "j2", "j3", "j4", "j5"]
    assert [r.job_id for r in history_query.records(db, HistoryQuery(limit=2))] == ["j4", "j5"]
    assert [r.job_id for r in history_query.records(db, HistoryQuery(user="alice"))] == [
        "j1",
        "j3",
        "j5",
    ]
    assert [r.job_id for r in history_query.records(db, HistoryQuery(slot="1"))] == [
        "j0",
        "j1",
        "j2",
    ]
    assert [r.job_id for r in history_query.records(db, HistoryQuery(since=NOW + 4))] == [
        "j4",
        "j5",
    ]
    assert cast(JobRecord, history_query.get(db, "j3")).user == "alice"
    assert history_query.get(db, "nope") is None
    assert history_query.records(db + ".missing", HistoryQuery()) == []


def test_a_batch_jobs_records_are_its_own_and_its_steps_and_the_limit_comes_after(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "state" / "history.db")
    ids = ["5.batch", "5.0.0", "5.0.1", "51.batch", "5", None, "6.0.0", "5x"]
    with history.open_db(path) as conn:
        for i, batch_id in enumerate(ids):
            rec = dataclasses.replace(record(f"b{i}", NOW + i), batch_id=batch_id)
            history.insert(conn, rec)
    of_5 = history_query.records(path, HistoryQuery(batch_id="5"))
    assert [r.batch_id for r in of_5] == ["5.batch", "5.0.0", "5.0.1", "5"]
    # --limit counts the batch job's records, not the history's newest.
    newest = history_query.records(path, HistoryQuery(batch_id="5", limit=2))
    assert [r.batch_id for r in newest] == ["5.0.1", "5"]
    assert history_query.records(path, HistoryQuery(batch_id="7")) == []
    # A non-root caller's query keeps the batch id, scoped to their own records.
    scoped = history_query.scoped_query(
        HistoryQuery(batch_id="5"), Caller(1000, user_mode=False), "alice"
    )
    assert (scoped.batch_id, scoped.user) == ("5", "alice")


def test_open_readonly_refuses_writes(db: str) -> None:
    with history_query.open_readonly(db) as conn, pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM jobs")


def slotmgr_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slotmgr", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO, **env},
        timeout=60,
    )


# SLOTMGR_HISTORY_DB is honoured for --user (and a non-root caller) only, so
# the command is run with --user here: it reads that database without a bus.
def test_history_command_table_and_json(db: str) -> None:
    env = {"SLOTMGR_HISTORY_DB": db}
    out = slotmgr_cli("--user", "history", "--limit", "2", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:5] == ["JOB", "USER", "SLOT", "ENDED", "RESULT"]
    assert [line.split()[0] for line in lines[1:]] == ["j4", "j5"]
    out = slotmgr_cli("--user", "history", "--json", "--slot", "1", "--user", "alice", env=env)
    records = json.loads(out.stdout)
    assert [r["job_id"] for r in records] == ["j1"]
    assert validate(records[0]) == []


def test_history_command_without_a_database(tmp_path: Path) -> None:
    env = {"SLOTMGR_HISTORY_DB": str(tmp_path / "none.db")}
    out = slotmgr_cli("--user", "history", env=env)
    assert out.returncode == 0 and "no history yet" in out.stdout
    assert json.loads(slotmgr_cli("--user", "history", "--json", env=env).stdout) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "soon"], "invalid --since 'soon'"),
        (["--limit", "0"], "invalid --limit '0'"),
        (["--limit", "many"], "invalid --limit 'many'"),
        (["--slot", "x"], "invalid --slot 'x'"),
    ],
)
def test_history_command_bad_input(args: list[str], message: str, tmp_path: Path) -> None:
    out = slotmgr_cli(
        "--user", "history", *args, env={"SLOTMGR_HISTORY_DB": str(tmp_path / "h.db")}
    )
    assert out.returncode == ExitCode.USAGE
    assert out.stderr.strip() == out.stderr.strip().splitlines()[0]
    assert message in out.stderr and "Traceback" not in out.stderr
