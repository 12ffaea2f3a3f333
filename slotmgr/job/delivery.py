"""Delivering a signal to every process of a job at once (`slotmgr kill`, and
`slotmgr stop`'s SIGTERM and SIGKILL).

The job is frozen (FreezeUnit) while the signal goes out, then thawed: a
frozen process cannot fork, so on systemd < 257, whose KillUnit reads the
cgroup's PIDs and signals them one by one, a fork loop cannot race the
signal. A frozen process keeps a caught signal pending until the thaw, and
dies of a fatal one at once.

One rule on top: the unit's main process must not die while the unit is
frozen. Its end makes systemd start the ExecStopPost= stop hook in the
unit's cgroup, still frozen: systemd 257 then hangs as PID 1 in clone3()
(it waits for a child that cannot run, seen in the test bed), and 252 leaves
the stop hook frozen, so the record would be lost. So when the signal would
end the main process (SIGKILL, or a signal it neither catches nor ignores),
the other processes get it while the job is frozen, and the main process
right after the thaw. SIGKILL on systemd >= 257 needs none of this:
KillUnit writes cgroup.kill, which the kernel applies to the whole cgroup
at once.

And a signal the PID-namespace init forwards (catatonit or slotmgr.pidshim)
does not go to the init itself, nor on systemd < 257 to the process outside
the namespace (pidshim's outer half; unshare(1) forwards nothing, but is left
out alike):
each would pass it on to the job's command, which then had it two or three
times (KillUnit signals every process of the cgroup). So slotmgr signals
the job's processes itself, each exactly once, and leaves the shims out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Optional

from slotmgr.deadline import Deadline
from slotmgr.errors import BusTimeout, RemoteError, SlotmgrError
from slotmgr.job.spec import is_init_argv
from slotmgr.kernel import cgroup, procs
from slotmgr.pidshim import FORWARDED
from slotmgr.systemd import messages
from slotmgr.systemd.manager import Manager, UnitState

StateCheck = Callable[[Optional[UnitState]], bool]  # Optional: an alias is evaluated on 3.9

# Signals whose default action does not end a process.
_DEFAULT_HARMLESS = frozenset(
    int(s)
    for s in (
        signal.SIGCHLD,
        signal.SIGCONT,
        signal.SIGURG,
        signal.SIGWINCH,
        signal.SIGSTOP,
        signal.SIGTSTP,
        signal.SIGTTIN,
        signal.SIGTTOU,
    )
)
_THAW_RETRY_S = 10.0  # ThawUnit is refused while a job of the unit is pending
_THAW_ANSWER_S = 5.0  # longer, and systemd is taken to be stuck (see thaw_job)


@dataclass(frozen=True)
class KillOutcome:
    how: str  # "while frozen", "at once (cgroup.kill)", or "unfrozen: <why>"
    sent: bool = True  # False when `only_if` found the job gone


def is_fatal(signum: int, status_text: str) -> bool:
    """Would `signum` end the process whose /proc/PID/status this is?"""
    if signum == signal.SIGKILL:
        return True
    masks = {}
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key in ("SigIgn", "SigCgt"):
            masks[key] = int(value.strip(), 16)
    bit = 1 << (signum - 1)
    if (masks.get("SigIgn", 0) | masks.get("SigCgt", 0)) & bit:
        return False
    return signum not in _DEFAULT_HARMLESS


def _main_pid(manager: Manager, unit: str) -> int:
    if not unit.endswith(".service"):
        return 0  # a scope has no main process, and no ExecStopPost=
    try:
        return int(manager.unit_property(unit, messages.SERVICE_IFACE, "MainPID") or 0)
    except RemoteError:
        return 0


def _control_group(manager: Manager, unit: str) -> str:
    iface = messages.SERVICE_IFACE if unit.endswith(".service") else messages.SCOPE_IFACE
    return str(manager.unit_property(unit, iface, "ControlGroup") or "")


def _fatal_to(pid: int, signum: int) -> bool:
    try:
        with open(f"{procs.PROC}/{pid}/status") as f:
            return is_fatal(signum, f.read())
    except OSError:
        return False  # gone already: systemd has seen it go


def is_shim(argv: Sequence[str]) -> bool:
    """Is this command line slotmgr's PID-namespace init (spec.shim_argv):
    pidshim, catatonit, or 252's unshare in front of catatonit?"""
    return is_init_argv(argv)


