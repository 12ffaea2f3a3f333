"""The whole test command: `python3 -m tests.check` (after scripts/setup).

Stages, in order, each one's output streamed:
  demo      the README's main command, scripts/demo, as written (the MPD case
            in the systemd 257 guest; it fails if the job leaves anything behind)
  lint      ruff check and ruff format --check on every Python file, mypy
            --strict on slotmgr/, tests/, the bench scripts and packaging/
  unit      the host-only tests (no bus), with the host's Python
  unit-3.9  the same under Python 3.9 with click 7.1 (RHEL 9's)
  rpm       `make rpm`, as the README says: the RPM that the guests install
  guest-252 the real-systemd tests and benchmarks inside the systemd 252 guest
  guest-257 the same inside the systemd 257 guest
  batch-252 the batch tier (tests/batch) inside the 252-batch guest: slotmgr
            under a real Slurm 22.05 cluster (one controller, nodes n1 and n2)
  batch-257 the same inside the 257-batch guest: Slurm 24.11 with the SPANK
            plugin's tests (test_spank.py), and an HTCondor 23.9 pool (slots
            slot1 and slot2) running its jobs through slotmgr
Every stage runs even when an earlier one fails; the last line counts the
tests of all stages: 'N passed, N failed'. The exit status is non-zero if
any stage failed, a guest could not boot, or no test ran.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv" / "bin"
VENV39 = REPO / ".venv39" / "bin"
GUEST_PYTEST = "python3 -m pytest tests/systemd -v -p no:cacheprovider -rfE --durations=10"
# Benchmarks print figures with their goals; they fail the stage only if they
# cannot run. Small sizes, to stay within a few minutes per guest under
# emulation; N = 100 is run by hand (README, Benchmarks). Both always run.
BENCHMARKS = (
    "s=0; python3 bench/launch --rounds 3 --job-rounds 2 || s=1; "
    "python3 bench/throughput --sizes 20 --at-once 50 || s=1; exit $s"
)
BENCH_SCRIPTS = "bench/launch bench/throughput"  # extensionless: ruff and mypy skip them
PYTHON_FILES = f"slotmgr tests bench packaging examples {BENCH_SCRIPTS}"
GUESTS = ("252", "257")
BATCH_PYTEST = "python3 -m pytest tests/batch -v -p no:cacheprovider -rfE --durations=5"
# Stages batch-252 and batch-257, each with its guest's time limit (s): 257-batch
# also runs the HTCondor tests, ~10 min of guest time under TCG.
BATCH_GUESTS = {"252-batch": 900, "257-batch": 1800}


@dataclass
class Stage:
    name: str
    argv: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    returncode: int | None = None
    seconds: float = 0.0


def _pytest_counts(output: str) -> dict[str, int]:
    """Add up every pytest summary line ('== 3 passed, 1 failed in 2s ==')."""
    counts: dict[str, int] = {}
    for line in output.splitlines():
        # Decorated ('== 3 passed in 2s ==') or, with -q, plain ('3 passed in 2s').
        if not re.match(r"^(=+ )?\d+ (passed|failed|errors?|skipped)\b.* in [\d.]+s", line):
            continue
        for number, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed)", line):
            key = "error" if word.startswith("error") else word
            counts[key] = counts.get(key, 0) + int(number)
    return counts


def _run(stage: Stage) -> None:
    print(f"\n===== {stage.name}: {' '.join(stage.argv)}", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(
        stage.argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    assert proc.stdout is not None
    captured: list[str] = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        captured.append(line)
    stage.returncode = proc.wait()
    stage.seconds = time.monotonic() - start
    stage.counts = _pytest_counts("".join(captured))


def stages(selected: list[str]) -> list[Stage]:
    guest_cmd = f"{GUEST_PYTEST}; status=$?; ({BENCHMARKS}) || status=1; exit $status"
    all_stages = [
        Stage("demo", [str(REPO / "scripts" / "demo")]),
        Stage(
            "lint",
            [
                "sh",
                "-c",
                f"{VENV}/ruff check {PYTHON_FILES} && "
                f"{VENV}/ruff format --check {PYTHON_FILES} && "
                # mypy's files (pyproject.toml): slotmgr, tests, examples, packaging/gen-manpage.py
                f"{VENV}/mypy && {VENV}/mypy --scripts-are-modules "
                f"bench/benchlib.py {BENCH_SCRIPTS}",
            ],
        ),
        Stage(
            "unit",
            [
                str(VENV / "python"),
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/unit",
                "tests/packaging",
            ],
        ),
        Stage(
            "unit-3.9",
            [str(VENV39 / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"],
        ),
        # The guests install this RPM's files (tests/systemd/test_rpm_install.py).
        Stage("rpm", ["make", "rpm"]),
    ]
    for guest in GUESTS:
        all_stages.append(
            Stage(
                f"guest-{guest}",
                [
                    str(VENV / "python"),
                    "-m",
                    "tests.testbed",
                    "run",
                    "--guest",
                    guest,
                    "--timeout",
                    "2700",
                    "--",
                    "sh",
                    "-c",
                    guest_cmd,
                ],
            )
        )
    for guest, limit in BATCH_GUESTS.items():
        all_stages.append(
            Stage(
                f"batch-{guest.removesuffix('-batch')}",
                [
                    str(VENV / "python"),
                    "-m",
                    "tests.testbed",
                    "run",
                    "--guest",
                    guest,
                    "--timeout",
                    str(limit),
                    "--",
                    "sh",
                    "-c",
                    BATCH_PYTEST,
                ],
            )
        )
    if not selected:
        return all_stages
    return [s for s in all_stages if s.name in selected]


class Prebuild:
    """The guests' images built in the background while the host stages run
    (lint, unit, unit-3.9, rpm: minutes in which the build's downloads and
    dpkg use what the tests leave). After the demo, which builds the 257
    guest's own; each guest stage waits for it, and would build whatever it
    left undone itself (the test bed's build lock keeps two builds apart)."""

    def __init__(self, proc: subprocess.Popen[bytes], log: str) -> None:
        self.proc, self.log, self.started = proc, log, time.monotonic()

    @classmethod
    def start(cls) -> Prebuild:
        fd, log = tempfile.mkstemp(prefix="slotmgr-prebuild-", suffix=".log")
        argv = [str(VENV / "python"), "-m", "tests.testbed", "build", "--guest", "all"]
        print(f"\n===== in the background: {' '.join(argv)} --keep-stale (log {log})", flush=True)
        proc = subprocess.Popen(
            [*argv, "--keep-stale"], cwd=REPO, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd
        )
        os.close(fd)
        return cls(proc, log)

    def wait(self) -> None:
        if self.proc.returncode is not None:
            return
        status = self.proc.wait()
        with open(self.log, errors="replace") as f:
            last = (f.read().strip().splitlines() or ["(no output)"])[-1]
        print(
            f"\n===== background build: exit {status} after "
            f"{time.monotonic() - self.started:.0f} s: {last}",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", nargs="*", help="only these stages (default: all)")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    started = time.monotonic()
    chosen = stages(args.stage)
    prebuild: Prebuild | None = None
    for stage in chosen:
        in_guest = stage.name.startswith(("guest-", "batch-"))
        if (
            prebuild is None
            and stage.name != "demo"
            and any(later.name.startswith(("guest-", "batch-")) for later in chosen)
        ):
            prebuild = Prebuild.start()
        if in_guest and prebuild is not None:
            prebuild.wait()
        _run(stage)
    if prebuild is not None:
        prebuild.wait()

    print("\n===== summary")
    for stage in chosen:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(stage.counts.items())) or "no pytest run"
        verdict = "ok" if stage.returncode == 0 else f"FAILED (exit {stage.returncode})"
        print(f"{stage.name:10} {verdict:18} {stage.seconds:7.1f}s  {counts}")
    print(f"whole test command: {time.monotonic() - started:.0f}s")
    line, ok = total_line(chosen)
    print(f"total: {line}")
    return 0 if ok else 1


def total_line(chosen: list[Stage]) -> tuple[str, bool]:
    """The last line's 'N passed, N failed' over every stage, and whether all passed.

    A stage that failed without a failed test of its own (lint, the demo, a
    guest that did not boot) counts as one failure."""
    total: dict[str, int] = {}
    failed = 0
    for stage in chosen:
        for key, number in stage.counts.items():
            total[key] = total.get(key, 0) + number
        own_failures = stage.counts.get("failed", 0) + stage.counts.get("error", 0)
        failed += own_failures or int(stage.returncode != 0)
    passed = total.get("passed", 0)
    ok = passed > 0 and failed == 0
    if passed == 0:
        failed = max(failed, 1)  # no test ran: that is not a pass
    line = f"{passed} passed, {failed} failed"
    for kind in ("skipped", "xfailed", "xpassed"):  # never counted as passed
        if total.get(kind):
            line += f", {total[kind]} {kind}"
    return line, ok


if __name__ == "__main__":
    sys.exit(main())
