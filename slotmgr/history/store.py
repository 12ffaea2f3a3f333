"""The durable job history: one SQLite database in WAL mode, root's alone.

Each finished run of a job is one row, keyed by the run's own id: a job id
may be reused (a batch system requeueing a job), a run id never is. A
service job's record is made from two files in the spool (slotmgr.history.hook:
the launcher's, and the one its ExecStopPost= hook writes), stored by the
launcher, by `slotmgr history`, or by slotmgr-ingest.timer. So a record can
neither be lost to a dead launcher, nor written twice, nor taken for
another run's.

Nobody but the database's owner (root, for the system history) may open or
lock any of its files (slotmgr.history.private_files). Every lock wait has a
deadline: a writer that cannot get the lock in time puts its record in a
spool directory beside the database (`history.db.spool/`), which the next
writer, or `slotmgr history`, moves into the database. A database SQLite
finds corrupt is moved aside (`history.db.corrupt-<time>`) and a new one
started.

Users see their own records in a copy of each of their records, appended by
root to `users/<uid>.jsonl` beside the database (see
`append_for_user`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import sqlite3
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, TypeVar

from slotmgr.deadline import Deadline, flock_within
from slotmgr.errors import SlotmgrError
from slotmgr.history.private_files import (
    PRIVATE_MODE,
    make_directory,
    open_private,
    secure_files,
)
from slotmgr.history.record import JobRecord

SYSTEM_DB = "/var/lib/slotmgr/history.db"
SCHEMA_VERSION = 2  # PRAGMA user_version; 0: the first schema, one row per job id
LOCK_DEADLINE_S = 15.0  # the longest a writer waits for its turn before it spools
_LOCK_POLL_S = 0.05
_BUSY_TIMEOUT_S = 60.0  # SQLite's own wait, for a reader's brief lock
_STORE_ATTEMPTS = 5
_USER_COPY_ATTEMPTS = 5  # O_NONBLOCK opens: a lease the user holds must not stall root

Warn = Callable[[str], None]
T = TypeVar("T")


def warn_journal(text: str) -> None:
    """To the journal, and to stderr: the writer's stderr (a launcher's, or
    the ingest timer's) may be a terminal or pipe that is gone."""
    import syslog

    with contextlib.suppress(OSError):
        syslog.openlog("slotmgr", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_WARNING, f"history: {text}")
    with contextlib.suppress(OSError, ValueError):
        print(f"slotmgr: history: {text}", file=sys.stderr, flush=True)


def default_db_path(user_mode: bool) -> str:
    """/var/lib/slotmgr for the system manager; the user's state dir for --user.

    SLOTMGR_HISTORY_DB is honoured for --user and for a caller that is not
    root only: as root (the launcher that writes the stop hook's command,
    and whoever stores records) the job's environment must never move where
    root writes or reads."""
    override = os.environ.get("SLOTMGR_HISTORY_DB")
    if override and (user_mode or os.geteuid() != 0):
        return override
    if not user_mode:
        return SYSTEM_DB
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "slotmgr", "history.db")


def spool_dir(path: str) -> str:
    return path + ".spool"


def users_dir(path: str) -> str:
    return os.path.join(os.path.dirname(path) or ".", "users")


