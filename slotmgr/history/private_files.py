"""The history's files, which only their owner may open.

A user who can take a read lock on the database, its -shm file or the
writers' lock file can stall every writer; one who can write a directory on
the way can plant a symlink or a FIFO where root opens a file. So the
history's directories are writable by their owner alone, and its files are
0600, regular, the owner's, and opened without following symlinks or
blocking, their modes set right on every open (an older install made them
0644).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from slotmgr.errors import SlotmgrError

PRIVATE_MODE = 0o600


def check_directory(directory: str) -> None:
    """The database's directory must be writable by its owner (us) only: in a
    directory others may write, they could plant a symlink or a file of
    theirs where SQLite or we will open one."""
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise SlotmgrError(f"history directory {directory} is not a directory")
    # A user's own state directory may be group-writable (RHEL's umask 002
    # with a private group per user); root's may not.
    others = 0o022 if os.geteuid() == 0 else 0o002
    if st.st_uid not in (os.geteuid(), 0) or st.st_mode & others:
        raise SlotmgrError(
            f"history directory {directory} may be written by others (owner uid {st.st_uid}, "
            f"mode {stat.S_IMODE(st.st_mode):04o}): refused",
            hint=f"make it owned by uid {os.geteuid()} and not group- or world-writable",
        )


def make_directory(directory: str) -> None:
    """Make the directory 0755 whatever the umask (the users' own copies are
    below the database's, see append_for_user), then check it."""
    missing = []
    here = os.path.abspath(directory)
    while not os.path.isdir(here):
        missing.append(here)
        here = os.path.dirname(here)
    for name in reversed(missing):
        # chmod, not os.umask(): the umask is the whole process's, and
        # threads store too.
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755)
            os.chmod(name, 0o755)
    check_directory(directory)


def secure_fd(fd: int, name: str) -> None:
    """A file of the history: a regular file of ours, 0600 (an older install
    made them 0644; a reader's lock on any of them can stall writers)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise SlotmgrError(f"history file {name} is not a regular file: refused")
    if st.st_uid != os.geteuid():
        if os.geteuid() != 0:
            raise SlotmgrError(f"history file {name} belongs to uid {st.st_uid}: refused")
        os.fchown(fd, 0, 0)
    if stat.S_IMODE(st.st_mode) != PRIVATE_MODE:
        os.fchmod(fd, PRIVATE_MODE)


def open_private(name: str, *, create: bool = True) -> int:
    """Open (and create) one of the history's files: never through a symlink,
    0600 whatever the umask, never blocking (a FIFO planted there)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    if create:
        flags |= os.O_CREAT
    try:
        fd = os.open(name, flags, PRIVATE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SlotmgrError(f"history file {name} is a symlink: refused") from None
        raise
    try:
        secure_fd(fd, name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def secure_files(path: str) -> None:
    """Create the database file as 0600 before SQLite does (SQLite gives its
    -wal and -shm files the database's mode), and set the modes of what an
    older install left."""
    os.close(open_private(path))
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.close(open_private(path + suffix, create=False))
