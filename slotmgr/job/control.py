"""Job control: finding, listing and showing running slotmgr jobs, and who
may act on them (stop: slotmgr.job.stopping, kill: slotmgr.job.delivery, adopt:
slotmgr.job.adopt).

A job is a unit slotmgr made, whatever its name (`--unit`): one with
slotmgr's marker (slotmgr.naming). Jobs are found among the loaded units whose
Description says so, and each is then checked for its marker, which a job
cannot set itself; their live figures are the units' properties. Who may do
what is decided here, before systemd is asked:

- root, and anyone talking to their own user manager (`slotmgr --user`), may
  act on every job that manager has (systemd itself checks ownership there);
- a non-root caller on the system manager may see their own jobs only, and
  may not stop, kill or adopt at all: systemd refuses every unprivileged
  caller without polkit, so slotmgr says so in one line instead, and points
  to `slotmgr --user run`, whose jobs are the caller's own to control.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from slotmgr.caller import Caller, user_of
from slotmgr.errors import PermissionDenied, RemoteError, UsageError
from slotmgr.job.isolation import isolation_of_unit
from slotmgr.job.spec import command_from_exec_argv, command_of_unit
from slotmgr.kernel import cgroup, procs
from slotmgr.naming import (
    DESCRIPTION_PREFIX,
    JOB_ID_RULE,
    UNIT_SUFFIXES,
    batch_id_of_fields,
    is_job_id,
    job_id_of_description,
    job_id_of_unit,
    unit_name_for,
)
from slotmgr.node.slots import slot_of_slice
from slotmgr.systemd import messages
from slotmgr.systemd.manager import Manager
from slotmgr.systemd.properties import LIMIT_OPTIONS, shown_value
from slotmgr.systemd.values import counter

UNIT_PATTERNS = tuple(f"*{suffix}" for suffix in UNIT_SUFFIXES)
LIVE_STATES = ("active", "activating", "deactivating", "reloading")


class Action(enum.Enum):
    LIST = "list"
    STATUS = "status"
    STOP = "stop"
    KILL = "kill"
    ADOPT = "adopt"


@dataclass(frozen=True)
class JobInfo:
    """A running job as `slotmgr list` shows it."""

    job_id: str
    unit: str
    slice: str
    slot: str | None
    user: str
    uid: int
    active_state: str
    sub_state: str
    freezer_state: str
    start_time: float | None  # seconds since the epoch
    runtime_usec: int | None
    cpu_usage_usec: int | None
    memory_current_bytes: int | None
    tasks_current: int | None
    main_pid: int | None
    control_group: str
    command: list[str] = field(default_factory=list)  # the job's own, wrappers removed
    batch_id: str | None = None  # the batch system's id of the job (--batch-id)

    @property
    def state(self) -> str:
        text = f"{self.active_state}/{self.sub_state}"
        if self.freezer_state not in ("", "running"):
            text += f" ({self.freezer_state})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state}


@dataclass(frozen=True)
class JobDetail:
    """One job in full, for `slotmgr status`."""

    info: JobInfo
    description: str
    command: list[str]
    memory_peak_bytes: int | None
    memory_swap_bytes: int | None
    io_read_bytes: int | None
    io_write_bytes: int | None
    limits: dict[str, str]
    effective_cpus: str | None
    processes: list[tuple[int, str]] = field(default_factory=list)
    isolation: list[str] = field(default_factory=list)  # isolation.isolation_of_unit

    def to_dict(self) -> dict[str, Any]:
        data = self.info.to_dict()
        data.update(
            description=self.description,
            command=self.command,
            memory_peak_bytes=self.memory_peak_bytes,
            memory_swap_bytes=self.memory_swap_bytes,
            io_read_bytes=self.io_read_bytes,
            io_write_bytes=self.io_write_bytes,
            limits=self.limits,
            effective_cpus=self.effective_cpus,
            processes=[{"pid": pid, "command": cmd} for pid, cmd in self.processes],
            isolation=self.isolation,
        )
        return data


# -- finding jobs ---------------------------------------------------------------


class NotAJob(UsageError):
    """A unit without slotmgr's marker: slotmgr did not make it."""


def check_job_argument(job: str) -> None:
    """A JOB argument is a unit name or a job id; refuse anything else (exit 64)."""
    if job.endswith(UNIT_SUFFIXES):
        try:
            messages.check_unit_name(job)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    elif not is_job_id(job):
        raise UsageError(f"invalid job {job!r}: give a job id ({JOB_ID_RULE}) or a unit name")