def user_copy_path(path: str, uid: int) -> str:
    """The file of `uid`'s own records beside the database `path`."""
    return os.path.join(users_dir(path), f"{uid}.jsonl")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    run_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
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
CREATE INDEX IF NOT EXISTS jobs_job_id ON jobs (job_id, end_time);
"""


def legacy_run_id(job_id: str) -> str:
    """The run id given to a record stored before runs had ids."""
    return f"legacy-{job_id}"


# -- the database -------------------------------------------------------------------


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database to SCHEMA_VERSION, keeping every row. Version 0 had
    one row per job id (job_id the primary key): each becomes a run of its
    own, with the run id legacy_run_id(job_id)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version < SCHEMA_VERSION:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
            old_rows: list[tuple[Any, ...]] = []
            if columns and "run_id" not in columns:
                old_rows = conn.execute("SELECT job_id, record FROM jobs").fetchall()
                conn.execute("DROP INDEX IF EXISTS jobs_end_time")
                conn.execute("ALTER TABLE jobs RENAME TO jobs_v0")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for job_id, text in old_rows:
                data = json.loads(text)
                data.setdefault("run_id", legacy_run_id(job_id))
                _insert_row(conn, JobRecord.from_dict(data))
            conn.execute("DROP TABLE IF EXISTS jobs_v0")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@contextmanager
def open_db(path: str, *, create: bool = True) -> Iterator[sqlite3.Connection]:
    """Open the database to write it, migrated to the current schema.
    With `create`, its directory and a new database are made if missing."""
    if create:
        make_directory(os.path.dirname(path) or ".")
    elif not os.path.exists(path):
        raise FileNotFoundError(path)
    if os.path.islink(path):
        raise SlotmgrError(f"history file {path} is a symlink: refused")
    secure_files(path)  # SQLite gives -wal and -shm the database's mode (0600)
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    try:
        _prepare(conn)
        yield conn
    finally:
        conn.close()


def _prepare(conn: sqlite3.Connection) -> None:
    """WAL mode and the current schema. Switching a new database to WAL while
    another connection opens it can fail as "locked" at once, without SQLite's
    busy wait (seen with 8 writers on one new file): retried until the
    deadline, then the error is raised as it came."""
    deadline = Deadline.after(_BUSY_TIMEOUT_S)
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            _migrate(conn)
            return
        except sqlite3.OperationalError as exc:
            transient = "locked" in str(exc) or "busy" in str(exc)
            if not transient or deadline.expired():
                raise
            time.sleep(0.01)


def _insert_row(conn: sqlite3.Connection, rec: JobRecord) -> bool:
    cur = conn.execute(
        "INSERT OR IGNORE INTO jobs (run_id, job_id, unit, user, uid, slot, start_time, end_time,"
        " result, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            rec.run_id,
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


def insert(conn: sqlite3.Connection, rec: JobRecord) -> bool:
    """Store a record; False if this run was already recorded."""
    if not rec.run_id:
        raise ValueError(f"record of job {rec.job_id} has no run id")
    return _insert_row(conn, rec)


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """DatabaseError proper ("file is not a database", "database disk image
    is malformed"); its subclass OperationalError is busy, locked, I/O."""
    return not isinstance(exc, sqlite3.OperationalError) or "malformed" in str(exc)


def move_aside_corrupt(path: str, warn: Warn) -> str:
    """Move a corrupt database (and its -wal/-shm) out of the way, keeping it
    for whoever wants to look; the next open starts a new one."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = f"{path}.corrupt-{stamp}"
    n = 1
    while os.path.lexists(target):
        n += 1
        target = f"{path}.corrupt-{stamp}.{n}"
    os.rename(path, target)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.rename(path + suffix, target + suffix)
    warn(f"{path} is corrupt: moved it to {target} and started a new database")
    return target


def _with_recovery(path: str, warn: Warn, action: Callable[[sqlite3.Connection], T]) -> T:
    """Open the database and do `action` in it, retrying what SQLite reports
    as busy; a corrupt database is moved aside once and a new one used."""
    moved = False
    for attempt in range(_STORE_ATTEMPTS):
        try:
            with open_db(path) as conn:
                return action(conn)
        except sqlite3.DatabaseError as exc:
            if _is_corrupt(exc) and not moved:
                move_aside_corrupt(path, warn)
                moved = True
                continue
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or attempt == _STORE_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise SlotmgrError(f"cannot store records in {path}")


def _insert_with_recovery(path: str, rec: JobRecord, warn: Warn) -> bool:
    def ingest_and_insert(conn: sqlite3.Connection) -> bool:
        ingest_spool(path, conn, warn)
        return insert(conn, rec)

    return _with_recovery(path, warn, ingest_and_insert)


# -- the lock, its deadline, and the spool ------------------------------------------


def lock_with_deadline(fd: int, deadline_s: float) -> bool:
    """LOCK_EX, tried without blocking until the deadline; False if it did
    not come (a blocking flock could wait forever)."""
    return flock_within(fd, deadline_s, poll=_LOCK_POLL_S)


def private_spool_dir(path: str) -> str:
    """The spool beside the database `path`, made if missing; refused unless
    it is ours alone (root's hook writes there too)."""
    make_directory(os.path.dirname(path) or ".")
    directory = spool_dir(path)
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)  # the umask can only take bits away
    st = os.lstat(directory)
    if (
        not stat.S_ISDIR(st.st_mode)
        or st.st_uid != os.geteuid()
        or stat.S_IMODE(st.st_mode) & 0o077
    ):
        raise SlotmgrError(f"history spool {directory} is not a private directory of ours: refused")
    return directory


def write_whole(name: str, data: bytes) -> str:
    """Write the file `name` whole or not at all: a private temporary file,
    flushed to disk, renamed into place."""
    tmp = f"{name}.{os.getpid()}.tmp"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_MODE
    )
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, name)
    return name


