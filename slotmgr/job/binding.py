"""A service job bound to its launcher's life: when `slotmgr run` goes away
by any means (SIGKILL, its batch job's cgroup killed), the job is stopped.

The job's unit cannot live in its launcher's cgroup (a batch system's job
cgroup is no slice), so the launcher is watched from a second unit made in
the same StartTransientUnit call. Its only process is cat(1), reading the
read end of a pipe whose one write end the launcher holds and never writes
to. The kernel closes that end when the launcher is gone, however it went;
cat then reads end-of-file and exits. No PID is watched, so no reused PID
can stand in for the launcher; and it costs no interpreter. The job has
BindsTo= and After= on the watcher, so systemd starts it first and stops the
job when it ends; the job's stop hook then finds it inactive, and the record
says the launcher went away (slotmgr.history.accounting.LAUNCHER_GONE).

The watcher holds no privilege: on the system manager it runs as a dynamic
user of its own (a uid no job and no other watcher has, so no job can signal
it), in the node's slotmgr slice, not the job's slot. A user manager has no
dynamic users; there the watcher is the user's, like the job.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from slotmgr.job.spec import DEFAULT_SLICE, JobSpec
from slotmgr.naming import launcher_unit_for
from slotmgr.systemd.wire import Property

# coreutils' cat, where RHEL 9/10 and Debian 12/13 (merged /usr) all have it.
CAT = "/usr/bin/cat"
# cat, single-threaded; one spare task.
WATCHER_TASKS_MAX = 2


@contextlib.contextmanager
def launcher_pipe() -> Iterator[int]:
    """The read end of the pipe that binds a job to this process, for the
    watcher's stdin; its write end is held, never written, until the block
    ends or this process does, however it ends: the kernel closes it then.
    Both ends are close-on-exec (PEP 446), so no program this process runs
    holds the write end and keeps the job alive after it."""
    read_end, write_end = os.pipe()
    try:
        yield read_end
    finally:
        os.close(read_end)
        os.close(write_end)


def watcher_unit(spec: JobSpec, read_end: int) -> tuple[str, list[Property]]:
    """The watcher's unit, an auxiliary unit of the job's StartTransientUnit."""
    assert spec.launcher is not None
    props = [
        Property(
            "Description",
            "s",
            f"slotmgr: launcher of job {spec.job_id} (PID {spec.launcher})",
        ),
        Property("Slice", "s", DEFAULT_SLICE),
        Property("CollectMode", "s", "inactive-or-failed"),
        Property("Type", "s", "simple"),
        Property("ExecStart", "a(sasb)", [(CAT, [CAT], False)]),
        Property("StandardInputFileDescriptor", "h", read_end),
        Property("StandardOutput", "s", "null"),
        Property("TasksMax", "t", WATCHER_TASKS_MAX),
    ]
    if not spec.user_manager:
        props.append(Property("DynamicUser", "b", True))
    return launcher_unit_for(spec.run_id), props


def aux_units(spec: JobSpec, read_end: int | None) -> Sequence[tuple[str, Sequence[Property]]]:
    """StartTransientUnit's auxiliary units for this job: its watcher, if bound."""
    if spec.launcher is None:
        return []
    assert read_end is not None
    return [watcher_unit(spec, read_end)]
