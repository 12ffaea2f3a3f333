"""What `list`, `status`, `slots` and `history` print: pure text from data,
so the layout is unit-tested without a bus."""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from collections.abc import Sequence
from typing import Any

from slotmgr.history.record import JobRecord
from slotmgr.job.control import JobDetail, JobInfo
from slotmgr.node.slots import SlotUsage
from slotmgr.systemd.values import format_bytes, format_usec

NONE = "-"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths[:-1])] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return lines


def _bytes(value: int | None) -> str:
    return NONE if value is None else format_bytes(value)


def _usec(value: int | None) -> str:
    return NONE if value is None else format_usec(value)


def _int(value: int | None) -> str:
    return NONE if value is None else str(value)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return NONE
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


TABLE_WIDTH = 100  # `slotmgr list` fits this many columns: the command is cut to fit


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 3)] + "..."


def _started(epoch: float | None, now: float) -> str:
    """Time of day for a job started today, else the date too."""
    if epoch is None:
        return NONE
    then = time.localtime(epoch)
    if time.strftime("%Y-%m-%d", then) == time.strftime("%Y-%m-%d", time.localtime(now)):
        return time.strftime("%H:%M:%S", then)
    return time.strftime("%m-%d %H:%M", then)


def short_state(job: JobInfo) -> str:
    if job.freezer_state not in ("", "running"):
        return job.freezer_state  # frozen, freezing, thawing
    if job.active_state == "active":
        return job.sub_state or "active"
    return {"activating": "starting", "deactivating": "stopping"}.get(
        job.active_state, job.active_state
    )


def jobs_table(
    jobs: Sequence[JobInfo], *, now: float | None = None, width: int = TABLE_WIDTH
) -> list[str]:
    """`slotmgr list`: one line a job, the command last, cut to what is left
    of `width` columns (ids and names are never cut; `--json` has it all)."""
    now = time.time() if now is None else now
    header = ["JOB", "USER", "SLOT", "STATE", "STARTED", "CPU", "MEMORY", "TASKS", "COMMAND"]
    rows = [
        [
            j.job_id,
            j.user,
            j.slot or NONE,
            short_state(j),
            _started(j.start_time, now),
            _usec(j.cpu_usage_usec),
            _bytes(j.memory_current_bytes),
            _int(j.tasks_current),
            shlex.join(j.command),
        ]
        for j in jobs
    ]
    # The command starts where the other columns end; it gets the rest of the line.
    start = sum(max(len(r[i]) for r in [header, *rows]) + 2 for i in range(len(header) - 1))
    room = max(12, width - start)
    return table(header, [[*r[:-1], _cut(r[-1], room)] for r in rows])


def status_lines(detail: JobDetail) -> list[str]:
    """`slotmgr status` of a running job: its live figures."""
    info = detail.info
    lines = [
        f"Job {info.job_id} ({info.unit})",
        f"  State:     {info.state}",
        f"  User:      {info.user} (uid {info.uid})",
        f"  Slice:     {info.slice}" + (f" (slot {info.slot})" if info.slot else ""),
        *([f"  Batch id:  {info.batch_id}"] if info.batch_id else []),
        f"  Command:   {shlex.join(detail.command) if detail.command else detail.description}",
        f"  Started:   {_when(info.start_time)} ({_usec(info.runtime_usec)} ago)",
        f"  Main PID:  {_int(info.main_pid)}",
        f"  CPU time:  {_usec(info.cpu_usage_usec)}",
        f"  Memory:    {_bytes(info.memory_current_bytes)} now, peak "
        f"{_bytes(detail.memory_peak_bytes)}, swap {_bytes(detail.memory_swap_bytes)}",
        f"  IO:        read {_bytes(detail.io_read_bytes)}, written "
        f"{_bytes(detail.io_write_bytes)}",
        f"  Tasks:     {_int(info.tasks_current)}",
        f"  CPUs:      {detail.effective_cpus or NONE}",
        "  Limits:    " + (", ".join(f"{k}={v}" for k, v in detail.limits.items()) or "none"),
        f"  CGroup:    {info.control_group or NONE}",
    ]
    # Before the CGroup line, which its process list follows.
    lines[-1:-1] = [f"  {line[0].upper()}{line[1:]}" for line in detail.isolation]
    for pid, cmd in detail.processes:
        lines.append(f"    {pid:>7} {cmd}")
    return lines