def spool(path: str, rec: JobRecord) -> str:
    """Keep a record that could not be stored now, for the next writer."""
    name = os.path.join(private_spool_dir(path), f"{rec.run_id}.json")
    return write_whole(name, rec.to_json().encode())


def _spooled_records(path: str) -> list[tuple[str, JobRecord]]:
    """The whole records waiting in the spool (`spool`), with their files."""
    directory = spool_dir(path)
    found = []
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, PermissionError):
        return []
    for name in names:
        if not name.endswith(".json"):
            continue
        full = os.path.join(directory, name)
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            with os.fdopen(fd) as f:
                found.append((full, JobRecord.from_dict(json.load(f))))
        except (OSError, ValueError, TypeError):
            continue
    return found


def spooled(path: str) -> list[tuple[str, JobRecord]]:
    """Every record waiting in the spool, with its file: those kept there
    by `spool`, and those of the stop hook not yet stored (slotmgr.history.hook)."""
    from slotmgr.history import hook as stophook

    pairs = [(item.end_file, item.record) for item in stophook.pending(spool_dir(path))]
    return _spooled_records(path) + pairs


def ingest_spool(path: str, conn: sqlite3.Connection, warn: Warn = warn_journal) -> int:
    """Move the spooled records into the database (call with the lock held)."""
    moved = 0
    for name, rec in _spooled_records(path):
        insert(conn, rec)
        os.unlink(name)
        moved += 1
    if moved:
        warn(f"moved {moved} spooled record(s) into {path}")
    return moved + _ingest_stop_hook_records(path, conn, warn)


def _ingest_stop_hook_records(path: str, conn: sqlite3.Connection, warn: Warn) -> int:
    """Store what the stop hook left (slotmgr.history.hook), each run once: the
    user's copy first (its readers drop a run seen twice), then the row,
    then the files and, last, the run's stop note are removed. A crash
    anywhere in between leaves the pair, stored again later as the same run
    (or, past the files, a note in /run that nothing reads again).
    The note goes after the files so that a launcher reading its own pair
    without the lock (launch.collect) and finding the pair still there after
    it read the note knows it read the note too."""
    from slotmgr.history import hook as stophook
    from slotmgr.history import stopnote

    found = stophook.pending(spool_dir(path))
    for item in found:
        rec = item.record
        if get_run(conn, rec.run_id) is None:
            if os.geteuid() == 0 and rec.uid != 0 and not item.user_manager:
                append_for_user(path, rec, warn)
            insert(conn, rec)
        stophook.remove(item)
        stopnote.discard(item.invocation_id, user_manager=item.user_manager)
    return len(found)


def store_spooled(
    path: str, *, lock_deadline_s: float = LOCK_DEADLINE_S, warn: Warn = warn_journal
) -> bool:
    """Store whatever waits in the spool; False if the lock did not come
    within its deadline (it all stays there, safe, for the next writer)."""
    make_directory(os.path.dirname(path) or ".")
    lock_fd = open_private(path + ".lock")
    try:
        if not lock_with_deadline(lock_fd, lock_deadline_s):
            return False
        _with_recovery(path, warn, lambda conn: ingest_spool(path, conn, warn))
        return True
    finally:
        os.close(lock_fd)


def store(
    path: str,
    rec: JobRecord,
    *,
    lock_deadline_s: float = LOCK_DEADLINE_S,
    warn: Warn = warn_journal,
) -> bool:
    """Store a finished run's record, the way every writer does; False if
    this run was already recorded.

    Writers take turns on an advisory lock (`PATH.lock`, beside the database)
    before they open it, so many jobs ending at once queue there instead of
    in SQLite's busy handling, which gives up at once in some cases
    ("database is locked" was seen when the first records created the
    database while others opened it). The wait has a deadline: past it the
    record goes to the spool, and the next writer stores it. Readers do not
    take the lock. Then, as root, a copy for the job's user (append_for_user),
    without any lock."""
    make_directory(os.path.dirname(path) or ".")
    lock_fd = open_private(path + ".lock")
    try:
        if lock_with_deadline(lock_fd, lock_deadline_s):
            try:
                stored = _insert_with_recovery(path, rec, warn)
            except (sqlite3.Error, OSError, SlotmgrError) as exc:
                where = spool(path, rec)
                warn(
                    f"cannot store the record of job {rec.job_id} (run {rec.run_id}) in "
                    f"{path}: {exc}; kept it in {where}"
                )
                stored = True
        else:
            where = spool(path, rec)
            warn(
                f"{path}.lock was held for more than {lock_deadline_s:g}s: the record of job "
                f"{rec.job_id} (run {rec.run_id}) is kept in {where}, for the next writer"
            )
            stored = True
            # Kept now; one more turn at the lock, so that the last writer of a
            # busy moment does not leave its record waiting for the next job.
            if lock_with_deadline(lock_fd, lock_deadline_s):
                with (
                    contextlib.suppress(sqlite3.Error, OSError, SlotmgrError),
                    open_db(path) as conn,
                ):
                    ingest_spool(path, conn, warn)
    finally:
        os.close(lock_fd)  # releases the lock
    if stored and os.geteuid() == 0 and rec.uid != 0:
        append_for_user(path, rec, warn)
    return stored