def shims_of(table: Mapping[int, tuple[int, list[str]]], main_pid: int) -> set[int]:
    """Pure: the shim processes of a job, from its processes (pid -> (parent
    pid, argv)). Only the top of the job counts: its main process, or for a
    scope a process whose parent is outside the job, when it is the shim;
    then a shim child of a shim (the init of systemd < 257's shim)."""
    tops = [pid for pid, (ppid, _argv) in table.items() if pid == main_pid or ppid not in table]
    shims = {pid for pid in tops if is_shim(table[pid][1])}
    added = shims
    while added:
        added = {
            pid
            for pid, (ppid, argv) in table.items()
            if ppid in added and pid not in shims and is_shim(argv)
        }
        shims |= added
    return shims


def not_to_signal(table: Mapping[int, tuple[int, list[str]]], main_pid: int) -> set[int]:
    """Pure: the shims that must not get a signal they would forward. While the
    job's command is not yet forked (only shims in the job), the innermost
    shim does get it, and forwards it to the command once there is one."""
    shims = shims_of(table, main_pid)
    if shims and set(table) <= shims:
        parents = {table[pid][0] for pid in shims}
        return {pid for pid in shims if pid in parents}
    return shims


def _job_table(group: str) -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, argv) of the job's processes, read from /proc. Meant
    for a frozen job, whose processes can neither fork nor exit meanwhile."""
    table: dict[int, tuple[int, list[str]]] = {}
    for pid in cgroup.pids(group):
        try:
            table[pid] = (procs.parent_pid(pid), procs.cmdline_args(pid))
        except (ProcessLookupError, OSError, ValueError):
            continue
    return table


def signal_all_but(group: str, exclude: Collection[int], signum: int) -> int:
    """Signal every process in cgroup `group` (and below) but those in
    `exclude`; return how many. Each PID is pinned with a pidfd and checked to
    be in the cgroup before it is signalled, so a PID reused by another process
    is left alone. A unit that has just ended has no ControlGroup (''): that,
    or '/', names no job but every process on the node, and gets nothing."""
    if not is_job_group(group):
        return 0
    sent = 0
    for pid in cgroup.pids(group):
        if pid in exclude:
            continue
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            with open(f"{procs.PROC}/{pid}/cgroup") as f:
                where = procs.parse_cgroup(f.read())
            if where == group or where.startswith(group + "/"):
                signal.pidfd_send_signal(fd, signum)
                sent += 1
        except (ProcessLookupError, FileNotFoundError):
            pass
        finally:
            os.close(fd)
    return sent


def is_job_group(group: str) -> bool:
    """Pure: is `group` a cgroup below the root, as a running unit's is?"""
    return group.startswith("/") and group.strip("/") != ""


def _deliver(manager: Manager, unit: str, group: str, signum: int) -> int:
    """Signal the job's processes once each: not the shims when they would
    forward it, and not yet the main process when it would end it. Returns
    the main process's PID if it is still to be signalled, else 0."""
    main = _main_pid(manager, unit)
    left_out, later = delivery_plan(_job_table(group), main, signum, _fatal_to)
    signal_all_but(group, left_out, signum)
    return later


def delivery_plan(
    table: Mapping[int, tuple[int, list[str]]],
    main_pid: int,
    signum: int,
    fatal_to: Callable[[int, int], bool],
) -> tuple[set[int], int]:
    """Pure: the PIDs left out while the job is frozen, and the main process
    to signal after the thaw (0: none). `fatal_to(pid, signum)` says whether
    the signal would end that process."""
    if signum == signal.SIGKILL and main_pid:
        # The shims end with the job, and the main process dies of its own
        # SIGKILL after the thaw. A namespace init killed first would make 252's
        # unshare(1) (util-linux 2.38) exit 1 instead of dying of the signal: it
        # fails to reset SIGKILL's handler before raising it on itself.
        return shims_of(table, main_pid) | {main_pid}, main_pid
    skip = not_to_signal(table, main_pid) if signum in FORWARDED else set()
    fatal = bool(main_pid) and main_pid not in skip and fatal_to(main_pid, signum)
    later = main_pid if fatal else 0
    return skip | ({later} if later else set()), later


