"""A service job bound to its launcher's life: when `slotmgr run` goes away
by any means (SIGKILL, its batch job's cgroup killed), the job is stopped.

The job's unit cannot live in its launcher's cgroup (a batch system's job
cgroup is no slice), so the launcher is watched from a second unit made in
the same StartTransientUnit call: slotmgr/launchwatch.py, which holds a
pidfd of the launcher and exits once it is gone. The job has BindsTo= and
After= on it, so systemd starts it first and stops the job when it ends; the
job's stop hook then finds it inactive, and the record says the launcher
went away (slotmgr.history.accounting.LAUNCHER_GONE).

The watcher holds no privilege: on the system manager it runs as a dynamic
user of its own (a uid no job and no other watcher has, so no job can signal
it), in the node's slotmgr slice, not the job's slot. A user manager has no
dynamic users; there the watcher is the user's, like the job.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from slotmgr.job.spec import DEFAULT_SLICE, PACKAGE_DIR, JobSpec
from slotmgr.launchwatch import start_time
from slotmgr.naming import launcher_unit_for
from slotmgr.systemd.wire import Property

# Run by path (like pidshim): a unit started before an upgrade still finds it.
LAUNCHWATCH = os.path.join(PACKAGE_DIR, "launchwatch.py")
# Python, single-threaded: a few tasks cover the interpreter's own.
WATCHER_TASKS_MAX = 4


def this_launcher() -> tuple[int, int]:
    """This process, as the watcher will pin it: PID and start time."""
    pid = os.getpid()
    started = start_time(pid)
    assert started is not None  # this process is alive
    return pid, started


def watcher_argv(spec: JobSpec) -> list[str]:
    assert spec.launcher is not None
    pid, started = spec.launcher
    return [spec.python, "-I", "-S", LAUNCHWATCH, str(pid), str(started)]


def watcher_unit(spec: JobSpec) -> tuple[str, list[Property]]:
    """The watcher's unit, an auxiliary unit of the job's StartTransientUnit."""
    assert spec.launcher is not None
    argv = watcher_argv(spec)
    props = [
        Property(
            "Description",
            "s",
            f"slotmgr: launcher of job {spec.job_id} (PID {spec.launcher[0]})",
        ),
        Property("Slice", "s", DEFAULT_SLICE),
        Property("CollectMode", "s", "inactive-or-failed"),
        Property("Type", "s", "simple"),
        Property("ExecStart", "a(sasb)", [(argv[0], argv, False)]),
        Property("TasksMax", "t", WATCHER_TASKS_MAX),
    ]
    if not spec.user_manager:
        props.append(Property("DynamicUser", "b", True))
    return launcher_unit_for(spec.run_id), props


def aux_units(spec: JobSpec) -> Sequence[tuple[str, Sequence[Property]]]:
    """StartTransientUnit's auxiliary units for this job: its watcher, if bound."""
    return [] if spec.launcher is None else [watcher_unit(spec)]
