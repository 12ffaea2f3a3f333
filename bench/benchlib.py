"""What bench/launch and bench/throughput share: medians, ratios, the goals of
issue #11 and their verdicts, and reading figures from systemd and slotmgr.

The pure parts are unit-tested on the host (tests/unit/test_bench.py); the
rest runs only where PID 1 is systemd. Every figure is printed with its goal
and 'met' or 'NOT met': the benchmarks never assert, they exit 0 unless they
could not run.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024
# systemd's "no value" for a uint64 property (e.g. MemoryPeak of a unit that has none).
UINT64_MAX = 2**64 - 1

# Issue #11's goals.
GOAL_LAUNCH_BARE_STARTS = 2.0  # slotmgr's cost above systemd-run, in bare interpreter starts
GOAL_LAUNCHER_RSS_MIB = 15.0  # the waiting launcher's peak RSS
GOAL_JOB_MEMORY_ABOVE_MIB = 1.0  # a `true` job's memory peak above a plain systemd-run unit's
GOAL_THROUGHPUT_RATIO = 0.8  # slotmgr's jobs/s over systemd-run's
GOAL_AT_ONCE_S = 120.0  # each of the jobs started at once ends within this


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def ratio(ours: float, theirs: float) -> float | None:
    """ours/theirs, or None when there is nothing to divide by."""
    return ours / theirs if theirs > 0 else None


def overhead_in_bare_starts(slotmgr_s: float, systemd_run_s: float, bare_s: float) -> float | None:
    """slotmgr's time above systemd-run's, counted in bare interpreter starts."""
    return ratio(slotmgr_s - systemd_run_s, bare_s)


def verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "NOT met"


def goal(text: str, met: bool | None) -> str:
    """'(goal <= 2: met)': the goal beside the figure it judges."""
    return f"(goal {text}: {verdict(met)})"


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    """A figure, or 'n/a' where it could not be measured."""
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def ms(seconds: float | None) -> str:
    return fmt(None if seconds is None else seconds * 1000, ".0f", " ms")


def mib(size_bytes: float | None) -> str:
    return fmt(None if size_bytes is None else size_bytes / MIB, ".2f", " MiB")


def parse_show(text: str) -> dict[str, str]:
    """`systemctl show -p A -p B UNIT` output -> {A: value}. A property this
    systemd does not know is simply absent from the output."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def show_int(props: Mapping[str, str], name: str) -> int | None:
    """An integer property, or None where systemd has none ('[not set]',
    empty, its uint64 'infinity', or a property this version lacks)."""
    value = props.get(name, "")
    if not value.isdigit() or int(value) == UINT64_MAX:
        return None
    return int(value)


def parse_vm_hwm(status: str) -> int:
    """VmHWM (peak resident set) in bytes from /proc/PID/status; 0 if it has
    none (a zombie, a kernel thread)."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            number, _, unit = line.split(":", 1)[1].strip().partition(" ")
            return int(number) * (1024 if unit.strip() == "kB" else 1)
    return 0


def vm_hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return parse_vm_hwm(f.read())
    except (FileNotFoundError, ProcessLookupError):
        return 0


def count_records(records: Iterable[Mapping[str, object]], prefix: str) -> int:
    """Runs (distinct run ids) among history records whose job id starts with `prefix`."""
    return len(
        {str(r.get("run_id")) for r in records if str(r.get("job_id", "")).startswith(prefix)}
    )


def interpreter_of(script: str) -> str | None:
    """The interpreter a `#!` script runs on (a pip- or RPM-installed slotmgr)."""
    try:
        with open(script, "rb") as f:
            first = f.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = shlex.split(first[2:].decode(errors="replace"))
    if words and os.path.basename(words[0]) == "env" and len(words) > 1:
        return words[1]
    return words[0] if words else None


@dataclass(frozen=True)
class Slotmgr:
    """How the benchmark starts slotmgr, and the interpreter that runs it."""

    argv: tuple[str, ...]
    interpreter: str
    env: Mapping[str, str]
    run_flags: tuple[str, ...] = ()  # given to every `slotmgr run` (--run-flag)

    @classmethod
    def choose(cls, installed: str | None, run_flags: Sequence[str] = ()) -> Slotmgr:
        """The repository's slotmgr on this interpreter (PYTHONPATH), or an
        installed `slotmgr` script as a user would run it."""
        if installed is None:
            return cls(
                (sys.executable, "-m", "slotmgr"),
                sys.executable,
                dict(os.environ, PYTHONPATH=REPO),
                tuple(run_flags),
            )
        interpreter = interpreter_of(installed)
        if interpreter is None:
            raise SystemExit(
                f"--slotmgr {installed!r}: not a '#!' script (give the path of "
                "an installed slotmgr, e.g. /usr/bin/slotmgr)"
            )
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return cls((installed,), interpreter, env, tuple(run_flags))

    def run(self, *args: str) -> list[str]:
        return [*self.argv, "run", *self.run_flags, *args]


def history_records(slotmgr: Slotmgr) -> list[dict[str, object]]:
    """Root's history of the last two hours, as `slotmgr history` shows it (it
    also takes in records still on their way to the database)."""
    out = subprocess.run(
        [*slotmgr.argv, "history", "--since", "2h", "--json"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(slotmgr.env),
    )
    if out.returncode != 0:
        print(
            f"  (slotmgr history failed, exit {out.returncode}: {out.stderr.strip()[-200:]})",
            file=sys.stderr,
        )
        return []
    found = json.loads(out.stdout or "[]")
    return found if isinstance(found, list) else []


def wait_for_records(slotmgr: Slotmgr, prefix: str, expected: int, grace_s: float) -> int:
    """How many of `expected` runs with job ids starting with `prefix` have
    their record, waiting up to `grace_s` for late ones."""
    deadline = time.monotonic() + grace_s
    while True:
        found = count_records(history_records(slotmgr), prefix)
        if found >= expected or time.monotonic() >= deadline:
            return found
        time.sleep(2)


def systemd_version() -> str:
    return subprocess.run(
        ["systemctl", "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]


def line_buffered() -> None:
    """Each figure shows as it is measured, also through the test bed's pipe."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)


