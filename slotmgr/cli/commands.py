"""The commands that look at and act on jobs: list, status, stop, kill, adopt,
slots and history. `register(cli)` adds them to the main group (slotmgr.cli.main);
the logic is in slotmgr.job.control, slotmgr.node.slots and slotmgr.history.query.
Works with click 7.1 and 8.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import asdict
from typing import Any

import click

from slotmgr.caller import Caller
from slotmgr.cli import views
from slotmgr.errors import PermissionDenied, UsageError
from slotmgr.history import query as history_query
from slotmgr.history import stopnote
from slotmgr.history.record import JobRecord
from slotmgr.history.stopnote import StopNote
from slotmgr.job import adopt, control, delivery, stopping
from slotmgr.job.control import Action
from slotmgr.job.environment import check_batch_id
from slotmgr.naming import UNIT_SUFFIXES
from slotmgr.node import slots
from slotmgr.systemd.manager import Manager
from slotmgr.systemd.values import parse_signal, parse_timespan_usec

DEFAULT_GRACE = "10s"


def _caller(obj: Any) -> Caller:
    return Caller.current(bool(obj.user))


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_obj
def list_cmd(obj: Any, as_json: bool) -> None:
    """List the running jobs.

    Shows each job's id, unit, slot, user, state, runtime, CPU time, memory
    and tasks now. Non-root users see their own jobs only."""
    caller = _caller(obj)
    manager = Manager.connect(user=caller.user_mode)
    try:
        jobs = control.list_jobs(manager, caller)
    finally:
        manager.close()
    if as_json:
        click.echo(views.dumps([j.to_dict() for j in jobs]))
    elif not jobs:
        click.echo("no running slotmgr jobs" + ("" if caller.controls_everything else " of yours"))
    else:
        _echo_lines(views.jobs_table(jobs))


@click.command("status")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def status_cmd(obj: Any, job: str, as_json: bool) -> None:
    """Show one job in full.

    JOB is a job id or a unit name. A running job is shown with its live
    figures, limits and processes; a finished one with its whole record from
    the history."""
    caller = _caller(obj)
    manager = Manager.connect(user=caller.user_mode)
    try:
        try:
            info = control.job_for(manager, caller, job, Action.STATUS)
        except control.NotAJob:
            raise
        except UsageError:
            if not _show_finished(obj, caller, job, as_json):
                raise
            return
        if info.active_state not in control.LIVE_STATES and _show_finished(
            obj, caller, info.job_id, as_json
        ):
            return  # still loaded, but over: its record says more
        detail = control.job_detail(manager, caller, info)
    finally:
        manager.close()
    if as_json:
        click.echo(views.dumps(detail.to_dict()))
    else:
        _echo_lines(views.status_lines(detail))


def _finished_record(source: history_query.HistorySource, job: str) -> JobRecord | None:
    """The newest record of JOB (a job id, or the unit name a job had)."""
    if not job.endswith(UNIT_SUFFIXES):
        return history_query.get(source, job)
    runs = [r for r in history_query.records(source, history_query.HistoryQuery()) if r.unit == job]
    return runs[-1] if runs else None


def _show_finished(obj: Any, caller: Caller, job: str, as_json: bool) -> bool:
    """A job that is no longer running may be in the history: show its record."""
    rec = _finished_record(history_query.source_for(caller), job)
    if rec is None:
        return False
    if not caller.owns(rec.uid):
        raise PermissionDenied(
            f"job {rec.job_id} belongs to {rec.user}: you may status only your own jobs"
        )
    if as_json:
        click.echo(views.dumps({**asdict(rec), "state": "finished"}))
    else:
        _echo_lines(views.record_lines(rec))
    return True


def _grace_seconds(text: str) -> float:
    try:
        usec = parse_timespan_usec(text)
    except ValueError as exc:
        raise UsageError(f"invalid --grace {text!r}: {exc}") from None
    if usec >= 2**63:
        raise UsageError(f"invalid --grace {text!r}: use a finite time span, e.g. 30s")
    return usec / 1e6


@click.command("stop")
@click.argument("job")
@click.option(
    "--grace",
    default=DEFAULT_GRACE,
    show_default=True,
    metavar="SECONDS",
    help="Time between SIGTERM and SIGKILL (a time span: 30, 30s, 2min).",
)
@click.pass_obj
def stop_cmd(obj: Any, job: str, grace: str) -> None:
    """Stop JOB and wait until nothing of it is left.

    SIGTERM goes to all its processes, SIGKILL to what is left of them after
    the grace period; the command returns once the job's unit is gone and its
    record is stored."""
    seconds = _grace_seconds(grace)
    caller = _caller(obj)
    manager = Manager.connect(user=caller.user_mode)
    try:
        info = control.job_for(manager, caller, job, Action.STOP)
        note = StopNote(by=f"slotmgr stop by uid {caller.uid}")
        outcome = stopping.stop_job(
            manager,
            info.unit,
            grace=seconds,
            before_signal=lambda: stopnote.leave_for_unit(
                manager, info.unit, note, user_manager=caller.user_mode
            ),
        )
    finally:
        manager.close()
    if outcome.already_stopped:
        click.echo(f"job {info.job_id} ({info.unit}) had already ended")
    elif outcome.escalated:
        click.echo(
            f"job {info.job_id} ({info.unit}) stopped: killed with SIGKILL after "
            f"the {seconds:g}s grace period"
        )
    else:
        click.echo(f"job {info.job_id} ({info.unit}) stopped")


@click.command("kill")
@click.argument("job")
@click.option(
    "-s",
    "--signal",
    "signal_name",
    default="TERM",
    show_default=True,
    metavar="SIGNAL",
    help="Signal name or number, e.g. KILL, USR1, 9.",
)
@click.pass_obj
def kill_cmd(obj: Any, job: str, signal_name: str) -> None:
    """Send SIGNAL to every process of JOB at once.

    The job is frozen while the signal is delivered, so no process of it can
    fork past the signal."""
    try:
        signum = parse_signal(signal_name)
    except ValueError as exc:
        raise UsageError(f"invalid --signal: {exc}") from None
    caller = _caller(obj)
    manager = Manager.connect(user=caller.user_mode)
    try:
        info = control.job_for(manager, caller, job, Action.KILL)
        name = stopnote.signal_name(signum)
        # Counted as a stop only if the job dies of it (StopNote.explains).
        stopnote.leave_for_unit(
            manager,
            info.unit,
            StopNote(by=f"slotmgr kill -s {name} by uid {caller.uid}", signal=signum),
            user_manager=caller.user_mode,
        )
        outcome = delivery.kill_job(manager, info.unit, signum)
    finally:
        manager.close()
    if not outcome.sent:
        click.echo(f"job {info.job_id} ({info.unit}) has ended: {name} not sent")
        return
    click.echo(f"sent {name} to every process of job {info.job_id} ({info.unit}), {outcome.how}")


@click.command("adopt")
@click.argument("job")
@click.argument("pids", nargs=-1, required=True, metavar="PID...")
@click.pass_obj
def adopt_cmd(obj: Any, job: str, pids: tuple[str, ...]) -> None:
    """Move processes started for JOB elsewhere into it.

    For processes a remote agent (sshd, an MPI launcher) started on the job's
    behalf, as Slurm's pam_slurm_adopt does: once adopted they are limited,
    accounted and ended with the job. Only processes of the job's own user,
    and none that is in another job."""
    numbers = adopt.parse_pids(pids)
    caller = _caller(obj)
    manager = Manager.connect(user=caller.user_mode)
    try:
        info = control.job_for(manager, caller, job, Action.ADOPT)
        outcome = adopt.adopt(manager, info, numbers, user_manager=caller.user_mode)
    finally:
        manager.close()
    if outcome.adopted:
        click.echo(
            f"adopted {' '.join(map(str, outcome.adopted))} into job {info.job_id} ({info.unit})"
        )
    if outcome.already_in_job:
        click.echo(f"already in job {info.job_id}: {' '.join(map(str, outcome.already_in_job))}")


@click.command("slots")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_obj
def slots_cmd(obj: Any, as_json: bool) -> None:
    """Show the batch slots, their limits and their use.

    The limits come from /etc/slotmgr/slots.conf (a non-root --user caller
    may name another file in SLOTMGR_SLOTS_CONF); the use now is read from
    each slot's slice: jobs (running/most), memory, swap, tasks, CPU time
    and CPUs."""
    config = slots.load()
    if config is None or not config.slots:
        if as_json:
            click.echo("[]")
        else:
            why = "does not exist" if config is None else "defines no slot"
            click.echo(f"no slots configured ({slots.config_path()} {why})")
        return
    manager = Manager.connect(user=bool(obj.user))
    try:
        usages = [slots.slot_usage(manager, slot) for slot in config.slots]
    finally:
        manager.close()
    if as_json:
        click.echo(views.dumps([u.to_dict() for u in usages]))
    else:
        _echo_lines(views.slots_table(usages))


@click.command("history")
@click.option(
    "--since",
    metavar="TIME",
    help="Jobs that ended since TIME: 2024-05-01, '2024-05-01 14:30', 2h, 3d, today.",
)
@click.option("--user", "user_name", metavar="NAME", help="Jobs of this user only.")
@click.option("--slot", metavar="N", help="Jobs of this slot only.")
@click.option("--limit", metavar="N", help="The N most recent matching jobs only.")
@click.option(
    "--batch-id",
    metavar="ID",
    help="Jobs of this batch job only: batch id ID, or ID.anything (Slurm job 5: "
    "5.batch, 5.0.1 ...).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of records.")
@click.option(
    "--ingest",
    is_flag=True,
    help="Only store the records waiting in the spool (those of jobs whose "
    "launcher is gone), printing nothing: slotmgr-ingest.timer runs this.",
)
@click.pass_obj
def history_cmd(
    obj: Any,
    since: str | None,
    user_name: str | None,
    slot: str | None,
    limit: str | None,
    batch_id: str | None,
    as_json: bool,
    ingest: bool,
) -> None:
    """Show finished jobs from the history, oldest first.

    Non-root users see their own jobs only."""
    user_mode = bool(obj.user)
    if ingest:
        history_query.ingest(user_mode=user_mode)
        return
    if slot is not None and (not (slot.isascii() and slot.isdigit()) or slot.startswith("0")):
        raise UsageError(f"invalid --slot {slot!r}: use a slot number such as 1")
    if limit is not None and (not (limit.isascii() and limit.isdigit()) or int(limit) < 1):
        raise UsageError(f"invalid --limit {limit!r}: use a whole number of at least 1")
    query = history_query.HistoryQuery(
        since=None if since is None else history_query.parse_since(since),
        user=user_name,
        slot=slot,
        limit=None if limit is None else int(limit),
        batch_id=None if batch_id is None else check_batch_id(batch_id),
    )
    caller = Caller.current(user_mode)
    query = history_query.scoped_query(query, caller, _name_of(caller.uid))
    source = history_query.source_for(caller)
    found = history_query.records(source, query)
    if as_json:
        click.echo(views.dumps([asdict(r) for r in found]))
    elif not found:
        click.echo(
            "no matching jobs"
            if os.path.exists(source.path)
            else f"no history yet ({source.path} does not exist)"
        )
    else:
        _echo_lines(views.history_table(found))


COMMANDS = (list_cmd, status_cmd, stop_cmd, kill_cmd, adopt_cmd, slots_cmd, history_cmd)


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
