"""A service job's record, made without an interpreter in the job's stop.

Two files in the history's spool (`history.spool_dir`, root's alone, 0700)
make one record:

- `RUN.start`, written by `slotmgr run` before it asks systemd for the unit:
  what the launcher knows (job id, unit, user, command, slot, ...);
- `RUN.end`, written by the unit's ExecStopPost= hook, `stophook.sh`, a
  shell script that systemd runs exactly once, while the job's cgroup still
  exists: its counters, $SERVICE_RESULT/$EXIT_CODE/$EXIT_STATUS, and what
  systemd shows of the unit (`systemctl show`).

Both are flushed to disk and appear whole (renamed into place), so the pair
survives the death of the launcher, a daemon-reload and a crash of whoever
stores it. Storing it in the database (`history.ingest_spool`, under the
history's lock) is done by the launcher when its unit has ended, by every
root `slotmgr history` before it reads, and by slotmgr-ingest.timer on a
node where nobody asks; the database keys records by run id, so a pair
stored twice is stored once. Until then, readers see the pair's record as
they see any spooled one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from slotmgr.history.record import JobRecord
from slotmgr.history.stopnote import StopNote

# Files live units name by path stay at the package's top, so a unit started
# before an upgrade still finds them after it.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOK = os.path.join(PACKAGE_DIR, "stophook.sh")
SH = "/bin/sh"
START_SUFFIX = ".start"
END_SUFFIX = ".end"
# The watcher's ActiveState while the launcher it watches still runs.
LAUNCHER_ALIVE_STATES = frozenset(("active", "activating", "reloading"))
_TIMESTAMP_FORMAT = "%a %Y-%m-%d %H:%M:%S.%f"  # systemctl --timestamp=us+utc, less " UTC"


def hook_argv(
    spool: str, run_id: str, unit: str, *, user_manager: bool, launcher_unit: str | None = None
) -> list[str]:
    """The ExecStopPost= command line of a service job; `launcher_unit`: the
    watcher of its launcher (slotmgr.job.binding), if it is bound to one."""
    argv = [SH, HOOK, spool, run_id, unit, "user" if user_manager else "system"]
    return argv if launcher_unit is None else [*argv, launcher_unit]


@dataclass(frozen=True)
class Launch:
    """What the launcher knows of a run before systemd has its unit."""

    job_id: str
    run_id: str
    unit: str
    slice: str
    slot: str | None
    user: str
    uid: int
    command: list[str]
    systemd_version: str
    user_manager: bool = False
    batch_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Launch:
        return cls(
            job_id=str(data["job_id"]),
            run_id=str(data["run_id"]),
            unit=str(data["unit"]),
            slice=str(data["slice"]),
            slot=None if data.get("slot") is None else str(data["slot"]),
            user=str(data["user"]),
            uid=int(data["uid"]),
            command=[str(arg) for arg in data["command"]],
            systemd_version=str(data["systemd_version"]),
            user_manager=bool(data.get("user_manager", False)),
            batch_id=None if data.get("batch_id") is None else str(data["batch_id"]),
        )


def parse_end(text: str) -> dict[str, str]:
    """The hook's KEY=VALUE lines."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key] = value
    return found


