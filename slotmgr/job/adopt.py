"""`slotmgr adopt`: move processes a remote agent started for a job into it."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from slotmgr.errors import PermissionDenied, SlotmgrError, UsageError
from slotmgr.job.control import JobInfo, job_of_process
from slotmgr.kernel import procs
from slotmgr.kernel.cgroup import CGROUP_ROOT
from slotmgr.systemd.manager import Manager


@dataclass(frozen=True)
class AdoptOutcome:
    adopted: tuple[int, ...]
    already_in_job: tuple[int, ...]


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_adoptable(
    info: procs.ProcessInfo, job: JobInfo, in_job: tuple[str, str] | None = None
) -> bool:
    """Raise if the process may not join the job; False if it is in it already.
    `in_job` is the (unit, job id) of the slotmgr job the process is in."""
    if set(info.uids[:3]) != {job.uid}:
        owners = sorted(set(info.uids[:3]))
        who = " and ".join(f"{_user_name(u)} (uid {u})" for u in owners)
        raise PermissionDenied(
            f"process {info.pid} ({info.comm}) belongs to {who}, job {job.job_id} to "
            f"{job.user} (uid {job.uid}): a job adopts only its own user's processes"
        )
    if in_job is None:
        return True
    other, other_id = in_job
    if other == job.unit:
        return False
    raise PermissionDenied(
        f"process {info.pid} ({info.comm}) is already in slotmgr job "
        f"{other_id} ({other}): a process belongs to one job only"
    )
    return True


PID_MAX_LIMIT = 4 * 1024 * 1024  # the kernel's largest pid_max


def parse_pids(texts: Iterable[str]) -> list[int]:
    pids: list[int] = []
    for text in texts:
        # ASCII digits (int() takes other scripts' too), and no more than the
        # kernel's PID_MAX_LIMIT, so that the number fits the bus's uint32.
        if not (text.isascii() and text.isdigit()) or not 1 < int(text) <= PID_MAX_LIMIT:
            raise UsageError(
                f"invalid PID {text!r}: use a process number greater than 1 "
                f"and at most {PID_MAX_LIMIT}"
            )
        if int(text) not in pids:
            pids.append(int(text))
    return pids


def move_into_cgroup(pin: procs.PinnedProcess, cgroup: str, *, root: str = CGROUP_ROOT) -> None:
    """Root moves the pinned process into `cgroup` itself (its cgroup.procs).

    A system job's unit is not delegated (Delegate=yes would hand its cgroup
    to the job's user, who could then freeze a sub-cgroup and hang PID 1), and
    systemd moves processes (AttachProcessesToUnit) into delegated units only.
    cgroup.procs takes a PID number, so the pidfd proves the number named the
    pinned process: alive before the write and still alive after it, it held
    the number throughout. Raises UsageError if it ended in between (then
    the number may have named another process at the write: said so).
    """
    if not pin.still_same():
        raise UsageError(
            f"process {pin.pid} ended while it was checked (its PID may now be another "
            "process's): nothing moved"
        )
    try:
        fd = os.open(f"{root}{cgroup}/cgroup.procs", os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"the job's cgroup {cgroup} is gone: the job has ended") from None
    try:
        os.write(fd, str(pin.pid).encode())
    except ProcessLookupError:
        raise UsageError(f"process {pin.pid} ended before it could be moved") from None
    finally:
        os.close(fd)
    if not pin.alive():
        raise UsageError(
            f"process {pin.pid} ended while it was moved into {cgroup}: if its PID was "
            "reused at that instant, the new process is in the job now"
        )
    try:
        now = procs.read_process(pin.pid).cgroup
    except ProcessLookupError:
        now = ""
    if now != cgroup and pin.alive():
        raise SlotmgrError(f"process {pin.pid} is in {now or 'no cgroup'}, not {cgroup}")


def adopt(
    manager: Manager, job: JobInfo, pids: Sequence[int], *, user_manager: bool = False
) -> AdoptOutcome:
    """Move processes into a running job, like Slurm's pam_slurm_adopt: for a
    process a remote agent (sshd, an MPI launcher) started on the job's
    behalf, so that it is limited, accounted and killed with the job.

    Each PID is pinned with a pidfd while it is checked; right before the
    move every one is checked again to be the same process (alive, same
    start time), so a PID that was reused meanwhile is never moved. A system
    job is moved by root writing its cgroup.procs (move_into_cgroup); a
    --user job, whose unit is delegated within the user's own manager (the
    user owns that whole subtree anyway), by AttachProcessesToUnit, which
    can also take a process from the user's session outside that subtree.
    """
    pinned: list[procs.PinnedProcess] = []
    try:
        wanted: list[procs.PinnedProcess] = []
        already: list[int] = []
        for pid in pids:
            try:
                pin = procs.PinnedProcess(pid)
            except ProcessLookupError:
                raise UsageError(f"no process {pid}") from None
            pinned.append(pin)
            if check_adoptable(pin.info, job, job_of_process(manager, pid)):
                wanted.append(pin)
            else:
                already.append(pid)
        if not wanted:
            return AdoptOutcome(adopted=(), already_in_job=tuple(already))
        for pin in wanted:
            if not pin.still_same():
                raise UsageError(
                    f"process {pin.pid} ended while it was checked (its PID may now be "
                    "another process's): nothing adopted"
                )
        if user_manager or not job.control_group:
            manager.attach_processes(job.unit, [pin.pid for pin in wanted])
        else:
            for pin in wanted:
                move_into_cgroup(pin, job.control_group)
        return AdoptOutcome(adopted=tuple(p.pid for p in wanted), already_in_job=tuple(already))
    finally:
        for pin in pinned:
            pin.close()
