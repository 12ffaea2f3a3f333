"""Error types and slotmgr's own exit codes.

A job's own exit status passes through `slotmgr run` unchanged (128+N for a
signal N).  slotmgr's own failures use the codes below, chosen from the
conventions batch systems already know (sysexits.h, timeout(1), the shell).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    USAGE = 64  # bad option, value or command line (EX_USAGE)
    UNAVAILABLE = 69  # no systemd or no bus to reach it (EX_UNAVAILABLE)
    INTERNAL = 70  # a bug in slotmgr (EX_SOFTWARE)
    # Not 125, which is JOB_OOM: a failed setup must not read as an OOM kill.
    INIT_FAILED = 71  # the job's init could not set it up (PID namespace, /proc, fork) (EX_OSERR)
    SLOT_BUSY = 75  # the asked-for slot holds its most jobs; try again later (EX_TEMPFAIL)
    NO_PERMISSION = 77  # not allowed to act on that job or PID (EX_NOPERM)
    SYSTEMD_REFUSED = 76  # systemd answered the request with an error (EX_PROTOCOL)
    CONFIG = 78  # the node's setup cannot serve the job (install path, config file) (EX_CONFIG)
    JOB_TIMEOUT = 124  # the job ran past --runtime-max (as timeout(1))
    JOB_OOM = 125  # the job was killed by the kernel's OOM killer
    NOT_EXECUTABLE = 126  # the command exists but cannot be executed (as the shell)
    NOT_FOUND = 127  # the command does not exist (as the shell)


class SlotmgrError(Exception):
    """An error meant for the user: one line, an exit code, maybe a hint."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(
        self, message: str, *, hint: str | None = None, exit_code: ExitCode | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def one_line(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class UsageError(SlotmgrError):
    exit_code = ExitCode.USAGE


class PermissionDenied(SlotmgrError):
    exit_code = ExitCode.NO_PERMISSION


class BusUnavailable(SlotmgrError):
    """There is no systemd to talk to (not PID 1, no socket, no bus)."""

    exit_code = ExitCode.UNAVAILABLE


class BusTimeout(SlotmgrError):
    """systemd did not answer in time."""

    exit_code = ExitCode.UNAVAILABLE


class RemoteError(SlotmgrError):
    """systemd answered a call with a D-Bus error."""

    exit_code = ExitCode.SYSTEMD_REFUSED

    def __init__(self, name: str, text: str, *, method: str = "") -> None:
        where = f"{method}: " if method else ""
        super().__init__(f"systemd refused {where}{text} [{name}]")
        self.name = name
        self.text = text
        self.method = method


class Interrupted(Exception):
    """A signal arrived on the interrupt pipe while we waited for systemd."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
