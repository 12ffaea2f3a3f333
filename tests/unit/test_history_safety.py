"""The history's own safety, with real files, SQLite and processes: files
only their owner may open, lock waits with a deadline and a spool, one
record per run, a corrupt database moved aside, the users' own copies, and
the environment override ignored as root."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import cast

import pytest

from slotmgr.caller import Caller
from slotmgr.errors import SlotmgrError
from slotmgr.history import query as history_query
from slotmgr.history import store as history
from slotmgr.history.query import HistoryQuery, HistorySource
from slotmgr.history.record import JobRecord

from .test_history_query import record


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "state" / "history.db")


def test_every_history_file_is_0600_whatever_the_umask(db: str) -> None:
    old = os.umask(0)
    try:
        assert history.store(db, record("a", 1.0))
        with history.open_db(db) as conn:  # a connection open: -wal and -shm exist
            names = [db, db + "-wal", db + "-shm", db + ".lock"]
            assert all(os.path.exists(n) for n in names)
            assert {n: mode(n) for n in names} == {n: 0o600 for n in names}
            assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
    finally:
        os.umask(old)


def test_an_old_install_with_0644_files_is_fixed_on_open(db: str) -> None:
    assert history.store(db, record("a", 1.0))
    for name in (db, db + ".lock"):
        os.chmod(name, 0o644)
    assert history.store(db, record("b", 2.0))
    assert mode(db) == 0o600 and mode(db + ".lock") == 0o600


def test_a_symlink_is_never_followed(db: str, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    os.makedirs(os.path.dirname(db))
    os.symlink(target, db + ".lock")
    with pytest.raises(SlotmgrError, match="symlink: refused"):
        history.store(db, record("a", 1.0))
    os.unlink(db + ".lock")
    os.symlink(target, db)
    # The database itself a symlink: refused too, and the record kept in the spool.
    assert history.store(db, record("a", 1.0))
    assert target.read_text() == "precious"
    assert os.listdir(history.spool_dir(db)) == ["run-a.json"]


def test_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(SlotmgrError, match="may be written by others"):
        history.store(str(shared / "history.db"), record("a", 1.0))
    assert os.listdir(shared) == []


def _hold_lock(path: str, held: multiprocessing.synchronize.Event, seconds: float) -> None:
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    held.set()
    time.sleep(seconds)


def test_a_held_lock_costs_a_deadline_and_loses_no_record(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert history.store(db, record("first", 1.0))
    ctx = multiprocessing.get_context("fork")
    held = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(db + ".lock", held, 30))
    holder.start()
    try:
        assert held.wait(10)
        began = time.monotonic()
        assert history.store(db, record("second", 2.0), lock_deadline_s=0.5)
        assert time.monotonic() - began < 5  # the deadline, not the holder's 30 s
        assert "was held for more than 0.5s" in capsys.readouterr().err
        assert [n for n in os.listdir(history.spool_dir(db))] == ["run-second.json"]
        # Readers see the spooled record at once, while the lock is still held.
        assert [r.job_id for r in history_query.records(db, HistoryQuery())] == ["first", "second"]
        assert cast(JobRecord, history_query.get_run(db, "run-second")).job_id == "second"
    finally:
        holder.kill()
        holder.join()
    assert history.store(db, record("third", 3.0))  # the next writer ingests the spool
    assert os.listdir(history.spool_dir(db)) == []
    with history.open_db(db) as conn:
        assert [r.job_id for r in history.query(conn)] == ["first", "second", "third"]


def test_a_reused_job_id_is_two_runs_each_read_back_by_its_run(db: str) -> None:
    assert history.store(db, record("requeued", 1.0, run_id="run1"))
    assert history.store(db, record("requeued", 5.0, run_id="run2"))
    assert not history.store(db, record("requeued", 5.0, run_id="run2"))  # same run: once
    with history.open_db(db) as conn:
        assert cast(JobRecord, history.get(conn, "requeued")).run_id == "run2"  # the newest run
        assert cast(JobRecord, history.get_run(conn, "run1")).end_time == 1.0
    runs = history_query.records(db, HistoryQuery())
    assert [(r.job_id, r.run_id) for r in runs] == [("requeued", "run1"), ("requeued", "run2")]


def test_a_database_of_the_first_schema_is_migrated_keeping_its_rows(db: str) -> None:
    os.makedirs(os.path.dirname(db))
    old = sqlite3.connect(db)
    old.executescript("""
        CREATE TABLE jobs (job_id TEXT PRIMARY KEY, unit TEXT NOT NULL, user TEXT NOT NULL,
            uid INTEGER NOT NULL, slot TEXT, start_time REAL NOT NULL, end_time REAL NOT NULL,
            result TEXT NOT NULL, record TEXT NOT NULL);
        CREATE INDEX jobs_end_time ON jobs (end_time);
    """)
    data = json.loads(record("old", 1.0).to_json())
    del data["run_id"], data["stopped_by"]
    old.execute(
        "INSERT INTO jobs VALUES ('old', 'slotmgr-old.service', 'root', 0, NULL, 0, 1,"
        " 'success', ?)",
        (json.dumps(data),),
    )
    old.commit()
    old.close()
    assert history.store(db, record("old", 9.0, run_id="new-run"))  # same id, a new run
    with history.open_db(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (history.SCHEMA_VERSION,)
        runs = [(r.job_id, r.run_id) for r in history.query(conn)]
    assert runs == [("old", "legacy-old"), ("old", "new-run")]


def test_a_corrupt_database_is_moved_aside_and_the_record_stored(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert history.store(db, record("before", 1.0))
    with open(db, "r+b") as f:  # overwrite the header and the first pages
        f.write(os.urandom(8192))
    assert history.store(db, record("after", 2.0))
    err = capsys.readouterr().err
    assert "is corrupt: moved it to" in err
    aside = [n for n in os.listdir(os.path.dirname(db)) if ".corrupt-" in n]
    assert len(aside) >= 1 and any(n.startswith("history.db.corrupt-") for n in aside)
    assert [r.job_id for r in history_query.records(db, HistoryQuery())] == ["after"]


def test_the_override_is_ignored_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTMGR_HISTORY_DB", "/home/mallory/mine.db")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert history.default_db_path(False) == history.SYSTEM_DB
    assert history.default_db_path(True) == "/home/mallory/mine.db"  # root's own user manager
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert history.default_db_path(False) == "/home/mallory/mine.db"


def test_a_users_copy_is_theirs_alone(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test makes files of another uid: run it as root (CI does)")
    theirs = record("alicejob", 1.0, user="alice")  # uid 1000
    assert history.store(db, theirs)
    copy = history.user_copy_path(db, 1000)
    st = os.stat(copy)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (1000, 0o600)
    users = os.stat(history.users_dir(db))
    assert users.st_uid == 0 and stat.S_IMODE(users.st_mode) == 0o755
    assert history.store(db, record("rootjob", 2.0))  # root's own job: no copy
    assert os.listdir(history.users_dir(db)) == ["1000.jsonl"]
    with open(copy, "a") as f:
        f.write('{"cut short')  # a line cut short does not hide the others
    source = history_query.source_for(Caller(1000, user_mode=False))
    assert source.own_copy
    monkeypatch.setattr(history, "SYSTEM_DB", db)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    source = history_query.source_for(Caller(1000, user_mode=False))
    assert source == HistorySource(copy, own_copy=True)
    monkeypatch.setenv("SLOTMGR_HISTORY_DB", "/home/alice/own.db")  # a database of her own
    assert history_query.source_for(Caller(1000, user_mode=False)) == HistorySource(
        "/home/alice/own.db", own_copy=False
    )
    assert [r.job_id for r in history_query.records(source, HistoryQuery())] == ["alicejob"]
    assert history_query.get(source, "alicejob") == theirs
