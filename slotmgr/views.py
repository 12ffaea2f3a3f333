"""What `list`, `status`, `slots` and `history` print: pure text from data,
so the layout is unit-tested without a bus."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from typing import Any

from slotmgr.control import JobDetail, JobInfo
from slotmgr.record import JobRecord
from slotmgr.slots import SlotUsage
from slotmgr.values import format_bytes, format_usec

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


def jobs_table(jobs: Sequence[JobInfo]) -> list[str]:
    rows = [
        [j.job_id, j.unit, j.slot or NONE, j.user, j.state, _usec(j.runtime_usec),
         _usec(j.cpu_usage_usec), _bytes(j.memory_current_bytes), _int(j.tasks_current)]
        for j in jobs
    ]
    return table(["JOB", "UNIT", "SLOT", "USER", "STATE", "RUNTIME", "CPU", "MEMORY", "TASKS"],
                 rows)


def status_lines(detail: JobDetail) -> list[str]:
    info = detail.info
    lines = [
        f"Job {info.job_id} ({info.unit})",
        f"  State:     {info.state}",
        f"  User:      {info.user} (uid {info.uid})",
        f"  Slice:     {info.slice}" + (f" (slot {info.slot})" if info.slot else ""),
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
    for pid, cmd in detail.processes:
        lines.append(f"    {pid:>7} {cmd}")
    return lines


def slots_table(usages: Sequence[SlotUsage]) -> list[str]:
    rows = []
    for u in usages:
        limits = " ".join(f"{k}={v}" for k, v in u.slot.limits) or "none"
        rows.append([
            u.slot.name, u.slot.slice, f"{u.jobs}/{u.slot.jobs}", _bytes(u.memory_current_bytes),
            _bytes(u.memory_swap_bytes), _int(u.tasks_current), _usec(u.cpu_usage_usec),
            u.effective_cpus or NONE, limits,
        ])
    return table(["SLOT", "SLICE", "JOBS", "MEMORY", "SWAP", "TASKS", "CPU", "CPUS", "LIMITS"],
                 rows)


def history_table(records: Sequence[JobRecord]) -> list[str]:
    rows = []
    for r in records:
        command = shlex.join(r.command)
        if len(command) > 40:
            command = command[:37] + "..."
        rows.append([
            r.job_id, r.user, r.slot or NONE, _when(r.end_time), r.result, str(r.exit_status),
            _usec(r.wall_time_usec), _usec(r.cpu_usage_usec), _bytes(r.memory_peak_bytes),
            command,
        ])
    return table(["JOB", "USER", "SLOT", "ENDED", "RESULT", "EXIT", "WALL", "CPU", "MEM PEAK",
                  "COMMAND"], rows)
