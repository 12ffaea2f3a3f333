"""The job's ExecStopPost= hook: takes the accounting record and stores it.

systemd runs this as root (the 'privileged' flag) after the job's main
process has ended and the rest of its processes were killed, but while the
unit's cgroup still exists. So the record is written whether or not the
`slotmgr run` that started the job is still alive, and exactly once.

Run as `python3 -I .../slotmgr/recorder.py --job-id ID --run-id RUN --unit NAME
--db PATH [--slot N] [--user-manager]`. A unit made before run ids (no
--run-id) is recorded under its InvocationID. -I keeps the job's PYTHON* variables out.
The cgroup's counters are read first thing, before this process imports
anything heavy, and its own CPU time is subtracted, so the recorder does not
inflate the job's figures (memory.peak includes the recorder's interpreter,
about 10 MB, only if the job itself used less).
"""

from __future__ import annotations

import os
import sys
import time

# Run as a file: make the package importable from its own tree, and only it.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from slotmgr import cgroup  # noqa: E402 - stdlib only, cheap

USAGE = ("recorder.py --job-id ID [--run-id RUN] --unit NAME --db PATH [--slot N] "
         "[--user-manager]")
_WITH_VALUE = ("--job-id", "--run-id", "--unit", "--db", "--slot")


def parse_args(argv: list[str]) -> dict[str, str] | None:
    """The few options slotmgr itself writes into the unit; by hand, not
    argparse, whose import is a good part of this short process's start."""
    args: dict[str, str] = {}
    rest = list(argv)
    while rest:
        name = rest.pop(0)
        if name == "--user-manager":
            args[name] = ""
        elif name in _WITH_VALUE and rest:
            args[name] = rest.pop(0)
        else:
            return None
    required = ("--job-id", "--unit", "--db")
    return args if all(name in args for name in required) else None


def main(argv: list[str]) -> int:
    path = cgroup.own_cgroup()
    if path and path.endswith("/.control"):
        # A delegated unit (Delegate=yes) runs its ExecStopPost= in a
        # sub-cgroup of its own; the job's counters are its parent's.
        path = path[: -len("/.control")]
    counters = cgroup.read_counters(path) if path else {}
    counters.update(cgroup.own_cpu_counters())
    end_time = time.time()

    args = parse_args(argv)
    if args is None:
        print(f"slotmgr-recorder: usage: {USAGE}", file=sys.stderr)
        return 2
    from slotmgr import accounting
    try:
        accounting.record_from_stop_post(
            job_id=args["--job-id"],
            run_id=args.get("--run-id", ""),
            unit=args["--unit"],
            db_path=args["--db"],
            slot=args.get("--slot"),
            user_manager="--user-manager" in args,
            counters=counters,
            end_time=end_time,
            env=dict(os.environ),
        )
    except Exception as exc:  # the job's result must not depend on ours
        job = args["--job-id"]
        print(f"slotmgr-recorder: job {job}: cannot store record: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