def _loaded(manager: Manager, unit: str) -> dict[str, Any] | None:
    """A loaded unit's properties; None if it is not loaded (or went meanwhile)."""
    if manager.unit_path(unit) is None:
        return None
    try:
        return manager.unit_properties(unit)
    except RemoteError:
        return None


def marked_job_id(unit: str, props: Mapping[str, Any]) -> str:
    """The unit's job id from its marker; NotAJob if it has none."""
    job_id = job_id_of_unit(unit, props)
    if job_id is None:
        raise NotAJob(f"{unit!r} is not a slotmgr job: slotmgr did not make it (see slotmgr list)")
    return job_id


def job_units(manager: Manager, *, job_id: str | None = None, live_only: bool = False) -> list[str]:
    """Loaded units that say they are slotmgr jobs (of `job_id`, if given), by
    their Description in one ListUnitsByPatterns call: candidates, whose
    marker the caller still checks."""
    found = []
    for row in manager.list_units(UNIT_PATTERNS, LIVE_STATES if live_only else ()):
        name, description = str(row[0]), str(row[1])
        if not description.startswith(DESCRIPTION_PREFIX):
            continue
        if job_id is None or job_id_of_description(description) == job_id:
            found.append(name)
    return found


def find_job(manager: Manager, job: str) -> tuple[str, dict[str, Any]]:
    """The loaded unit of JOB (a job id or a unit name) and its properties, or a
    one-line error (exit 64): no such job, or a unit slotmgr did not make."""
    check_job_argument(job)
    if job.endswith(UNIT_SUFFIXES):
        props = _loaded(manager, job)
        if props is None:
            raise UsageError(
                f"no such job {job!r}: no unit {job} is loaded "
                "(see slotmgr list; finished jobs: slotmgr history)"
            )
        marked_job_id(job, props)
        return job, props
    # The default names first (one call each), then units named with --unit.
    defaults = [unit_name_for(job), unit_name_for(job, scope=True)]
    for candidates in (defaults, None):
        for unit in job_units(manager, job_id=job) if candidates is None else candidates:
            props = _loaded(manager, unit)
            if props is not None and job_id_of_unit(unit, props) == job:
                return unit, props
    raise UsageError(
        f"no such job {job!r}: no loaded unit is slotmgr job {job} "
        "(see slotmgr list; finished jobs: slotmgr history)"
    )


def job_of_process(manager: Manager, pid: int) -> tuple[str, str] | None:
    """(unit, job id) of the slotmgr job process `pid` is in, as systemd says
    (GetUnitByPID: a process in a user manager's unit is in that user's
    user@UID.service, no job); None if it is in none."""
    found = manager.unit_of_pid(pid)
    if found is None:
        return None
    unit, props = found
    job_id = job_id_of_unit(unit, props)
    return None if job_id is None else (unit, job_id)


def job_info(unit: str, props: Mapping[str, Any], *, owner_uid: int, now: float) -> JobInfo:
    """Pure: a unit's properties (GetAll) -> JobInfo. `owner_uid` is whose
    the job is when the unit names no User= (a scope, or root's service).
    NotAJob if the unit has no slotmgr marker."""
    job_id = marked_job_id(unit, props)
    user, uid = user_of(str(props.get("User") or ""), owner_uid)
    started = counter(props.get("InactiveExitTimestamp")) or None
    nsec = counter(props.get("CPUUsageNSec"))
    slice_ = str(props.get("Slice", ""))
    main_pid = counter(props.get("MainPID")) or None
    return JobInfo(
        job_id=job_id,
        unit=unit,
        slice=slice_,
        slot=slot_of_slice(slice_),
        user=user,
        uid=uid,
        active_state=str(props.get("ActiveState", "")),
        sub_state=str(props.get("SubState", "")),
        freezer_state=str(props.get("FreezerState", "")),
        start_time=None if started is None else started / 1e6,
        runtime_usec=None if started is None else max(0, int(now * 1e6) - started),
        cpu_usage_usec=None if nsec is None else nsec // 1000,
        memory_current_bytes=counter(props.get("MemoryCurrent")),
        tasks_current=counter(props.get("TasksCurrent")),
        main_pid=main_pid,
        control_group=str(props.get("ControlGroup", "")),
        command=command_of_unit(props) if unit.endswith(".service") else _scope_command(props),
        batch_id=batch_id_of_fields(props.get("LogExtraFields") or []),
    )


def _scope_command(props: Mapping[str, Any]) -> list[str]:
    """A scope has no ExecStart=: its command is that of its first process (the
    shim's, wrappers removed), else the one its Description gives, as text."""
    group = str(props.get("ControlGroup", ""))
    pids = sorted(cgroup.pids(group)) if group else []
    if pids:
        argv = command_from_exec_argv(procs.cmdline_args(pids[0]))
        if argv:
            return argv
    description = str(props.get("Description", ""))
    return [description.partition(": ")[2]] if ": " in description else []


