"""Turn what systemd and the cgroup report about a finished job into a record.

The numbers come from the stop hook's file (a service) or the launcher's
samples (a scope), the command from whoever started the job; nothing here
asks systemd or reads a cgroup."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from slotmgr.caller import user_of
from slotmgr.errors import ExitCode
from slotmgr.history.record import JobRecord, exit_status_from
from slotmgr.history.stopnote import StopNote
from slotmgr.systemd.values import counter


def build_record(
    *,
    job_id: str,
    unit: str,
    slot: str | None,
    props: Mapping[str, Any],
    counters: Mapping[str, int],
    result: str,
    exit_status: int,
    end_time: float,
    systemd_version: str,
    command: Sequence[str],
    run_id: str = "",
    stopped_by: str | None = None,
    batch_id: str | None = None,
) -> JobRecord:
    """Prefer the cgroup counters read at the job's end (exact, and read
    before the reader itself could add to them); fall back to systemd's."""
    start_usec = counter(props.get("ExecMainStartTimestamp")) or counter(
        props.get("ActiveEnterTimestamp")
    )
    exit_usec = counter(props.get("ExecMainExitTimestamp"))
    start_time = start_usec / 1e6 if start_usec else end_time
    end_of_main = exit_usec / 1e6 if exit_usec else end_time
    own = counters.get("own_usec", 0)

    cpu = counters.get("usage_usec")
    if cpu is None:
        nsec = counter(props.get("CPUUsageNSec"))
        cpu = None if nsec is None else nsec // 1000
    if cpu is not None:
        cpu = max(0, cpu - own)
    cpu_user = counters.get("user_usec")
    cpu_system = counters.get("system_usec")
    if cpu_user is not None and cpu_system is not None:
        cpu_user = max(0, cpu_user - counters.get("own_user_usec", 0))
        cpu_system = max(0, cpu_system - counters.get("own_system_usec", 0))

    if "memory_peak" in counters:
        memory_peak: int | None = counters["memory_peak"]
        source = "cgroup memory.peak"
    elif counter(props.get("MemoryPeak")) is not None:
        memory_peak = counter(props.get("MemoryPeak"))
        source = "systemd MemoryPeak"
    else:
        memory_peak, source = None, "unavailable"

    if counters.get("oom_kill", 0) > 0 and result in ("exit-code", "signal"):
        # systemd may handle the main process's end before the OOM event (seen
        # when a slot's limit, on the slice above the unit, caused the kill):
        # the kernel's count in the job's cgroup says what happened.
        result = "oom-kill"
    # No User=: the manager's own unit (root's, or the --user manager's).
    user, uid = user_of(str(props.get("User") or ""), os.getuid())
    return JobRecord(
        job_id=job_id,
        unit=unit,
        slice=str(props.get("Slice", "")),
        slot=slot,
        user=user,
        uid=max(uid, 0),
        command=list(command) or ["?"],
        start_time=start_time,
        end_time=end_time,
        wall_time_usec=max(0, int((end_of_main - start_time) * 1e6)),
        result=result,
        exit_status=exit_status,
        cpu_usage_usec=cpu,
        cpu_user_usec=cpu_user,
        cpu_system_usec=cpu_system,
        memory_peak_bytes=memory_peak,
        memory_peak_source=source,
        io_read_bytes=counters.get("io_read", counter(props.get("IOReadBytes"))),
        io_write_bytes=counters.get("io_write", counter(props.get("IOWriteBytes"))),
        tasks_peak=counters.get("pids_peak"),
        ip_ingress_bytes=counter(props.get("IPIngressBytes")),
        ip_egress_bytes=counter(props.get("IPEgressBytes")),
        systemd_version=systemd_version,
        hostname=socket.gethostname(),
        run_id=run_id,
        stopped_by=stopped_by,
        batch_id=batch_id,
    )


# ExecMainCode= holds the si_code of the main process's end.
_CLD_NAMES = {1: "exited", 2: "killed", 3: "dumped"}


def how_main_ended(env: Mapping[str, str], props: Mapping[str, Any]) -> tuple[str, int]:
    """(result, shell-style exit status) of the job's main process. systemd
    passes them to ExecStopPost= in $SERVICE_RESULT, $EXIT_CODE, $EXIT_STATUS;
    but when a stop catches the job at its very start (seen on 257 with
    PrivatePIDs=), the hook can run before systemd has taken the main
    process's end into account: no $EXIT_CODE, and a $SERVICE_RESULT of
    "success" for a job that was killed. The unit's ExecMainCode=,
    ExecMainStatus= and Result=, which the hook reads a moment later, have it."""
    if env.get("EXIT_CODE"):
        return (
            env.get("SERVICE_RESULT") or "unknown",
            exit_status_from(env["EXIT_CODE"], env.get("EXIT_STATUS", "")),
        )
    code = _CLD_NAMES.get(int(props.get("ExecMainCode") or 0))
    if code is None:  # nobody knows: say so, as `slotmgr run` does without a record
        return "unknown", int(ExitCode.INTERNAL)
    # ExecMainStatus= is the exit code, or the signal's number.
    exit_status = exit_status_from(code, str(props.get("ExecMainStatus") or 0))
    return str(props.get("Result") or env.get("SERVICE_RESULT") or "unknown"), exit_status


SYSTEMD_STOP_JOB = "systemd stop job (systemctl stop or a batch system's StopUnit)"
LAUNCHER_GONE = "its launcher went away (slotmgr run killed, or its batch job ended)"
# systemd's own outcomes that say more than "it was stopped".
_KEPT_RESULTS = frozenset(("oom-kill",))


def stopped_result(
    result: str,
    exit_status: int,
    note: StopNote | None,
    pending_job_type: str | None,
    *,
    launcher_gone: bool = False,
) -> tuple[str, str | None]:
    """(result, stopped_by) for a job that may have been stopped.

    slotmgr's own stoppers leave a note (slotmgr.history.stopnote) before they
    signal; a stop through systemd by anybody else leaves a stop job pending
    while ExecStopPost= runs. A job that ended by itself has neither. A
    `slotmgr kill` note counts only when the job died of its signal. A stop
    job while the launcher's watcher is no longer active is the launcher's
    going away (slotmgr.job.binding): systemd stopped the job bound to it."""
    if result in _KEPT_RESULTS:
        return result, None
    if note is not None and note.explains(exit_status):
        return "cancelled", note.by
    if pending_job_type in ("stop", "restart"):
        return "cancelled", LAUNCHER_GONE if launcher_gone else SYSTEMD_STOP_JOB
    return result, None