def refuse_without_systemd(name: str) -> bool:
    """True (and why, on stderr) unless root on a host whose PID 1 is systemd."""
    if os.geteuid() == 0 and os.path.isdir("/run/systemd/system"):
        return False
    print(
        f"bench/{name}: needs root on a host whose PID 1 is systemd (in the test bed: "
        f"python3 -m tests.testbed run --guest 257 -- python3 bench/{name})",
        file=sys.stderr,
    )
    return True


def failure_lines(failures: Iterable[tuple[int, str]], most: int = 3) -> list[str]:
    """Why launches failed, most frequent first: each distinct exit status and
    last stderr line once, with how many times it came."""
    seen: dict[tuple[int, str], int] = {}
    for code, stderr in failures:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        key = (code, lines[-1][:160] if lines else "(no stderr)")
        seen[key] = seen.get(key, 0) + 1
    ranked = sorted(seen.items(), key=lambda item: -item[1])
    shown = [f"    {n} x exit {code}: {line}" for (code, line), n in ranked[:most]]
    if len(ranked) > most:
        shown.append(f"    ... and {len(ranked) - most} other kinds of failure")
    return shown


# --- bench/throughput's figures -------------------------------------------


@dataclass(frozen=True)
class Throughput:
    jobs: int
    seconds: float
    failed: int
    lost_records: int | None = None

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


def throughput_line(size: int, ref: Throughput, ours: Throughput) -> str:
    share = ratio(ours.rate, ref.rate)
    met = (
        at_least(share, GOAL_THROUGHPUT_RATIO) is True
        and ours.failed == 0
        and ours.lost_records == 0
    )
    return (
        f"{size:>6}  {ref.rate:8.2f} jobs/s {ref.seconds:7.1f}s  "
        f"{ours.rate:8.2f} jobs/s {ours.seconds:7.1f}s  {fmt(share, '5.2f')}  "
        f"{ref.failed:>9}/{ours.failed:<9}  {fmt(ours.lost_records, '>12')}   "
        + goal(f"ratio >= {GOAL_THROUGHPUT_RATIO:.2f}, 0 failed, 0 lost", met)
    )


@dataclass(frozen=True)
class AtOnce:
    """Jobs started at the same moment: each one's seconds from its start to
    its launcher's exit (None: still running at the limit), exit codes, records."""

    durations: tuple[float | None, ...]
    failed: int
    records: int
    limit_s: float = GOAL_AT_ONCE_S

    @property
    def started(self) -> int:
        return len(self.durations)

    @property
    def ended_in_time(self) -> int:
        return sum(1 for d in self.durations if d is not None and d <= self.limit_s)

    @property
    def slowest(self) -> float | None:
        """The slowest one's seconds; None if one never ended within the limit."""
        if any(d is None for d in self.durations) or not self.durations:
            return None
        return max(d for d in self.durations if d is not None)

    def line(self) -> str:
        slowest = (
            f"slowest {self.slowest:.1f} s"
            if self.slowest is not None
            else f"slowest: not ended after {self.limit_s:.0f} s (stopped)"
        )
        met = (
            self.ended_in_time == self.started and self.records == self.started and self.failed == 0
        )
        return (
            f"{self.started} jobs started at once: {self.ended_in_time} of {self.started} "
            f"ended within {self.limit_s:.0f} s each, {slowest}, failed {self.failed}, "
            f"records {self.records} of {self.started}   "
            + goal(
                f"{self.started} of {self.started} within {self.limit_s:.0f} s, "
                f"{self.started} records",
                met,
            )
        )