def kill_job(
    manager: Manager,
    unit: str,
    signum: int,
    *,
    whom: str = "all",
    only_if: StateCheck | None = None,
    state: Callable[[], UnitState | None] | None = None,
) -> KillOutcome:
    """Send `signum` to the job's processes (`whom`: "all" or "main"), at once.

    `only_if(state)` is checked while the job is frozen; if it says no,
    nothing is sent (stop uses it to never hit the stop hook of a job that
    ended meanwhile). `state` reads the unit's (ActiveState, SubState).
    """
    if whom == "main":
        # One process: nothing can race the signal, and freezing would only
        # risk the main process dying frozen.
        if only_if is not None and state is not None and not only_if(state()):
            return KillOutcome(how="", sent=False)
        manager.kill(unit, signum, whom="main")
        return KillOutcome(how="to the main process")
    if signum == signal.SIGKILL and manager.features.cgroup_kill and only_if is None:
        manager.kill(unit, signum, whom="all")
        return KillOutcome(how="at once (cgroup.kill)")
    group = _control_group(manager, unit)
    if not is_job_group(group):
        return KillOutcome(how="", sent=False)  # no cgroup: the unit has ended
    wanted: Callable[[], bool] = (
        (lambda: only_if(state())) if only_if is not None and state is not None else lambda: True
    )
    frozen = _deliver_frozen(manager, unit, group, signum, wanted)
    if isinstance(frozen, _Unfrozen):
        # Not active (starting, stopping), no freezer, or systemd stuck while
        # the job was frozen (nothing was sent then): send it as it is.
        if not wanted():
            return KillOutcome(how="", sent=False)
        how, main_later = f"unfrozen: {frozen.why}", _deliver(manager, unit, group, signum)
    elif frozen is None:
        return KillOutcome(how="", sent=False)
    else:
        how, main_later = "while frozen", frozen
    if main_later:
        with contextlib.suppress(RemoteError):  # it may have ended by itself meanwhile
            manager.kill(unit, signum, whom="main")
    return KillOutcome(how=how)


@dataclass(frozen=True)
class _Unfrozen:
    why: str


def _deliver_frozen(
    manager: Manager, unit: str, group: str, signum: int, wanted: Callable[[], bool]
) -> int | _Unfrozen | None:
    """Freeze the job, deliver (`_deliver`) if `wanted()` still says so, thaw.
    Returns the main process to signal after the thaw (0: none), None if
    `wanted()` said no, or why the job could not be frozen.

    The main process may end while the job is frozen all the same (it was
    already exiting when the freeze came): systemd 257 then hangs starting
    the stop hook (thaw_job), and answers nothing until the cgroup is thawed.
    So every call to it until the thaw waits only _THAW_ANSWER_S; with no
    answer, the cgroup is thawed here and nothing has been sent yet."""
    try:
        with manager.answers_within(_THAW_ANSWER_S):
            manager.freeze(unit)
    except RemoteError as exc:
        return _Unfrozen(exc.text)
    except BusTimeout:
        # The freeze may still come: thaw_job thaws through systemd too,
        # after it (the bus keeps the order of one connection's calls).
        _thaw_cgroup(group)
        thaw_job(manager, unit, group)
        return _Unfrozen("systemd did not answer FreezeUnit")
    try:
        with manager.answers_within(_THAW_ANSWER_S):
            if not wanted():
                return None
            return _deliver(manager, unit, group, signum)
    except BusTimeout:
        _thaw_cgroup(group)
        return _Unfrozen("systemd stopped answering while the job was frozen")
    finally:
        thaw_job(manager, unit, group)


def thaw_job(manager: Manager, unit: str, group: str) -> None:
    """ThawUnit, retried while a job of the unit is pending.

    A unit whose main process ended on its own while frozen is no longer
    active, and ThawUnit refuses it: StopUnit thaws it first, and for a unit
    that is already stopping does nothing else. If systemd does not answer
    at all, it may be stuck starting the stop hook in the frozen cgroup
    (257): thawing the cgroup itself lets it go on.
    """
    deadline = Deadline.after(_THAW_RETRY_S)
    while True:
        try:
            manager.thaw(unit, timeout=_THAW_ANSWER_S)
            return
        except BusTimeout:
            _thaw_cgroup(group)
            continue
        except RemoteError as exc:
            refused = exc
        try:
            active = manager.unit_property(unit, messages.UNIT_IFACE, "ActiveState")
        except RemoteError:
            return  # gone
        if active != "active":
            with contextlib.suppress(RemoteError):
                manager.stop(unit)
            return
        if deadline.expired():
            raise SlotmgrError(f"cannot thaw {unit}: {refused.text} (try: systemctl thaw {unit})")
        time.sleep(0.2)


def _thaw_cgroup(group: str) -> None:
    if group:
        with contextlib.suppress(OSError):
            cgroup.set_frozen(group, False)
