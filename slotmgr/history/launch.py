"""The launcher's side of a service job's record (the files are described in
slotmgr.history.hook): its RUN.start before the unit exists, and the record
collected once the unit has ended."""

from __future__ import annotations

import contextlib
import os

from slotmgr.history import store as history
from slotmgr.history.hook import START_SUFFIX, Launch, read_pending
from slotmgr.history.record import JobRecord


def write_launch(db_path: str, launch: Launch) -> str:
    """RUN.start, before the unit exists: without it the hook's file is no record."""
    name = os.path.join(history.private_spool_dir(db_path), launch.run_id + START_SUFFIX)
    return history.write_whole(name, launch.to_json().encode())


def discard_launch(db_path: str, run_id: str) -> None:
    """The unit was refused: no hook will run, nothing to record."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(history.spool_dir(db_path), run_id + START_SUFFIX))


def collect(db_path: str, run_id: str, *, timeout: float = 30.0) -> JobRecord | None:
    """For the launcher, once its unit is inactive: its run's record, and
    everything waiting in the spool stored (its own and other runs' in one
    turn at the lock). The hook has written its file before the unit turns
    inactive, so the record is normally there at once; another launcher may
    have stored it already. None if it never came (the hook could not run)."""
    # Its own pair first, read alone: with many jobs ending at once, reading
    # every waiting pair to find it would cost each launcher all the others.
    own = read_pending(history.spool_dir(db_path), run_id)
    if own is not None and not os.path.exists(own.end_file):
        # Another launcher stored it meanwhile, and may have taken its stop
        # note before it was read here: the stored record is the one.
        own = None
    if own is not None:
        rec: JobRecord | None = own.record
    else:
        # Rare (another launcher stored it, or the hook is late): the run path
        # does not load the query module otherwise.
        from slotmgr.history.query import wait_for_record

        rec = wait_for_record(db_path, run_id, timeout=timeout)
    if rec is not None and not history.store_spooled(db_path):
        history.warn_journal(
            f"{db_path}.lock was held for more than {history.LOCK_DEADLINE_S:g}s: the record "
            f"of job {rec.job_id} (run {run_id}) is kept in {history.spool_dir(db_path)}, "
            "for the next writer"
        )
    return rec
