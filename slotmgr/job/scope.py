"""`slotmgr run --scope`: slotmgr forks the job itself, inside a transient scope.

The child is put into the scope *before* it runs the command: it waits on a
pipe until systemd has created the scope with its PID, so no process of the
job ever runs outside it. Output is simply the terminal's. systemd does not
exec a scope's processes, so there is no ExecStopPost= hook: slotmgr takes
the record itself, sampling the cgroup while the job runs (memory.peak dies
with the cgroup) and reading systemd's cached CPU and I/O figures after.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from slotmgr.errors import ExitCode, Interrupted, RemoteError, SlotmgrError
from slotmgr.history import stopnote
from slotmgr.history import store as history
from slotmgr.history.accounting import build_record, stopped_result
from slotmgr.history.record import JobRecord
from slotmgr.job.spec import JobSpec, exec_argv
from slotmgr.kernel import cgroup
from slotmgr.systemd import messages, values
from slotmgr.systemd.manager import Manager
from slotmgr.systemd.wire import Property

_SAMPLE_INTERVAL_S = 0.2
_CHILD_SETUP_FAILED = int(ExitCode.INIT_FAILED)


def _fork_waiting_child(argv: list[str], *, cwd: str | None) -> tuple[int, socket.socket]:
    """Fork a child that execs `argv` in `cwd` once released; return (pid,
    release socket). The release ("g") carries the job's stdin, stdout and
    stderr, which are opened only once the scope's slot admits it. The
    child runs as the caller (slotmgr refuses --uid with --scope): it
    changes no ids."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # child: wait for the go, then become the job
        try:
            parent_end.close()
            go, fds, _flags, _addr = socket.recv_fds(child_end, 1, 3)
            if go != b"g" or len(fds) != 3:
                os._exit(_CHILD_SETUP_FAILED)  # the parent could not make the scope
            for target, fd in enumerate(fds):
                os.dup2(fd, target)  # dup2's copy is inheritable
            for fd in set(fds):
                os.close(fd)  # received above 2 (0-2 were open): only the copies stay
            if cwd is not None:
                os.chdir(cwd)
            os.execvp(argv[0], argv)
        except FileNotFoundError:
            os._exit(127)
        except OSError:
            os._exit(126)
        finally:
            os._exit(_CHILD_SETUP_FAILED)
    child_end.close()
    return pid, parent_end


def _wait_sampling(
    pid: int, cgroup_path: str | None, manager: Manager, unit: str, counters: dict[str, int]
) -> tuple[int, int | None]:
    """Wait for the child, sampling the scope's counters; return its wait
    status, and the signal to slotmgr that stopped the scope (and so every
    process in it), if one did."""
    pidfd = os.pidfd_open(pid)
    watched = [pidfd]
    if manager.interrupt_fd is not None:
        watched.append(manager.interrupt_fd)
    stopped_by: int | None = None
    try:
        while True:
            if cgroup_path:
                counters.update(cgroup.read_counters(cgroup_path))
            ready, _, _ = select.select(watched, [], [], _SAMPLE_INTERVAL_S)
            if pidfd in ready:
                return os.waitpid(pid, 0)[1], stopped_by
            if manager.interrupt_fd in ready and stopped_by is None:
                got = os.read(manager.interrupt_fd, 64)
                stopped_by = got[0] if got else 0
                with contextlib.suppress(SlotmgrError, Interrupted):
                    manager.stop(unit)
    finally:
        os.close(pidfd)


def run_in_scope(
    manager: Manager,
    spec: JobSpec,
    props: list[Property],
    admitted: AbstractContextManager[tuple[int, int, int]],
    *,
    on_start: Callable[[JobSpec], None] | None = None,
) -> JobRecord:
    features = manager.features
    pid, release = _fork_waiting_child(exec_argv(spec, features), cwd=spec.working_directory)
    try:
        scope_props = [p for p in props if p.name != "PIDs"]
        scope_props += [Property("PIDs", "au", [pid]), Property("AddRef", "b", True)]
        with admitted as stdio:  # the job's place in its slot, held until systemd has the scope
            job = manager.start_transient_unit(spec.unit, scope_props)
        result = manager.wait_for_job(job)
        if result != "done":
            raise SlotmgrError(f"systemd could not start {spec.unit} ({result})")
        if on_start is not None:
            on_start(spec)
        socket.send_fds(release, [b"g"], list(stdio))
    except BaseException:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    finally:
        release.close()

    try:
        cgroup_path = (
            str(manager.unit_property(spec.unit, messages.SCOPE_IFACE, "ControlGroup") or "")
            or None
        )
    except RemoteError:
        cgroup_path = None
    try:
        invocation = stopnote.invocation_id(
            manager.unit_property(spec.unit, messages.UNIT_IFACE, "InvocationID")
        )
    except RemoteError:
        invocation = ""
    counters: dict[str, int] = {}
    status, signalled = _wait_sampling(pid, cgroup_path, manager, spec.unit, counters)
    end_time = time.time()
    exit_status = os.waitstatus_to_exitcode(status)
    exit_status = 128 - exit_status if exit_status < 0 else exit_status

    try:
        unit_props = manager.unit_properties(spec.unit)
    except RemoteError:
        unit_props = {}
    # The cgroup is gone or going: systemd's figures cached at its removal are
    # complete, the last sample may not be; keep the sample where systemd has
    # none (252 keeps no CPU figure for a scope that ended).
    if values.counter(unit_props.get("CPUUsageNSec")) is not None:
        for key in ("usage_usec", "user_usec", "system_usec"):
            counters.pop(key, None)
    if values.counter(unit_props.get("IOReadBytes")) is not None:
        for key in ("io_read", "io_write"):
            counters.pop(key, None)
    scope_result = str(unit_props.get("Result", "success"))
    if scope_result == "success" and exit_status != 0:
        scope_result = "signal" if exit_status > 128 else "exit-code"
    note = stopnote.take(invocation, user_manager=spec.user_manager)
    if signalled is not None:
        note = stopnote.launcher_signalled(signalled)
    scope_result, stopped_by = stopped_result(scope_result, exit_status, note, None)
    rec = build_record(
        job_id=spec.job_id,
        unit=spec.unit,
        slot=spec.slot,
        props={**unit_props, "ExecMainStartTimestamp": unit_props.get("ActiveEnterTimestamp")},
        counters=counters,
        result=scope_result,
        exit_status=exit_status,
        end_time=end_time,
        systemd_version=features.version_string,
        command=list(spec.command),
        run_id=spec.run_id,
        stopped_by=stopped_by,
        batch_id=spec.batch_id,
    )
    history.store(spec.history_db, rec)
    return rec
