"""The launcher's watcher: a job ends when the `slotmgr run` that started it goes away.

    python3 -I -S launchwatch.py PID START_TIME

A job's unit cannot live in its launcher's cgroup (a batch system's job
cgroup is not a slice), so systemd alone cannot see the launcher die. This
process does: it runs as a unit of its own, which the job's unit is bound to
(BindsTo= and After=, slotmgr.job.binding), and exits as soon as the
launcher, process PID started at START_TIME (clock ticks after boot, field 22
of /proc/PID/stat), is gone by any means: its exit, SIGKILL, its cgroup
killed. systemd then stops the job. Its record says so: the job's stop hook
finds this unit inactive.

The PID is pinned with a pidfd before its start time is compared, so a PID
reused by another process is never waited for: if the launcher is gone
before the watcher starts, the watcher exits at once and the job stops.

Exit status, its only output: 0 when the launcher is gone (or was before the
watcher started), 2 for arguments it cannot read. SIGTERM (systemd stopping
this unit) ends it with the default action, which stops the job too: the
job's launcher is then unknown. Standard library only, run by path: a unit
started before an upgrade still finds this file after it.
"""

from __future__ import annotations

import os
import select
import sys

USAGE_ERROR = 2


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (after the command name, which may hold
    spaces and parentheses: hence the last ')'), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2 :].split()
    return int(fields[19])


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[1].isdigit() or not argv[2].isdigit():
        print("usage: launchwatch.py PID START_TIME", file=sys.stderr)
        return USAGE_ERROR
    pid, started = int(argv[1]), int(argv[2])
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return 0  # gone before we looked
    if start_time(pid) != started:
        return 0  # the PID names another process now: the launcher is gone
    # A pidfd polls readable once its process has exited.
    while not select.select([pidfd], [], [])[0]:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