def _owner_uid(manager_uid: int, unit: str, props: Mapping[str, Any]) -> int:
    """Whose a job without User= is. A scope's processes were forked by whoever
    ran `slotmgr run --scope`: the owner of its first process."""
    if unit.endswith(".scope") and manager_uid == 0:
        group = str(props.get("ControlGroup", ""))
        for pid in cgroup.pids(group) if group else []:
            with contextlib.suppress(ProcessLookupError, ValueError, OSError):
                return procs.read_process(pid).uid
    return manager_uid


def manager_uid(caller: Caller) -> int:
    """The uid a user manager runs as (the caller's); 0 for the system manager."""
    return caller.uid if caller.user_mode else 0


def read_job(
    manager: Manager,
    unit: str,
    caller: Caller,
    *,
    now: float | None = None,
    props: Mapping[str, Any] | None = None,
) -> JobInfo:
    if props is None:
        props = manager.unit_properties(unit)
    owner = _owner_uid(manager_uid(caller), unit, props)
    return job_info(unit, props, owner_uid=owner, now=time.time() if now is None else now)


def list_jobs(manager: Manager, caller: Caller) -> list[JobInfo]:
    """Running jobs, oldest first; a non-root caller on the system manager
    sees only their own."""
    now = time.time()
    jobs: list[JobInfo] = []
    for name in job_units(manager, live_only=True):
        try:
            info = read_job(manager, name, caller, now=now)
        except (RemoteError, NotAJob):
            continue  # gone between the list and the read, or not slotmgr's
        if info.active_state in LIVE_STATES and visible(caller, info):
            jobs.append(info)
    jobs.sort(key=lambda j: (j.start_time or 0.0, j.unit))
    return jobs


# -- who may do what --------------------------------------------------------------


def visible(caller: Caller, job: JobInfo) -> bool:
    return caller.owns(job.uid)


def check_permission(caller: Caller, job: JobInfo, action: Action) -> None:
    """Raise PermissionDenied (exit 77) if `caller` may not do `action` to `job`."""
    if caller.controls_everything:
        return
    if not caller.owns(job.uid):
        raise PermissionDenied(
            f"job {job.job_id} belongs to {job.user}: you may {action.value} only your own jobs"
        )
    if action in (Action.STOP, Action.KILL, Action.ADOPT):
        raise PermissionDenied(
            f"{action.value} of job {job.job_id} needs root: it runs under the system manager, "
            "which lets only root control units; jobs you start with `slotmgr --user run` are "
            f"yours to {action.value} with `slotmgr --user {action.value}`"
        )


def job_for(manager: Manager, caller: Caller, job: str, action: Action) -> JobInfo:
    """Find JOB and check that `caller` may do `action` to it."""
    unit, props = find_job(manager, job)
    info = read_job(manager, unit, caller, props=props)
    check_permission(caller, info, action)
    return info


# -- status -------------------------------------------------------------------------


def _limit_text(props: Mapping[str, Any]) -> dict[str, str]:
    """The unit's own limits that are set, in systemd's words (the limit
    options' keys, as properties.shown_value reads them)."""
    limits: dict[str, str] = {}
    for option in LIMIT_OPTIONS:
        text = shown_value(option.key, props.get(option.spec.wire_name))
        if text is not None:
            limits[option.key] = text
    return limits


def job_detail(manager: Manager, caller: Caller, info: JobInfo) -> JobDetail:
    props = manager.unit_properties(info.unit)
    group = info.control_group
    command = command_of_unit(props)
    peak = cgroup.read_int(group, "memory.peak") if group else None
    if peak is None:
        peak = counter(props.get("MemoryPeak"))
    pids = cgroup.pids(group) if group else []
    return JobDetail(
        info=info,
        description=str(props.get("Description", "")),
        command=command,
        memory_peak_bytes=peak,
        memory_swap_bytes=cgroup.read_int(group, "memory.swap.current") if group else None,
        io_read_bytes=counter(props.get("IOReadBytes")),
        io_write_bytes=counter(props.get("IOWriteBytes")),
        limits=_limit_text(props),
        effective_cpus=cgroup.read_file(group, "cpuset.cpus.effective") if group else None,
        processes=[(pid, procs.cmdline(pid)) for pid in sorted(pids)],
        isolation=isolation_of_unit(props, [procs.cmdline_args(pid) for pid in sorted(pids)]),
    )
