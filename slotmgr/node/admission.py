"""One job per place in a slot: `slotmgr run --slot N` waits for, or is refused, a place.

A slot holds at most `jobs` jobs (slotmgr.node.slots). `Admission.hold`
counts the slot slice's job units under a lock only the caller's uid can
take (a 0600 file in a 0700 directory under /run, or the user's runtime
directory), from the count until systemd has accepted the new unit, so two
launchers can never both take the last place.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from slotmgr.deadline import Deadline, flock_within
from slotmgr.errors import (
    ExitCode,
    Interrupted,
    PermissionDenied,
    SlotmgrError,
)
from slotmgr.node.slots import Slot, prepare_slice, slot_jobs
from slotmgr.systemd import values
from slotmgr.systemd.manager import Manager


class SlotBusy(SlotmgrError):
    """The slot holds its most jobs, and the job did not (or no longer may) wait (exit 75)."""

    exit_code = ExitCode.SLOT_BUSY


ROOT_LOCK_DIR = "/run/slotmgr"
LOCK_WAIT_S = 30.0  # for the lock itself: its holder only counts and starts a unit
_LOCK_POLL_S = 0.02
_RECHECK_S = 2.0  # between counts while waiting, should a UnitRemoved be missed


def lock_dir(*, user_manager: bool) -> str:
    """Where the slot locks live: root's /run, or a --user caller's runtime directory."""
    if not user_manager:
        return ROOT_LOCK_DIR
    runtime = (
        os.environ.get("XDG_RUNTIME_DIR") if os.geteuid() != 0 else None
    ) or f"/run/user/{os.geteuid()}"
    return os.path.join(runtime, "slotmgr")


def _open_lock(directory: str, name: str) -> int:
    """The lock file, 0600 in a directory only our uid may change; never through a symlink."""
    uid = os.geteuid()
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise PermissionDenied(
            f"cannot use {directory} for the slot locks: {exc.strerror}",
            hint="slots on the system manager need root; a user runs them with --user",
        ) from None
    try:
        st = os.fstat(dir_fd)
        if st.st_uid != uid or st.st_mode & 0o022:
            raise SlotmgrError(
                f"{directory} is not uid {uid}'s alone (owner uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):04o}): refusing to lock slots there",
                exit_code=ExitCode.CONFIG,
            )
        try:
            fd = os.open(
                name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
            )
        except OSError as exc:
            raise SlotmgrError(
                f"cannot open the slot lock {directory}/{name}: {exc.strerror}",
                exit_code=ExitCode.CONFIG,
            ) from None
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
        os.close(fd)
        raise SlotmgrError(
            f"{directory}/{name} is not a file of uid {uid}: refusing it", exit_code=ExitCode.CONFIG
        )
    if st.st_mode & 0o077:
        os.fchmod(fd, 0o600)  # no one else may open it, so no one else can hold it
    return fd


@contextlib.contextmanager
def _locked(directory: str, slot: Slot, *, timeout: float = LOCK_WAIT_S) -> Iterator[None]:
    fd = _open_lock(directory, f"slot{slot.number}.lock")
    try:
        if not flock_within(fd, timeout, poll=_LOCK_POLL_S):
            raise SlotBusy(
                f"slot {slot.name}: another launcher held its lock for over "
                f"{timeout:g}s; no job was started",
                hint=f"try again; if it persists, see who holds {directory}/slot{slot.number}.lock",
            )
        yield
    finally:
        os.close(fd)  # releases the lock


def _busy_text(slot: Slot, running: list[str]) -> str:
    shown = ", ".join(running[:3]) + (f" and {len(running) - 3} more" if len(running) > 3 else "")
    return (
        f"slot {slot.name} is full: it holds {slot.jobs} job{'s' * (slot.jobs != 1)} "
        f"at a time, and {shown} {'runs' if len(running) == 1 else 'run'} in it"
    )


def _wait_seconds(wait_usec: int | None) -> float | None:
    """--wait-for-slot in seconds; None for no limit (and for no wait at all,
    which never waits, so needs none)."""
    if wait_usec is None or wait_usec == values.USEC_INFINITY:
        return None
    return wait_usec / 1e6


@dataclass(frozen=True)
class Admission:
    """A job's claim on a place in its slot (`slotmgr run --slot N`)."""

    slot: Slot
    user_manager: bool
    wait_usec: int | None = None  # None: refuse a full slot at once; USEC_INFINITY: no limit
    # When waiting ends: --wait-for-slot counts from the
    # moment the job was asked for, not from when its unit is ready to start.
    wait_deadline: Deadline | None = field(default=None, compare=False)

    @classmethod
    def for_job(cls, slot: Slot, *, user_manager: bool, wait_usec: int | None) -> Admission:
        return cls(slot, user_manager, wait_usec, Deadline.after(_wait_seconds(wait_usec)))

    @contextlib.contextmanager
    def hold(self, manager: Manager) -> Iterator[None]:
        """Prepare the slot's slice and wait for a place in it; the body starts
        the unit while the place is still held (the lock is released after)."""
        directory = lock_dir(user_manager=self.user_manager)
        deadline = self.wait_deadline or Deadline.after(_wait_seconds(self.wait_usec))
        prepared = False
        while True:
            with _locked(directory, self.slot):
                try:
                    if not prepared:
                        prepare_slice(manager, self.slot)
                        prepared = True
                    running = slot_jobs(manager, self.slot)
                except Interrupted as exc:
                    raise self._gave_up(exc.signum) from None
                if len(running) < self.slot.jobs:
                    yield  # the caller starts its unit here, the lock still held
                    return
            self._wait_for_a_place(manager, running, deadline)

    def _gave_up(self, signum: int) -> SlotBusy:
        return SlotBusy(
            f"slot {self.slot.name}: signal {signum} while waiting for a place; no job was started"
        )

    def _wait_for_a_place(self, manager: Manager, running: list[str], deadline: Deadline) -> None:
        if self.wait_usec is None:
            raise SlotBusy(
                _busy_text(self.slot, running), hint="--wait-for-slot DURATION waits for a place"
            )
        if deadline.expired():
            raise SlotBusy(
                _busy_text(self.slot, running) + "; waited "
                f"{values.format_usec(self.wait_usec)} for a place"
            )
        try:
            # Any unit that goes may free a place; count again then, or soon anyway.
            manager.wait_for_units_to_change(timeout=deadline.wake(_RECHECK_S))
        except Interrupted as exc:
            raise self._gave_up(exc.signum) from None
