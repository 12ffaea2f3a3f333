"""Acting as the job's user in a root-run launcher.

When root runs a job for a user (--uid), whatever the user names (the
working directory, the command, output files) is looked at and opened with
the user's ids, never root's: root would follow the user's symlinks and
pass every permission check. The launcher takes the user's effective uid,
gid and groups for that moment (`acting_as`) and gives them back; its
saved uid stays root, and with a non-zero effective uid the kernel leaves
it no effective capability meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from slotmgr.errors import ExitCode, SlotmgrError, UsageError
from slotmgr.history.hook import HOOK
from slotmgr.job.spec import PIDSHIM, JobSpec

# A service job gets its own empty /tmp and /var/tmp (PrivateTmp=): nothing
# slotmgr runs in the job may live there.
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp")


@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def of(cls, user: str, group_gid: int | None = None) -> Identity:
        """The ids systemd's User=/Group= give the job: Group= (else the
        user's own group) and the user's supplementary groups."""
        entry = pwd.getpwnam(user)
        gid = entry.pw_gid if group_gid is None else group_gid
        return cls(user, entry.pw_uid, gid, tuple(os.getgrouplist(user, gid)))


@contextlib.contextmanager
def acting_as(who: Identity | None) -> Iterator[None]:
    """Run the block with `who`'s effective ids; a no-op when the launcher
    is not root or already is that user (None: the caller themselves)."""
    if who is None or os.geteuid() != 0 or who.uid == 0:
        yield
        return
    saved_groups = os.getgroups()
    saved_gid = os.getegid()
    os.setgroups(list(who.groups))
    os.setegid(who.gid)
    os.seteuid(who.uid)
    try:
        yield
    finally:
        os.seteuid(0)  # first: root's capabilities come back with it
        os.setegid(saved_gid)
        os.setgroups(saved_groups)


def is_under(path: str, directories: tuple[str, ...]) -> str | None:
    """The one of `directories` that holds `path` (absolute), if any."""
    for directory in directories:
        if path == directory or path.startswith(directory.rstrip("/") + "/"):
            return directory
    return None


def check_working_directory(spec: JobSpec) -> None:
    """The job's working directory exists, the job's user may enter it
    (call within acting_as), and the job will see it."""
    directory = spec.working_directory
    if directory is None:
        return
    # A scope's job keeps the directory it was forked in, even under the
    # shim's fresh /tmp; a service's is looked up inside its namespace.
    private = spec.private_tmp and not spec.scope
    hidden = is_under(directory, PRIVATE_TMP_DIRS) if private else None
    if hidden is not None:
        raise UsageError(
            f"working directory {directory!r} is under {hidden}, which the job gets empty "
            "and private",
            hint="use --working-directory elsewhere, or --no-private-tmp",
        )
    who = spec.user or "you"
    if not os.path.isdir(directory):
        raise UsageError(
            f"working directory {directory!r} is not a directory {who} can see",
            hint="--working-directory DIR sets another",
        )
    if not os.access(directory, os.X_OK, effective_ids=True):
        raise UsageError(
            f"working directory {directory!r} is not accessible to {who}",
            hint="--working-directory DIR sets another",
        )


def check_install_reachable(spec: JobSpec) -> None:
    """slotmgr's own files that the unit runs must be where the job can run
    them (call within acting_as): the shim's interpreter and pidshim.py as
    the job's user, and neither they nor the stop hook under the job's
    private /tmp or /var/tmp. Else the job would die with a bare
    "env: ...python3: No such file or directory" (127)."""
    if spec.scope:
        return  # the launcher itself forks the job, from files it already runs
    interpreter = os.path.abspath(spec.python)
    paths = [interpreter, os.path.realpath(interpreter), PIDSHIM, HOOK]
    if spec.private_tmp:
        for path in paths:
            hidden = is_under(path, PRIVATE_TMP_DIRS)
            if hidden is not None:
                _misplaced(f"{path} is under {hidden}, which every job gets empty and private")
    if not spec.private_pids:
        return  # no shim: the job's user runs nothing of slotmgr's
    who = spec.user or "you"
    if not os.access(interpreter, os.X_OK, effective_ids=True):
        _misplaced(f"the job's user {who} cannot execute slotmgr's interpreter {interpreter}")
    if not os.access(PIDSHIM, os.R_OK, effective_ids=True):
        _misplaced(f"the job's user {who} cannot read {PIDSHIM}")


def _misplaced(problem: str) -> None:
    raise SlotmgrError(
        problem,
        hint="install slotmgr where every job's user can read it (e.g. /usr or /opt)",
        exit_code=ExitCode.CONFIG,
    )


def open_output(path: str, *, append: bool, what: str) -> int:
    """Open an output file for writing, as whoever the caller acts as (call
    within acting_as): the last component is never followed if it is a
    symlink, and only a regular file of that user's own is truncated
    (append: never). Anything else that exists (a device such as /dev/null,
    a FIFO) is written as it is. Returns the file descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
    if append:
        flags |= os.O_APPEND
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        reason = "it is a symbolic link" if exc.errno == 40 else exc.strerror  # ELOOP
        raise UsageError(f"cannot write {what} {path!r}: {reason}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and not append:
            if info.st_uid != os.geteuid():
                raise UsageError(
                    f"will not overwrite {what} {path!r}: the file is not the job user's own",
                    hint="remove it, or name a new file",
                )
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd
