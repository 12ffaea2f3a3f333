"""history.store, the one way records are written, with real SQLite and real
processes: many writers ending at once on a database none of them has made
yet lose nothing and write nothing twice."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from pathlib import Path

from slotmgr.history import store as history

from .test_history_query import record

WRITERS, EACH = 64, 3


def _write_many(path: str, writer: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait()
    for i in range(EACH):
        assert history.store(path, record(f"w{writer}j{i}", 1_700_000_000.0 + i))


def test_concurrent_writers_on_a_new_database_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "history.db")
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    writers = [ctx.Process(target=_write_many, args=(path, w, start)) for w in range(WRITERS)]
    for proc in writers:
        proc.start()
    start.set()  # all at once, before any of them has created the database
    for proc in writers:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in writers] == [0] * WRITERS
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT job_id) FROM jobs").fetchone()
        assert rows == (WRITERS * EACH, WRITERS * EACH)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_record_is_stored_once_and_nothing_is_world_writable(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "history.db")
    old = os.umask(0)  # whatever the caller's umask, nothing world-writable
    try:
        assert history.store(path, record("once", 1_700_000_000.0)) is True
        assert history.store(path, record("once", 1_700_000_001.0)) is False
    finally:
        os.umask(old)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
    for name in (path, path + ".lock", os.path.dirname(path)):
        assert not os.stat(name).st_mode & stat.S_IWOTH, name
