"""What stopped a job: a small note slotmgr's own stoppers leave for its record.

A job that `slotmgr stop` or `slotmgr kill` ended, or whose launcher was
signalled, must be recorded as stopped, not as a job that exited 143 by
itself. systemd cannot say so: `slotmgr stop` and `kill` signal the job
(KillUnit), and the job then simply ends. So the stopper first leaves a
note, keyed by the unit's InvocationID (unique to this run: a requeued job
of the same unit name never finds an old note), in a directory only root
reads (`/run/slotmgr/stops`, 0700; for `--user` jobs,
`$XDG_RUNTIME_DIR/slotmgr/stops`). Whoever makes the record from the stop
hook's file (slotmgr.history.hook) reads the note, and removes it once the
record is stored. A stop by anybody else through systemd (`systemctl
stop`, a batch system's StopUnit) is seen another way: while the
ExecStopPost= hook runs after a StopUnit the unit has a pending stop job,
which the hook writes down, and none when the main process ended by itself.

A note nobody removes (a scope, whose launcher reads it itself, or a job
whose hook could not run) is in /run, which is emptied at boot.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass
from typing import Any

SYSTEM_DIR = "/run/slotmgr/stops"
_PRIVATE = 0o600


@dataclass(frozen=True)
class StopNote:
    by: str  # "slotmgr stop by uid 0", "signal SIGTERM to slotmgr run", ...
    # A note of `slotmgr kill`: the job counts as stopped only if it died of
    # this signal (its status is 128+N); a caught USR1 stops nothing.
    # None: any end after the note was caused by it (stop, the launcher's stop).
    signal: int | None = None

    def explains(self, exit_status: int) -> bool:
        return self.signal is None or exit_status == 128 + self.signal


def signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def launcher_signalled(signum: int) -> StopNote:
    """The note for a job stopped because its `slotmgr run` got `signum`."""
    return StopNote(by=f"signal {signal_name(signum)} to slotmgr run")


def notes_dir(user_manager: bool) -> str | None:
    if not user_manager:
        return SYSTEM_DIR
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "slotmgr", "stops") if runtime else None


def invocation_id(value: Any) -> str:
    """InvocationID (ay) as the hex string systemd shows; '' if unknown."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return bytes(int(b) for b in value).hex()
    return ""


def _own_directory(directory: str) -> bool:
    """Make the notes' directory (0700), and say if it is ours alone."""
    parent = os.path.dirname(directory)
    with contextlib.suppress(FileExistsError):
        os.mkdir(parent, 0o700)  # also the slots' lock directory, root's alone
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    st = os.lstat(directory)
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
        and not stat.S_IMODE(st.st_mode) & 0o077
    )


def leave(invocation: str, note: StopNote, *, user_manager: bool) -> bool:
    """Leave the note for the run `invocation`; False if it could not be
    (not root on the system manager, no runtime directory): the record then
    says only what systemd knows."""
    directory = notes_dir(user_manager)
    if not invocation or directory is None or not invocation.isalnum():
        return False
    try:
        if not _own_directory(directory):
            return False
        name = os.path.join(directory, invocation)
        tmp = f"{name}.{os.getpid()}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _PRIVATE
        )
        try:
            os.write(fd, json.dumps({"by": note.by, "signal": note.signal}).encode())
        finally:
            os.close(fd)
        os.rename(tmp, name)  # a later note (stop after kill) replaces the earlier one
        return True
    except OSError:
        return False


def _note_file(invocation: str, user_manager: bool) -> str | None:
    directory = notes_dir(user_manager)
    if not invocation or directory is None or not invocation.isalnum():
        return None
    return os.path.join(directory, invocation)


def read(invocation: str, *, user_manager: bool) -> StopNote | None:
    """The note left for the run `invocation`, left in place; None if there is none."""
    name = _note_file(invocation, user_manager)
    if name is None:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        data = json.loads(os.read(fd, 4096))
        signum = data.get("signal")
        return StopNote(by=str(data["by"]), signal=int(signum) if signum is not None else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)


def discard(invocation: str, *, user_manager: bool) -> None:
    """Remove the run's note: its record is stored."""
    name = _note_file(invocation, user_manager)
    if name is not None:
        with contextlib.suppress(OSError):
            os.unlink(name)


def take(invocation: str, *, user_manager: bool) -> StopNote | None:
    """The note left for the run `invocation`, removed; None if there is none."""
    note = read(invocation, user_manager=user_manager)
    if note is not None:
        discard(invocation, user_manager=user_manager)
    return note


def leave_for_unit(manager: Any, unit: str, note: StopNote, *, user_manager: bool) -> bool:
    """leave() for a loaded unit (`manager` is a slotmgr.systemd.manager.Manager),
    before the stopper signals it."""
    from slotmgr.errors import SlotmgrError
    from slotmgr.systemd import messages

    try:
        value = manager.unit_property(unit, messages.UNIT_IFACE, "InvocationID")
    except SlotmgrError:
        return False
    return leave(invocation_id(value), note, user_manager=user_manager)
