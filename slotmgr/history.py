"""The durable job history: one SQLite database in WAL mode.

Each finished job is one row, inserted once by the recorder (the job's
ExecStopPost= hook, run by systemd). The job id is the primary key, so a
record can neither be lost to a dead launcher nor written twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from slotmgr.record import JobRecord

SYSTEM_DB = "/var/lib/slotmgr/history.db"
_BUSY_TIMEOUT_S = 60.0  # many jobs may end at once; writers queue for the lock


def default_db_path(user_mode: bool) -> str:
    """/var/lib/slotmgr for the system manager; the user's state dir for --user."""
    override = os.environ.get("SLOTMGR_HISTORY_DB")
    if override:
        return override
    if not user_mode:
        return SYSTEM_DB
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "slotmgr", "history.db")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    unit TEXT NOT NULL,
    user TEXT NOT NULL,
    uid INTEGER NOT NULL,
    slot TEXT,
    start_time REAL NOT NULL,
    end_time REAL NOT NULL,
    result TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_end_time ON jobs (end_time);
"""


@contextmanager
def _creating_beside(path: str) -> Iterator[None]:
    """Make the database's directory, and files created within this block,
    0755/0644 whatever the caller's umask: readable so users can query their
    history, writable by its owner (root for the system history) only."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    old_umask = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old_umask)


@contextmanager
def open_db(path: str, *, create: bool = True) -> Iterator[sqlite3.Connection]:
    with _creating_beside(path) if create else nullcontext():
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        yield conn
    finally:
        conn.close()


def insert(conn: sqlite3.Connection, rec: JobRecord) -> bool:
    """Store a record; False if this job id was already recorded."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO jobs (job_id, unit, user, uid, slot, start_time, end_time, result,"
        " record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            rec.job_id,
            rec.unit,
            rec.user,
            rec.uid,
            rec.slot,
            rec.start_time,
            rec.end_time,
            rec.result,
            rec.to_json(),
        ),
    )
    return cur.rowcount == 1


_STORE_ATTEMPTS = 5


def store(path: str, rec: JobRecord) -> bool:
    """Store a finished job's record, the way every writer does; False if
    this job id was already recorded.

    Writers take turns on an advisory lock (`PATH.lock`, beside the database)
    before they open it, so many jobs ending at once queue there instead of
    in SQLite's busy handling, which gives up at once in some cases
    ("database is locked" was seen when the first records created the
    database while others opened it). Readers do not take the lock: in WAL
    mode they never block a writer. What SQLite still reports as busy is
    retried."""
    with _creating_beside(path):
        lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        for attempt in range(_STORE_ATTEMPTS):
            try:
                with open_db(path) as conn:
                    return insert(conn, rec)
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or attempt == _STORE_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")
    finally:
        os.close(lock_fd)  # releases the lock


def get(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    row = conn.execute("SELECT record FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else JobRecord.from_dict(json.loads(row[0]))


def query(
    conn: sqlite3.Connection,
    *,
    since: float | None = None,
    user: str | None = None,
    slot: str | None = None,
    limit: int | None = None,
    newest: bool = False,
) -> list[JobRecord]:
    """Records by end time, oldest first; with `newest`, `limit` keeps the
    most recent ones (still returned oldest first)."""
    where: list[str] = []
    args: list[Any] = []
    if since is not None:
        where.append("end_time >= ?")
        args.append(since)
    if user is not None:
        where.append("user = ?")
        args.append(user)
    if slot is not None:
        where.append("slot = ?")
        args.append(slot)
    sql = "SELECT record FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY end_time DESC, job_id DESC" if newest else " ORDER BY end_time, job_id"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    records = [JobRecord.from_dict(json.loads(r[0])) for r in conn.execute(sql, args)]
    return records[::-1] if newest else records
