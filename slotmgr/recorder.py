"""The job's ExecStopPost= hook: takes the accounting record and stores it.

systemd runs this as root (the 'privileged' flag) after the job's main
process has ended and the rest of its processes were killed, but while the
unit's cgroup still exists. So the record is written whether or not the
`slotmgr run` that started the job is still alive, and exactly once.

Run as `python3 -I .../slotmgr/recorder.py --job-id ID --unit NAME --db PATH
[--slot N] [--user-manager]`.
The cgroup's counters are read first thing, before this process imports
anything heavy, and its own CPU time is subtracted, so the recorder does not
inflate the job's figures (memory.peak includes the recorder's interpreter,
about 10 MB, only if the job itself used less).
"""

from __future__ import annotations

import os
import sys
import time


def _read_cgroup_counters() -> dict[str, int]:
    """Read memory.peak, cpu.stat and io.stat of our own (the job's) cgroup."""
    counters: dict[str, int] = {}
    try:
        with open("/proc/self/cgroup") as f:
            path = next(line.split("::", 1)[1].strip() for line in f if line.startswith("0::"))
    except (OSError, StopIteration):
        return counters
    base = "/sys/fs/cgroup" + path
    try:
        with open(base + "/memory.peak") as f:
            counters["memory_peak"] = int(f.read())
    except (OSError, ValueError):
        pass
    try:
        with open(base + "/pids.peak") as f:
            counters["pids_peak"] = int(f.read())
    except (OSError, ValueError):
        pass
    try:
        with open(base + "/cpu.stat") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key in ("usage_usec", "user_usec", "system_usec"):
                    counters[key] = int(value)
    except (OSError, ValueError):
        pass
    try:
        read = written = 0
        with open(base + "/io.stat") as f:
            for line in f:
                for item in line.split()[1:]:
                    key, _, value = item.partition("=")
                    if key == "rbytes":
                        read += int(value)
                    elif key == "wbytes":
                        written += int(value)
        counters["io_read"] = read
        counters["io_write"] = written
    except (OSError, ValueError):
        pass
    # Our own CPU so far is in usage_usec too: take it out.
    own = os.times()
    counters["own_user_usec"] = int(own.user * 1e6)
    counters["own_system_usec"] = int(own.system * 1e6)
    counters["own_usec"] = int(time.process_time() * 1e6)
    return counters


def main(argv: list[str]) -> int:
    counters = _read_cgroup_counters()
    end_time = time.time()

    # Run as a file with -I: make the package importable from its own tree.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[0] = package_parent

    import argparse

    from slotmgr import accounting

    parser = argparse.ArgumentParser(prog="slotmgr-recorder")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--unit", required=True)
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
