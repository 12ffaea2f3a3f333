"""`slotmgr run`: start a job as a transient unit, wait, report.

The order matters and is systemd-run's: subscribe before starting (so the
JobRemoved of our job cannot be missed), pass our own stdin/stdout/stderr as
file descriptors (so the job writes straight to the caller's terminal or
pipe and nothing is lost), then wait for the unit to go inactive and store
the record its ExecStopPost= hook completed (slotmgr.history.hook).
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import os
import pwd
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from slotmgr.errors import BusTimeout, ExitCode, Interrupted, SlotmgrError, UsageError
from slotmgr.history import hook as stophook
from slotmgr.history import launch as run_files
from slotmgr.history import stopnote
from slotmgr.history.accounting import build_record
from slotmgr.history.record import JobRecord, summary_lines
from slotmgr.job import binding, scope
from slotmgr.job.asuser import (
    Identity,
    acting_as,
    check_install_reachable,
    check_working_directory,
    open_output,
)
from slotmgr.job.isolation import isolation_lines
from slotmgr.job.spec import (
    DEFAULT_STOP_TIMEOUT_USEC,
    JobSpec,
    check_command,
    stdio_properties,
    unit_properties,
)
from slotmgr.systemd import messages, values
from slotmgr.systemd.manager import Manager
from slotmgr.systemd.properties import PropertyError
from slotmgr.systemd.wire import Property

if TYPE_CHECKING:  # admission is imported only for a job in a slot (cli.main.run)
    from slotmgr.node.admission import Admission

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# systemd's exit status for "could not execute the command" (EXIT_EXEC).
_SYSTEMD_EXIT_EXEC = 203


def exit_code_for(rec: JobRecord) -> int:
    """slotmgr's own exit status for a finished job (see errors.ExitCode)."""
    if rec.result == "timeout":
        return ExitCode.JOB_TIMEOUT
    if rec.result == "oom-kill":
        return ExitCode.JOB_OOM
    if rec.result == "exec" or rec.exit_status == _SYSTEMD_EXIT_EXEC:
        return ExitCode.NOT_EXECUTABLE
    return rec.exit_status


@contextlib.contextmanager
def signal_pipe(signals: Sequence[signal.Signals]) -> Iterator[int]:
    """While the block runs, `signals` are caught and their numbers written
    to a pipe; yields its read end, for a wait to watch."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(write_fd)
    old_handlers = {sig: signal.signal(sig, lambda *_: None) for sig in signals}
    try:
        yield read_fd
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(old_wakeup)
        os.close(read_fd)
        os.close(write_fd)


@contextlib.contextmanager
def _signals_to_pipe(manager: Manager) -> Iterator[None]:
    """Route SIGINT/SIGTERM/SIGHUP to a pipe the bus wait watches, so a
    signal to slotmgr becomes a clean stop of the job instead of a dead launcher."""
    with signal_pipe(FORWARDED_SIGNALS) as read_fd:
        manager.interrupt_fd = read_fd
        try:
            yield
        finally:
            manager.interrupt_fd = None


@dataclass(frozen=True)
class OutputFiles:
    """Where the job's stdout and stderr go (None: the caller's own), and the
    --json record's file ('-': stdout); paths are absolute but for --json."""

    stdout: str | None = None
    stderr: str | None = None
    append: bool = False
    json: str | None = None


def job_identity(spec: JobSpec) -> Identity | None:
    """Whose ids the launcher takes to look at and open what the job's user
    names: the job's user when root runs it for one, else nobody else's."""
    if spec.user is None or os.geteuid() != 0:
        return None
    gid = None if spec.group is None else grp.getgrnam(spec.group).gr_gid
    return Identity.of(spec.user, gid)


def check_job(spec: JobSpec) -> None:
    """Everything about the job that can be checked before a unit is made,
    as the job's user would see it."""
    check_working_directory(spec)
    check_install_reachable(spec)
    try:
        check_command(spec.command, cwd=spec.working_directory)
    except FileNotFoundError:
        raise SlotmgrError(
            f"command not found: {spec.command[0]!r}", exit_code=ExitCode.NOT_FOUND
        ) from None
    except PermissionError:
        raise SlotmgrError(
            f"command is not executable: {spec.command[0]!r}", exit_code=ExitCode.NOT_EXECUTABLE
        ) from None