# The record's fields record_lines shows by name; any other field (one a newer
# history adds) is shown after them as it is.
_RECORD_SHOWN = frozenset(
    (
        "job_id",
        "unit",
        "result",
        "exit_status",
        "user",
        "uid",
        "command",
        "slice",
        "slot",
        "start_time",
        "end_time",
        "wall_time_usec",
        "cpu_usage_usec",
        "cpu_user_usec",
        "cpu_system_usec",
        "memory_peak_bytes",
        "memory_peak_source",
        "io_read_bytes",
        "io_write_bytes",
        "tasks_peak",
        "ip_ingress_bytes",
        "ip_egress_bytes",
        "systemd_version",
        "hostname",
    )
)


def record_lines(rec: JobRecord) -> list[str]:
    """`slotmgr status` of a finished job: its whole record."""
    cpu = _usec(rec.cpu_usage_usec)
    if rec.cpu_user_usec is not None and rec.cpu_system_usec is not None:
        cpu += f" (user {_usec(rec.cpu_user_usec)}, system {_usec(rec.cpu_system_usec)})"
    lines = [
        f"Job {rec.job_id} ({rec.unit}) finished",
        f"  Result:      {rec.result}, exit status {rec.exit_status}",
        f"  User:        {rec.user} (uid {rec.uid})",
        f"  Command:     {shlex.join(rec.command)}",
        f"  Slice:       {rec.slice}" + (f" (slot {rec.slot})" if rec.slot else ""),
        f"  Started:     {_when(rec.start_time)}",
        f"  Ended:       {_when(rec.end_time)}",
        f"  Wall time:   {_usec(rec.wall_time_usec)}",
        f"  CPU time:    {cpu}",
        f"  Memory peak: {_bytes(rec.memory_peak_bytes)} [{rec.memory_peak_source}]",
        f"  IO:          read {_bytes(rec.io_read_bytes)}, written {_bytes(rec.io_write_bytes)}",
        f"  Tasks peak:  {_int(rec.tasks_peak)}",
        f"  IP:          received {_bytes(rec.ip_ingress_bytes)}, sent "
        f"{_bytes(rec.ip_egress_bytes)}",
        f"  Node:        {rec.hostname}, systemd {rec.systemd_version}",
    ]
    for item in dataclasses.fields(rec):
        if item.name not in _RECORD_SHOWN:
            value = getattr(rec, item.name)
            label = item.name.replace("_", " ").capitalize() + ":"
            lines.append(f"  {label:<12} {NONE if value is None else value}")
    return lines


def slots_table(usages: Sequence[SlotUsage]) -> list[str]:
    rows = []
    for u in usages:
        limits = " ".join(f"{k}={v}" for k, v in u.slot.limits) or "none"
        rows.append(
            [
                u.slot.name,
                u.slot.slice,
                f"{u.jobs}/{u.slot.jobs}",
                _bytes(u.memory_current_bytes),
                _bytes(u.memory_swap_bytes),
                _int(u.tasks_current),
                _usec(u.cpu_usage_usec),
                u.effective_cpus or NONE,
                limits,
            ]
        )
    return table(
        ["SLOT", "SLICE", "JOBS", "MEMORY", "SWAP", "TASKS", "CPU", "CPUS", "LIMITS"], rows
    )


def history_table(records: Sequence[JobRecord]) -> list[str]:
    rows = []
    for r in records:
        command = shlex.join(r.command)
        if len(command) > 40:
            command = command[:37] + "..."
        rows.append(
            [
                r.job_id,
                r.user,
                r.slot or NONE,
                _when(r.end_time),
                r.result,
                str(r.exit_status),
                _usec(r.wall_time_usec),
                _usec(r.cpu_usage_usec),
                _bytes(r.memory_peak_bytes),
                command,
            ]
        )
    return table(
        ["JOB", "USER", "SLOT", "ENDED", "RESULT", "EXIT", "WALL", "CPU", "MEM PEAK", "COMMAND"],
        rows,
    )
