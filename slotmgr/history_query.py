"""`slotmgr history`: reading the job history, as any user, without writing to it.

The system history (/var/lib/slotmgr/history.db) is root's: users may read
it but not write, not even SQLite's shared-memory file. So it is opened
read-only; and when SQLite cannot open it so (no -wal/-shm beside it, which
SQLite deletes when the last writer closes, and no right to create them), as
immutable: with no -wal file every committed record is in the main file.
A non-root caller sees their own records only; that is slotmgr's rule, not
a secret, as the file itself is readable.
"""

from __future__ import annotations

import datetime
import os
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from slotmgr import history, values
from slotmgr.errors import PermissionDenied, SlotmgrError, UsageError
from slotmgr.record import JobRecord

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
            hour=0, minute=0, second=0, microsecond=0)
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


def scoped_query(query: HistoryQuery, *, caller_uid: int, caller_name: str, user_mode: bool
                 ) -> HistoryQuery:
    """Apply the rule that a non-root caller sees only their own records."""
    if caller_uid == 0 or user_mode:
        return query
    if query.user is not None and query.user != caller_name:
        raise PermissionDenied(
            f"--user {query.user}: you may see only your own history ({caller_name}); "
            "root sees everyone's"
        )
    return HistoryQuery(since=query.since, user=caller_name, slot=query.slot, limit=query.limit)


def get(path: str, job_id: str) -> JobRecord | None:
    """One job's record, or None (no such job, or no history yet)."""
    if not os.path.exists(path):
        return None
    try:
        with open_readonly(path) as conn:
            return history.get(conn, job_id)
    except sqlite3.DatabaseError:
        return None


def records(path: str, query: HistoryQuery) -> list[JobRecord]:
    """The matching records, oldest first; none if there is no history yet."""
    if not os.path.exists(path):
        return []
    try:
        with open_readonly(path) as conn:
            return history.query(conn, since=query.since, user=query.user, slot=query.slot,
                                 limit=query.limit, newest=query.limit is not None)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise SlotmgrError(f"cannot read the history {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise SlotmgrError(f"cannot read the history {path}: {exc}") from None