class OutputStreams:
    """The job's --output/--error files and the --json stream, opened (as
    asuser.open_output does, with the job user's ids) only once nothing can
    refuse the job any more: inside its slot's admission, just before its
    unit is started."""

    def __init__(self, files: OutputFiles, who: Identity | None) -> None:
        self.files, self.who = files, who
        self.fds: list[int] = []
        self.json_out: TextIO | None = sys.stdout if files.json == "-" else None

    def open(self) -> tuple[int, int, int]:
        """The job's stdin, stdout and stderr (the caller's where no file is named)."""
        files = self.files
        with acting_as(self.who):
            out_fd = err_fd = None
            if files.stdout is not None:
                out_fd = self._open(files.stdout, files.append, "--output")
            if files.stderr is not None:
                # One file for both (sbatch's default): one descriptor, one offset.
                same = files.stderr == files.stdout
                err_fd = out_fd if same else self._open(files.stderr, files.append, "--error")
            if files.json not in (None, "-"):
                self.json_out = os.fdopen(self._open(files.json, False, "--json"), "w")
                self.fds.pop()  # the stream owns it now
        return (0, 1 if out_fd is None else out_fd, 2 if err_fd is None else err_fd)

    def _open(self, path: str, append: bool, what: str) -> int:
        fd = open_output(path, append=append, what=what)
        self.fds.append(fd)
        return fd

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def announce_start(spec: JobSpec) -> None:
    kind = "scope" if spec.scope else "unit"
    print(f"Running as {kind}: {spec.unit}; job id: {spec.job_id}", file=sys.stderr, flush=True)


def run(
    spec: JobSpec,
    *,
    quiet: bool,
    announce: bool,
    files: OutputFiles,
    admission: Admission | None = None,
) -> int:
    who = job_identity(spec)
    with acting_as(who):
        check_job(spec)
    # A scope needs AddRef= (kept loaded until we have read it), which
    # systemd grants only to clients of the bus, not of its private socket.
    # A service prefers the bus too, where a broker filters the signals (bus.connect).
    manager = Manager.connect(user=spec.user_manager, want_bus=spec.scope, prefer_bus=True)
    outputs = OutputStreams(files, who)
    try:
        features = manager.features
        spec = with_scratch_dir(spec, who)
        if not spec.scope:  # a scope's processes are the launcher's own children
            spec = dataclasses.replace(spec, launcher=os.getpid())
        try:
            props = unit_properties(spec, features)
        except PropertyError as exc:
            drop_unused_scratch(spec)
            raise UsageError(str(exc)) from None
        manager.watch_unit(spec.unit, jobs=True)
        admitted = _admitted(admission, manager, outputs)
        on_start = announce_start if announce else None
        with _signals_to_pipe(manager):
            if spec.scope:
                rec = scope.run_in_scope(manager, spec, props, admitted, on_start=on_start)
            else:
                with binding.launcher_pipe() as watcher_stdin:
                    rec = _start_and_wait(
                        manager, spec, props, admitted, watcher_stdin, on_start=on_start
                    )
        if not quiet:
            for line in [*summary_lines(rec), *isolation_lines(spec)]:
                print(line, file=sys.stderr)
        if outputs.json_out is not None:
            outputs.json_out.write(rec.to_json() + "\n")
            outputs.json_out.flush()
        return exit_code_for(rec)
    finally:
        outputs.close()
        manager.close()


@contextlib.contextmanager
def _admitted(
    admission: Admission | None, manager: Manager, outputs: OutputStreams
) -> Iterator[tuple[int, int, int]]:
    """The job's place in its slot (if it has one), held while its unit is
    started; inside it, last, the job's output files are opened: a job
    refused for a full slot makes none. Yields the job's stdio descriptors."""
    with contextlib.nullcontext() if admission is None else admission.hold(manager):
        yield outputs.open()


def _start_and_wait(
    manager: Manager,
    spec: JobSpec,
    props: list[Property],
    admitted: AbstractContextManager[tuple[int, int, int]],
    watcher_stdin: int,
    *,
    on_start: Callable[[JobSpec], None] | None,
) -> JobRecord:
    stop_requested = False
    try:
        try:
            with admitted as stdio:
                # No SQLite before the unit exists: one small file, which the
                # stop hook's file completes into the record (slotmgr.history.hook).
                run_files.write_launch(spec.history_db, launch_of(spec, manager))
                job = _start_unit(manager, spec, props + stdio_properties(stdio), watcher_stdin)
        except StartUnanswered:
            # No answer is no refusal: the unit may still be made, and then its
            # own hook completes the record and removes the scratch.
            raise
        except SlotmgrError:
            # Refused: no unit, so no hook of it records it or removes the scratch.
            run_files.discard_launch(spec.history_db, spec.run_id)
            drop_unused_scratch(spec)
            raise
        if on_start is not None:
            on_start(spec)
        job_result = manager.wait_for_job(job)
    except Interrupted as exc:
        # The unit may be starting: stop it, then wait as usual.
        stop_requested = True
        stop_for_signal(manager, spec, exc.signum, started=False)
        job_result = "canceled"
    if job_result not in ("done", "canceled"):
        print(
            f"slotmgr: job {spec.job_id}: systemd could not start {spec.unit} ({job_result})",
            file=sys.stderr,
        )
    while True:
        try:
            manager.wait_until_inactive(spec.unit)
            break
        except Interrupted as exc:
            if not stop_requested:
                print(
                    f"slotmgr: job {spec.job_id}: signal {exc.signum} received, stopping "
                    f"{spec.unit}",
                    file=sys.stderr,
                )
                stop_requested = True
                stop_for_signal(manager, spec, exc.signum, started=True)

    rec = run_files.collect(spec.history_db, spec.run_id)
    if rec is None:
        # The stop hook could not run (the unit never started, or it failed):
        # report what the caller knows, and say so.
        print(
            f"slotmgr: job {spec.job_id}: no accounting record was stored in {spec.history_db}"
            f" (see: journalctl -u {spec.unit})",
            file=sys.stderr,
        )
        rec = build_record(
            job_id=spec.job_id,
            unit=spec.unit,
            slot=spec.slot,
            props={"Slice": spec.slice},
            counters={},
            result="resources" if job_result != "done" else "unknown",
            exit_status=ExitCode.INTERNAL,
            end_time=time.time(),
            systemd_version=manager.features.version_string,
            command=list(spec.command),
            run_id=spec.run_id,
            batch_id=spec.batch_id,
        )
    return rec


