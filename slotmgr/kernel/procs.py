"""Processes as /proc shows them, pinned with a pidfd so a reused PID is never trusted.

`slotmgr adopt` decides about a PID (whose is it? is it in another job?) and
then asks systemd to move it. A PID number alone is not an identity: the
process may end and its number go to another one between the check and the
move. So the process is pinned with a pidfd first, its facts are read from
/proc, and the pidfd then proves they were that process's (a PID cannot be
reused while the process it names is alive). Right before the move the start
time is read again and compared.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

PROC = "/proc"


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    start_time: int  # clock ticks after boot: /proc/PID/stat field 22
    uids: tuple[int, int, int, int]  # real, effective, saved, filesystem
    cgroup: str  # the cgroup v2 path, e.g. /slotmgr.slice/slotmgr-ab.service
    comm: str

    @property
    def uid(self) -> int:
        return self.uids[0]


def parse_stat(text: str) -> tuple[str, int]:
    """(comm, start time) from /proc/PID/stat. The name may hold spaces and
    parentheses, so the fields are counted from the last ')'."""
    head, _, tail = text.rpartition(")")
    comm = head.partition("(")[2]
    fields = tail.split()
    # fields[0] is field 3 (state): starttime, field 22, is fields[19].
    return comm, int(fields[19])


def parse_ppid(text: str) -> int:
    """The parent PID from /proc/PID/stat (field 4, counted from the last ')')."""
    return int(text.rpartition(")")[2].split()[1])


def parent_pid(pid: int, *, proc: str = PROC) -> int:
    return parse_ppid(_read(pid, "stat", proc))


def parse_status_uids(text: str) -> tuple[int, int, int, int]:
    for line in text.splitlines():
        if line.startswith("Uid:"):
            real, effective, saved, fs = (int(v) for v in line.split()[1:5])
            return real, effective, saved, fs
    raise ValueError("no Uid: line in /proc/PID/status")


def parse_cgroup(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    return ""


def _read(pid: int, name: str, proc: str) -> str:
    try:
        with open(f"{proc}/{pid}/{name}") as f:
            return f.read()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None


def read_process(pid: int, *, proc: str = PROC) -> ProcessInfo:
    """Raises ProcessLookupError when there is no such process."""
    comm, start = parse_stat(_read(pid, "stat", proc))
    return ProcessInfo(
        pid=pid,
        start_time=start,
        uids=parse_status_uids(_read(pid, "status", proc)),
        cgroup=parse_cgroup(_read(pid, "cgroup", proc)),
        comm=comm,
    )


def start_time(pid: int, *, proc: str = PROC) -> int:
    return parse_stat(_read(pid, "stat", proc))[1]


class PinnedProcess:
    """A process held by a pidfd, with the facts read while it was held."""

    def __init__(self, pid: int, *, proc: str = PROC) -> None:
        self.pid = pid
        self._proc = proc
        self._fd = os.pidfd_open(pid)  # ProcessLookupError if there is none
        try:
            self.info = read_process(pid, proc=proc)
            if not self.alive():
                # It died after pidfd_open: what we read may be a successor's.
                raise ProcessLookupError(pid)
        except BaseException:
            os.close(self._fd)
            raise

    def alive(self) -> bool:
        try:
            signal.pidfd_send_signal(self._fd, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # exists, owned by someone we may not signal
        return True

    def still_same(self) -> bool:
        """True if the pinned process lives and its PID still names it."""
        try:
            same = start_time(self.pid, proc=self._proc) == self.info.start_time
        except ProcessLookupError:
            return False
        return same and self.alive()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PinnedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cmdline_args(pid: int, *, proc: str = PROC) -> list[str]:
    """A process's argv; empty if it is gone or has none (a kernel thread, a zombie)."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    parts = raw.split(b"\0")
    if parts[-1] == b"":
        parts.pop()  # the terminating NUL
    return [part.decode(errors="replace") for part in parts]


def cmdline(pid: int, *, proc: str = PROC) -> str:
    return " ".join(arg for arg in cmdline_args(pid, proc=proc) if arg)
