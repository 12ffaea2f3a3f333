"""A finished job's accounting record: fields, JSON schema, summary text.

The record is made once, from what the job's ExecStopPost= hook wrote down
while its cgroup still existed (see `slotmgr.history.hook`), so it exists even
when the process that launched the job is gone. `slotmgr run --json` prints the same
object; `SCHEMA` documents it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from slotmgr.systemd import values

# How a job ended, as systemd's Result= says it, plus "signal" for a job
# whose exit status says it died of a signal, and "cancelled" for a job that
# was stopped rather than ending by itself (`stopped_by` says what stopped
# it). The comments are the man page's text for each
# (packaging/gen-manpage.py).
RESULTS = (
    "success",  # the job exited with status 0
    "cancelled",  # the job was stopped: slotmgr stop/kill, a signal to slotmgr run, systemctl stop
    "exit-code",  # the job exited with a non-zero status
    "signal",  # a signal ended the job (exit status 128+N)
    "core-dump",  # a signal ended the job and it dumped core
    "oom-kill",  # the kernel's OOM killer ended the job (past its memory limit)
    "timeout",  # the job ran past --runtime-max
    "watchdog",  # the unit's watchdog timeout passed
    "start-limit-hit",  # systemd refused to start the unit again so soon
    "resources",  # systemd could not set up what the job needs (user, directory, namespaces)
    "exec",  # systemd could not execute the job's first process
    "unknown",  # nothing said how the job ended
)

MEMORY_PEAK_SOURCES = ("cgroup memory.peak", "systemd MemoryPeak", "unavailable")


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    unit: str
    slice: str
    slot: str | None
    user: str
    uid: int
    command: list[str]
    start_time: float  # seconds since the epoch, when the job's main process started
    end_time: float  # seconds since the epoch, when the record was taken
    wall_time_usec: int
    result: str
    exit_status: int  # the job's exit code, or 128+N for a signal N, as a shell shows it
    cpu_usage_usec: int | None
    cpu_user_usec: int | None
    cpu_system_usec: int | None
    memory_peak_bytes: int | None
    memory_peak_source: str
    io_read_bytes: int | None
    io_write_bytes: int | None
    tasks_peak: int | None
    ip_ingress_bytes: int | None
    ip_egress_bytes: int | None
    systemd_version: str
    hostname: str
    # Unique to this run of the job: a job id may be reused (a batch system
    # requeueing a job), a run id never is. Records from before run ids get
    # "legacy-<job id>" when their database is migrated.
    run_id: str = ""
    stopped_by: str | None = None  # "slotmgr stop by uid 0", "systemd stop job", ...
    batch_id: str | None = None  # the batch system's id of the job (--batch-id)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


# JSON Schema (draft 2020-12) of `slotmgr run --json` and `slotmgr history --json`.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "slotmgr job record",
    "type": "object",
    "additionalProperties": False,
    "required": [f.name for f in dataclasses.fields(JobRecord)],
    "properties": {
        "job_id": {"type": "string", "minLength": 1},
        "unit": {"type": "string", "pattern": r"\.(service|scope)$"},
        "slice": {"type": "string"},
        "slot": _nullable("string"),
        "user": {"type": "string"},
        "uid": {"type": "integer", "minimum": 0},
        "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "start_time": {"type": "number"},
        "end_time": {"type": "number"},
        "wall_time_usec": {"type": "integer", "minimum": 0},
        "result": {"enum": list(RESULTS)},
        "exit_status": {"type": "integer", "minimum": 0, "maximum": 255},
        "cpu_usage_usec": _nullable("integer"),
        "cpu_user_usec": _nullable("integer"),
        "cpu_system_usec": _nullable("integer"),
        "memory_peak_bytes": _nullable("integer"),
        "memory_peak_source": {"enum": list(MEMORY_PEAK_SOURCES)},
        "io_read_bytes": _nullable("integer"),
        "io_write_bytes": _nullable("integer"),
        "tasks_peak": _nullable("integer"),
        "ip_ingress_bytes": _nullable("integer"),
        "ip_egress_bytes": _nullable("integer"),
        "systemd_version": {"type": "string"},
        "hostname": {"type": "string"},
        "run_id": {"type": "string", "minLength": 1},
        "stopped_by": _nullable("string"),
        "batch_id": _nullable("string"),
    },
}


def validate(data: Any, schema: dict[str, Any] = SCHEMA) -> list[str]:
    """Check `data` against the subset of JSON Schema that SCHEMA uses.

    A small validator of our own, as jsonschema is not a dependency; it
    returns every problem found, so a test can show them.
    """
    problems: list[str] = []
    if not isinstance(data, dict):
        return ["record is not an object"]
    props: dict[str, Any] = schema["properties"]
    for key in schema["required"]:
        if key not in data:
            problems.append(f"missing field {key!r}")
    for key, value in data.items():
        rule = props.get(key)
        if rule is None:
            problems.append(f"unexpected field {key!r}")
            continue
        problems.extend(f"{key}: {p}" for p in _check(value, rule))
    return problems


_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "array": list,
    "null": type(None),
    "object": dict,
}


def _check(value: Any, rule: dict[str, Any]) -> list[str]:
    import re

    if "enum" in rule:
        return [] if value in rule["enum"] else [f"{value!r} not one of {rule['enum']}"]
    kinds = rule["type"] if isinstance(rule["type"], list) else [rule["type"]]
    if isinstance(value, bool) or not any(isinstance(value, _JSON_TYPES[k]) for k in kinds):
        return [f"{value!r} is not of type {'/'.join(kinds)}"]
    problems = []
    if isinstance(value, (int, float)):
        if "minimum" in rule and value < rule["minimum"]:
            problems.append(f"{value} below minimum {rule['minimum']}")
        if "maximum" in rule and value > rule["maximum"]:
            problems.append(f"{value} above maximum {rule['maximum']}")
    if isinstance(value, str):
        if len(value) < rule.get("minLength", 0):
            problems.append("too short")
        if "pattern" in rule and not re.search(rule["pattern"], value):
            problems.append(f"{value!r} does not match {rule['pattern']}")
    if isinstance(value, list):
        if len(value) < rule.get("minItems", 0):
            problems.append("too few items")
        for item in value:
            problems.extend(_check(item, rule["items"]))
    return problems


def exit_status_from(exit_code: str, exit_status: str) -> int:
    """$EXIT_CODE/$EXIT_STATUS as systemd gives them to ExecStopPost= ->
    a shell-style status: 'exited','3' -> 3; 'killed','TERM' -> 143."""
    if exit_code == "exited":
        try:
            return int(exit_status) & 0xFF
        except ValueError:
            return 255
    if exit_code in ("killed", "dumped"):
        try:
            return 128 + values.parse_signal(exit_status)
        except ValueError:
            return 255
    return 0


def summary_lines(rec: JobRecord) -> list[str]:
    """The human summary `slotmgr run` prints on stderr."""

    def opt(value: int | None, fmt: Any) -> str:
        return "n/a" if value is None else str(fmt(value))

    cpu = opt(rec.cpu_usage_usec, values.format_usec)
    if rec.cpu_user_usec is not None and rec.cpu_system_usec is not None:
        cpu += (
            f" (user {values.format_usec(rec.cpu_user_usec)}, "
            f"system {values.format_usec(rec.cpu_system_usec)})"
        )
    stopped = f" ({rec.stopped_by})" if rec.stopped_by else ""
    lines = [
        f"Job {rec.job_id} ({rec.unit}) finished: {rec.result}{stopped}, "
        f"exit status {rec.exit_status}",
        f"  Wall time:   {values.format_usec(rec.wall_time_usec)}",
        f"  CPU time:    {cpu}",
        f"  Memory peak: {opt(rec.memory_peak_bytes, values.format_bytes)}"
        f" [{rec.memory_peak_source}]",
        f"  IO:          read {opt(rec.io_read_bytes, values.format_bytes)}, "
        f"written {opt(rec.io_write_bytes, values.format_bytes)}",
        f"  Tasks peak:  {opt(rec.tasks_peak, str)}",
        f"  IP:          received {opt(rec.ip_ingress_bytes, values.format_bytes)}, "
        f"sent {opt(rec.ip_egress_bytes, values.format_bytes)}",
    ]
    return lines