# -- the users' own copies ----------------------------------------------------------


def append_for_user(path: str, rec: JobRecord, warn: Warn = warn_journal) -> bool:
    """Append the record to `users/<uid>.jsonl` beside the database: the
    job's user reads their own records there, as the database is root's.

    The directory is root's (0755), so nobody else can put a file or a
    symlink in it; the file belongs to the user and is 0600, so no other
    user can read it. Root never waits on it: no lock is taken (O_APPEND
    writes one line at once), and the open is O_NONBLOCK, so a lease the
    user holds on their file makes the open fail instead of wait."""
    directory = users_dir(path)
    try:
        make_directory(directory)
    except SlotmgrError as exc:
        warn(f"no copy of job {rec.job_id}'s record for uid {rec.uid}: {exc.one_line()}")
        return False
    name = user_copy_path(path, rec.uid)
    flags = (
        os.O_WRONLY
        | os.O_APPEND
        | os.O_CREAT
        | os.O_NOFOLLOW
        | os.O_NONBLOCK
        | os.O_CLOEXEC
        | os.O_NOCTTY
    )
    for attempt in range(_USER_COPY_ATTEMPTS):
        try:
            fd = os.open(name, flags, PRIVATE_MODE)
            break
        except BlockingIOError:  # the user holds a lease on the file
            time.sleep(0.1 * (attempt + 1))
        except OSError as exc:
            warn(f"no copy of job {rec.job_id}'s record in {name}: {exc.strerror}")
            return False
    else:
        warn(f"no copy of job {rec.job_id}'s record in {name}: the file stays leased by its user")
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, rec.uid) or st.st_nlink != 1:
            warn(f"no copy of job {rec.job_id}'s record: {name} is not a file of uid {rec.uid}")
            return False
        if st.st_uid != rec.uid:
            try:
                gid = pwd.getpwuid(rec.uid).pw_gid
            except KeyError:
                gid = -1
            os.fchown(fd, rec.uid, gid)
        if stat.S_IMODE(st.st_mode) != PRIVATE_MODE:
            os.fchmod(fd, PRIVATE_MODE)
        os.write(fd, (rec.to_json() + "\n").encode())
        return True
    except OSError as exc:
        warn(f"no copy of job {rec.job_id}'s record in {name}: {exc.strerror}")
        return False
    finally:
        os.close(fd)


def read_user_copy(name: str) -> list[JobRecord]:
    """A user's own records (append_for_user), oldest first, each run once."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return []
    records: dict[str, JobRecord] = {}
    with os.fdopen(fd, errors="replace") as f:
        for line in f:
            try:
                rec = JobRecord.from_dict(json.loads(line))
            except (ValueError, TypeError):
                continue  # a line cut short (disk full): the others stand
            records.setdefault(rec.run_id or rec.job_id, rec)
    return sorted(records.values(), key=lambda r: (r.end_time, r.job_id))


# -- reading ------------------------------------------------------------------------


def get(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    """The newest run of `job_id`, or None."""
    row = conn.execute(
        "SELECT record FROM jobs WHERE job_id = ? ORDER BY end_time DESC LIMIT 1", (job_id,)
    ).fetchone()
    return None if row is None else _from_row(row)


def get_run(conn: sqlite3.Connection, run_id: str) -> JobRecord | None:
    """The record of one run, or None (also for a database from before run ids)."""
    try:
        row = conn.execute("SELECT record FROM jobs WHERE run_id = ?", (run_id,)).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such column" in str(exc) or "no such table" in str(exc):
            return None
        raise
    return None if row is None else _from_row(row)


def _from_row(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord.from_dict(json.loads(row[0]))


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
    records = [_from_row(r) for r in conn.execute(sql, args)]
    return records[::-1] if newest else records
