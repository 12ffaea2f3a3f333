"""`slotmgr history`: reading the job history without writing to it.

The system history (/var/lib/slotmgr/history.db) is root's alone (0600: a
reader could otherwise hold SQLite's locks and stall the writers). Root
reads it directly, together with records still waiting in its spool. A user
reads the copy of their own records root appends to
`users/<uid>.jsonl` beside it (history.append_for_user), which no other user
can read; so a user sees their own records and nobody else's. A `--user`
job's history is the user's own database under $XDG_STATE_HOME.
The database is opened read-only; and when SQLite cannot open it so (no
-wal/-shm beside it, which SQLite deletes when the last writer closes), as
immutable: with no -wal file every committed record is in the main file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from slotmgr.caller import Caller
from slotmgr.deadline import Deadline
from slotmgr.errors import PermissionDenied, SlotmgrError, UsageError
from slotmgr.history import store as history
from slotmgr.history.private_files import open_private
from slotmgr.history.record import JobRecord
from slotmgr.systemd import values

_SINCE_HELP = (
    "use a date (2024-05-01), a date and time (2024-05-01 14:30), a time span back "
    "from now (2h, 3d, '1h 30min', '2h ago'), today, yesterday, or @EPOCH"
)


def parse_since(text: str, *, now: float | None = None) -> float:
    """--since TEXT -> seconds since the epoch (local time for dates)."""
    now = time.time() if now is None else now
    value = text.strip()
    if not value:
        raise UsageError(f"invalid --since {text!r}: {_SINCE_HELP}")
    if value in ("today", "yesterday"):
        midnight = datetime.datetime.fromtimestamp(now).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        if value == "yesterday":
            midnight -= datetime.timedelta(days=1)
        return midnight.timestamp()
    if value.startswith("@"):
        try:
            return float(value[1:])
        except ValueError:
            raise UsageError(f"invalid --since {text!r}: {_SINCE_HELP}") from None
    if re.match(r"^\d{4}-\d{2}-\d{2}", value):
        try:
            return datetime.datetime.fromisoformat(value).timestamp()
        except ValueError:
            raise UsageError(f"invalid --since {text!r}: {_SINCE_HELP}") from None
    span = value[1:] if value.startswith("-") else value
    span = span[: -len("ago")].strip() if span.endswith(" ago") else span
    try:
        usec = values.parse_timespan_usec(span)
    except ValueError:
        raise UsageError(f"invalid --since {text!r}: {_SINCE_HELP}") from None
    if usec == values.USEC_INFINITY:
        return 0.0
    return now - usec / 1e6


@contextmanager
def open_readonly(path: str) -> Iterator[sqlite3.Connection]:
    """Open the history for reading only (see the module's docstring)."""
    quoted = urllib.parse.quote(os.path.abspath(path))
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(f"file:{quoted}?mode=ro", uri=True, timeout=10)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        if conn is not None:
            conn.close()
        if os.path.exists(path + "-wal"):
            raise
        conn = sqlite3.connect(f"file:{quoted}?immutable=1", uri=True)
    try:
        yield conn
    finally:
        conn.close()


@dataclass(frozen=True)
class HistoryQuery:
    since: float | None = None
    user: str | None = None
    slot: str | None = None
    limit: int | None = None
    # A batch job's records: batch id ID itself, or ID.anything (its steps, tasks).
    batch_id: str | None = None


def scoped_query(query: HistoryQuery, caller: Caller, caller_name: str) -> HistoryQuery:
    """Apply the rule that a non-root caller sees only their own records
    (slotmgr.caller; records are asked for by the user's name)."""
    if caller.controls_everything:
        return query
    if query.user is not None and query.user != caller_name:
        raise PermissionDenied(
            f"--user {query.user}: you may see only your own history ({caller_name}); "
            "root sees everyone's"
        )
    return dataclasses.replace(query, user=caller_name)


@dataclass(frozen=True)
class HistorySource:
    """Where a caller's history is read from."""

    path: str
    own_copy: bool  # the caller's copy of their own records, not the database


def source_for(caller: Caller) -> HistorySource:
    """Root and --user read the database; a user on the system manager their
    own copy, unless they name a database of their own (SLOTMGR_HISTORY_DB)."""
    db = history.default_db_path(caller.user_mode)
    if caller.controls_everything or db != history.SYSTEM_DB:
        return HistorySource(db, own_copy=False)
    return HistorySource(history.user_copy_path(db, caller.uid), own_copy=True)


def _matches(rec: JobRecord, query: HistoryQuery) -> bool:
    return (
        (query.since is None or rec.end_time >= query.since)
        and (query.user is None or rec.user == query.user)
        and (query.slot is None or rec.slot == query.slot)
        and (query.batch_id is None or of_batch_job(rec.batch_id, query.batch_id))
    )


def of_batch_job(batch_id: str | None, wanted: str) -> bool:
    """Whether a record's batch id is `wanted` or one of its parts
    (`5` has `5`, `5.batch`, `5.0.1`; not `51`)."""
    return batch_id is not None and (batch_id == wanted or batch_id.startswith(wanted + "."))


def _select(found: list[JobRecord], query: HistoryQuery) -> list[JobRecord]:
    """The query on records read outside SQLite, ordered as history.query does."""
    chosen = sorted((r for r in found if _matches(r, query)), key=lambda r: (r.end_time, r.job_id))
    return chosen[-query.limit :] if query.limit is not None else chosen


def _ingest_spool_now(path: str) -> None:
    """As the database's owner, move what waits in the spool into it, if the
    lock is free at once: `slotmgr history` never waits for a writer."""
    spool = history.spool_dir(path)
    if not os.path.isdir(spool) or os.stat(spool).st_uid != os.geteuid():
        return
    if not history.spooled(path):
        return
    lock_fd = open_private(path + ".lock")
    try:
        if history.lock_with_deadline(lock_fd, 0):
            with history.open_db(path) as conn:
                history.ingest_spool(path, conn, warn=lambda _text: None)
    finally:
        os.close(lock_fd)


def ingest(*, user_mode: bool) -> None:
    """Store every record waiting in the spool, waiting for the lock as a
    writer does (`slotmgr history --ingest`): the database's owner only."""
    path = history.default_db_path(user_mode)
    if not user_mode and os.geteuid() != 0:
        raise PermissionDenied(
            f"--ingest: only root stores records in {path}",
            hint="root's slotmgr-ingest.timer does it",
        )
    if not os.path.exists(history.spool_dir(path)):
        return
    if not history.store_spooled(path):
        raise SlotmgrError(
            f"{path}.lock was held for more than {history.LOCK_DEADLINE_S:g}s: "
            "nothing stored now; the records stay in the spool"
        )


def _database_records(path: str, query: HistoryQuery) -> list[JobRecord]:
    try:
        with open_readonly(path) as conn:
            # The batch id is inside the record: filtered here, before any limit.
            sql_limit = None if query.batch_id is not None else query.limit
            found = history.query(
                conn,
                since=query.since,
                user=query.user,
                slot=query.slot,
                limit=sql_limit,
                newest=sql_limit is not None,
            )
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise SlotmgrError(f"cannot read the history {path}: {exc}") from None
        found = []
    except sqlite3.DatabaseError as exc:
        raise SlotmgrError(f"cannot read the history {path}: {exc}") from None
    waiting = [rec for _name, rec in history.spooled(path)]
    if not waiting and query.batch_id is None:
        return found
    runs = {r.run_id for r in found}
    return _select(found + [r for r in waiting if r.run_id not in runs], query)


def records(source: HistorySource | str, query: HistoryQuery) -> list[JobRecord]:
    """The matching records, oldest first; none if there is no history yet."""
    if isinstance(source, str):
        source = HistorySource(source, own_copy=False)
    if source.own_copy:
        return _select(history.read_user_copy(source.path), query)
    with contextlib.suppress(OSError, sqlite3.Error, SlotmgrError):
        _ingest_spool_now(source.path)
    if not os.path.exists(source.path):
        return _select([rec for _name, rec in history.spooled(source.path)], query)
    return _database_records(source.path, query)


def _lookup(source: HistorySource | str, key: str, *, by_run: bool) -> JobRecord | None:
    if isinstance(source, str):
        source = HistorySource(source, own_copy=False)

    def wanted(rec: JobRecord) -> bool:
        return (rec.run_id if by_run else rec.job_id) == key

    if source.own_copy:
        candidates = [r for r in history.read_user_copy(source.path) if wanted(r)]
    else:
        # The spool first: a first record waits there before any database exists.
        candidates = [r for _name, r in history.spooled(source.path) if wanted(r)]
        found = None
        if os.path.exists(source.path):
            try:
                with open_readonly(source.path) as conn:
                    found = history.get_run(conn, key) if by_run else history.get(conn, key)
            except sqlite3.DatabaseError:
                found = None
        if found is not None:
            candidates.append(found)
    return max(candidates, key=lambda r: r.end_time) if candidates else None


def get(source: HistorySource | str, job_id: str) -> JobRecord | None:
    """The newest run of a job, or None (no such job, or no history yet)."""
    return _lookup(source, job_id, by_run=False)


def get_run(source: HistorySource | str, run_id: str) -> JobRecord | None:
    """One run's record (the database or its spool), or None."""
    return _lookup(source, run_id, by_run=True)


def wait_for_record(db_path: str, run_id: str, *, timeout: float = 30.0) -> JobRecord | None:
    """The record of this run: in the database, its spool, or (a caller who
    is not root, on the system manager) the caller's own copy. A service's
    stop hook has written it to the spool before the unit turns inactive, so
    it is normally there at once; the wait covers a slow or busy file system."""
    sources = [HistorySource(db_path, own_copy=False)]
    if os.geteuid() != 0:
        sources.append(HistorySource(history.user_copy_path(db_path, os.geteuid()), own_copy=True))
    deadline = Deadline.after(timeout)
    while True:
        for source in sources:
            with contextlib.suppress(OSError, SlotmgrError):
                rec = get_run(source, run_id)
                if rec is not None:
                    return rec
        if deadline.expired():
            return None
        time.sleep(0.05)
