"""The job's ExecStopPost= hook: takes the accounting record and stores it.

systemd runs this as root (the 'privileged' flag) after the job's main
process has ended and the rest of its processes were killed, but while the
unit's cgroup still exists. So the record is written whether or not the
`slotmgr run` that started the job is still alive, and exactly once.

Run as `python3 -I .../slotmgr/recorder.py --job-id ID --unit NAME --db PATH
[--slot N] [--user-manager]`. -I keeps the job's PYTHON* variables out.
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


def main(argv: list[str]) -> int:
    path = cgroup.own_cgroup()
    if path and path.endswith("/.control"):
        # A delegated unit (Delegate=yes) runs its ExecStopPost= in a
        # sub-cgroup of its own; the job's counters are its parent's.
        path = path[: -len("/.control")]
    counters = cgroup.read_counters(path) if path else {}
    counters.update(cgroup.own_cpu_counters())
    end_time = time.time()

    import argparse

    from slotmgr import accounting

    parser = argparse.ArgumentParser(prog="slotmgr-recorder")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--unit", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--slot")
    parser.add_argument("--user-manager", action="store_true")
    args = parser.parse_args(argv)
    try:
        accounting.record_from_stop_post(
            job_id=args.job_id,
            unit=args.unit,
            db_path=args.db,
            slot=args.slot,
            user_manager=args.user_manager,
            counters=counters,
            end_time=end_time,
            env=dict(os.environ),
        )
    except Exception as exc:  # the job's result must not depend on ours
        print(f"slotmgr-recorder: job {args.job_id}: cannot store record: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