class StartUnanswered(SlotmgrError):
    """StartTransientUnit had no answer in time: the unit may exist yet."""

    exit_code = ExitCode.UNAVAILABLE


def _start_unit(manager: Manager, spec: JobSpec, props: list[Property], watcher_stdin: int) -> str:
    aux_units = binding.aux_units(spec, watcher_stdin)
    try:
        return manager.start_transient_unit(spec.unit, props, aux_units=aux_units)
    except BusTimeout as exc:
        raise StartUnanswered(
            f"{exc.message}; the job may still start (see: systemctl status {spec.unit})"
        ) from None


def launch_of(spec: JobSpec, manager: Manager) -> stophook.Launch:
    """What the record will say of the job that only the launcher knows."""
    if spec.user is None:
        uid = os.getuid()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
    else:
        user, uid = spec.user, pwd.getpwnam(spec.user).pw_uid
    return stophook.Launch(
        job_id=spec.job_id,
        run_id=spec.run_id,
        unit=spec.unit,
        slice=spec.slice,
        slot=spec.slot,
        user=user,
        uid=uid,
        command=list(spec.command),
        systemd_version=manager.features.version_string,
        user_manager=spec.user_manager,
        batch_id=spec.batch_id,
    )


def stop_for_signal(manager: Manager, spec: JobSpec, signum: int, *, started: bool) -> None:
    """Stop the job because its launcher got a signal; say so in its record.

    A started job is stopped as `slotmgr stop` stops it (slotmgr.job.stopping):
    SIGTERM to the job's own processes, SIGKILL to what is left after the
    unit's TimeoutStopSec=. Not StopUnit: systemd 257 takes a PrivatePIDs=
    main process for "not our child" when it learns of it while systemd's
    executor, its parent, still lives, and its StopUnit then skips SIGTERM's
    grace and SIGKILLs the job at once (seen in the test bed: 1 stop in 14
    under load). A job still starting gets StopUnit, which also cancels its start.
    """

    def leave_note() -> None:
        with contextlib.suppress(SlotmgrError, Interrupted):
            stopnote.leave_for_unit(
                manager,
                spec.unit,
                stopnote.launcher_signalled(signum),
                user_manager=spec.user_manager,
            )

    if not started:
        leave_note()
        stop_quietly(manager, spec.unit)
        return
    from slotmgr.job import stopping  # job control: only a stopped job pays for it

    interrupt_fd, manager.interrupt_fd = manager.interrupt_fd, None  # the stop is under way
    try:
        stopping.stop_job(
            manager, spec.unit, grace=stop_grace(manager, spec.unit), before_signal=leave_note
        )
    except SlotmgrError:
        stop_quietly(manager, spec.unit)
    finally:
        manager.interrupt_fd = interrupt_fd


def stop_grace(manager: Manager, unit: str) -> float | None:
    """The unit's TimeoutStopSec= in seconds, as StopUnit would wait before
    its SIGKILL; None for none (0 or infinity)."""
    try:
        usec = int(manager.unit_property(unit, messages.SERVICE_IFACE, "TimeoutStopUSec"))
    except (SlotmgrError, TypeError, ValueError):
        return DEFAULT_STOP_TIMEOUT_USEC / 1e6
    return None if usec in (0, values.USEC_INFINITY) else usec / 1e6


def with_scratch_dir(spec: JobSpec, who: Identity | None) -> JobSpec:
    """The spec with its scratch directory made for the job's user (`who`;
    None: the caller's own job), if one is wanted."""
    if spec.scratch_base is None:
        return spec
    from slotmgr.job.scratch import make_scratch_dir

    uid, gid = (os.getuid(), os.getgid()) if who is None else (who.uid, who.gid)
    path = make_scratch_dir(spec.scratch_base, spec.job_id, uid, gid)
    return dataclasses.replace(spec, scratch_dir=path)


def drop_unused_scratch(spec: JobSpec) -> None:
    if spec.scratch_dir is not None:
        from slotmgr.job.scratch import remove_scratch_dir

        remove_scratch_dir(spec.scratch_dir)


def stop_quietly(manager: Manager, unit: str) -> None:
    with contextlib.suppress(SlotmgrError, Interrupted):
        manager.stop(unit)