def _int(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None  # missing, empty, or systemd's "[not set]"
    return int(value)


def _timestamp_usec(value: str | None) -> int | None:
    """'Tue 2026-12-01 13:45:00.123456 UTC' -> microseconds since the epoch."""
    if not value or not value.endswith(" UTC"):
        return None
    try:
        when = datetime.datetime.strptime(value[: -len(" UTC")], _TIMESTAMP_FORMAT)
    except ValueError:
        return None
    return int(when.replace(tzinfo=datetime.timezone.utc).timestamp() * 1_000_000)


_CGROUP_COUNTERS = {
    "cgroup.memory.peak": "memory_peak",
    "cgroup.pids.peak": "pids_peak",
    "cgroup.oom_kill": "oom_kill",
    "cgroup.usage_usec": "usage_usec",
    "cgroup.user_usec": "user_usec",
    "cgroup.system_usec": "system_usec",
    "cgroup.io_read": "io_read",
    "cgroup.io_write": "io_write",
}


# `times`: the shell's user and system time, "0m0.230000s 0m0.004000s" (dash)
# or "0m0.002s 0m0.000s" (bash, RHEL's /bin/sh).
_TIMES = re.compile(r"(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s")


def counters_of(end: Mapping[str, str]) -> dict[str, int]:
    """The cgroup's counters, named as cgroup.read_counters names them, and
    the hook's own CPU (own_*_usec, which accounting.build_record subtracts)."""
    counters = {}
    for key, name in _CGROUP_COUNTERS.items():
        value = _int(end.get(key))
        if value is not None:
            counters[name] = value
    times = _TIMES.match(end.get("hook.times", ""))
    if times:
        user = int((int(times[1]) * 60 + float(times[2])) * 1e6)
        system = int((int(times[3]) * 60 + float(times[4])) * 1e6)
        counters.update(own_user_usec=user, own_system_usec=system, own_usec=user + system)
    return counters


def properties_of(launch: Launch, end: Mapping[str, str]) -> dict[str, Any]:
    """The unit's properties as a GetAll would give them, from what the hook
    saw and the launcher knew."""
    props: dict[str, Any] = {"Slice": launch.slice, "User": launch.user}
    for key in ("ExecMainStartTimestamp", "ExecMainExitTimestamp"):
        props[key] = _timestamp_usec(end.get(f"systemd.{key}"))
    for key in (
        "ExecMainCode",
        "ExecMainStatus",
        "CPUUsageNSec",
        "MemoryPeak",
        "IOReadBytes",
        "IOWriteBytes",
        "IPIngressBytes",
        "IPEgressBytes",
    ):
        props[key] = _int(end.get(f"systemd.{key}"))
    props["Result"] = end.get("systemd.Result", "")
    return props


def record_of(
    launch: Launch, end: Mapping[str, str], *, end_time: float, note: StopNote | None = None
) -> JobRecord:
    """The run's record: how its main process ended, and whether it was
    stopped (a note of slotmgr's, `note`, or a stop job pending in systemd)."""
    from slotmgr.history.accounting import build_record, how_main_ended, stopped_result

    props = properties_of(launch, end)
    env = {
        "SERVICE_RESULT": end.get("service_result", ""),
        "EXIT_CODE": end.get("exit_code", ""),
        "EXIT_STATUS": end.get("exit_status", ""),
    }
    result, exit_status = how_main_ended(env, props)
    job_type = end.get("systemd.JobType") or None
    launcher_gone = end.get("launcher.state", "active") not in LAUNCHER_ALIVE_STATES
    result, stopped_by = stopped_result(
        result, exit_status, note, job_type, launcher_gone=launcher_gone
    )
    return build_record(
        job_id=launch.job_id,
        unit=launch.unit,
        slot=launch.slot,
        props=props,
        counters=counters_of(end),
        result=result,
        exit_status=exit_status,
        end_time=end_time,
        systemd_version=launch.systemd_version,
        command=list(launch.command) or ["?"],
        run_id=launch.run_id,
        stopped_by=stopped_by,
        batch_id=launch.batch_id,
    )


@dataclass(frozen=True)
class Pending:
    """A complete pair in the spool, and the record it makes."""

    start_file: str
    end_file: str
    invocation_id: str
    user_manager: bool
    record: JobRecord


def _read_private(name: str) -> tuple[str, float] | None:
    """A spool file's text and modification time; None unless it is a
    regular file of ours."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, errors="replace") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        return f.read(), st.st_mtime


def read_pending(spool: str, run_id: str) -> Pending | None:
    """The record of one run, if both its files are there; the stop note is
    read, not taken (history.ingest_spool takes it once stored)."""
    from slotmgr.history import stopnote

    start_file = os.path.join(spool, run_id + START_SUFFIX)
    end_file = os.path.join(spool, run_id + END_SUFFIX)
    end = _read_private(end_file)
    start = _read_private(start_file) if end is not None else None
    if end is None or start is None:
        return None
    try:
        launch = Launch.from_dict(json.loads(start[0]))
    except (ValueError, KeyError, TypeError):
        return None
    fields = parse_end(end[0])
    invocation = fields.get("invocation_id", "")
    note = stopnote.read(invocation, user_manager=launch.user_manager)
    # The end file's time is when the hook finished: the record's end.
    rec = record_of(launch, fields, end_time=end[1], note=note)
    return Pending(start_file, end_file, invocation, launch.user_manager, rec)


def pending(spool: str) -> list[Pending]:
    """Every complete pair waiting in the spool, oldest first."""
    try:
        names = sorted(os.listdir(spool))
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return []
    found = []
    for name in names:
        if name.endswith(END_SUFFIX):
            got = read_pending(spool, name[: -len(END_SUFFIX)])
            if got is not None:
                found.append(got)
    return sorted(found, key=lambda p: p.record.end_time)


def remove(item: Pending) -> None:
    """The pair, once its record is stored: the end first, so that a crash
    in between leaves a lone start file (ignored), never a lone end."""
    for name in (item.end_file, item.start_file):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
