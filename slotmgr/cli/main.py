"""The command line. Works with click 7.1 (RHEL 9) and click 8.

Errors reach the user as one line and an exit code from `ExitCode`;
a traceback only with --debug.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Sequence
from typing import Any, Callable, TypeVar

import click

from slotmgr import __version__
from slotmgr.cli.help_sections import SectionedCommand
from slotmgr.errors import ExitCode, PermissionDenied, SlotmgrError, UsageError
from slotmgr.job import request
from slotmgr.job.environment import batch_id_from, check_batch_id, job_environment
from slotmgr.job.spec import DEFAULT_SLICE, JobSpec, new_job_id
from slotmgr.naming import JOB_ID_RULE, UNIT_PREFIX, is_job_id, unit_name_for
from slotmgr.systemd.properties import (
    LIMIT_OPTIONS,
    Given,
    PropertyError,
    job_limits,
    parse_assignment,
    shown,
)
from slotmgr.systemd.values import check_text

F = TypeVar("F", bound=Callable[..., Any])


def _print_traceback() -> None:
    import traceback  # only for --debug: not on every job's path

    traceback.print_exc()


class _Commands(click.Group):
    """The main group. The job control commands (slotmgr.cli.commands and the
    modules behind it) are imported only when one of them is asked for, or
    for the help: `slotmgr run`, which a batch system calls for every job,
    does not pay for them."""

    def _load_control(self) -> None:
        if "list" not in self.commands:
            from slotmgr.cli import commands as cli_control

            cli_control.register(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_control()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:  # `run` is here; the others load once asked for
            self._load_control()
        return super().get_command(ctx, cmd_name)


class Context:
    def __init__(self, *, user: bool, debug: bool) -> None:
        self.user = user
        self.debug = debug


@click.group(
    cls=_Commands,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="slotmgr", message="%(prog)s %(version)s")
@click.option(
    "--user",
    "user_mode",
    is_flag=True,
    help="Talk to the caller's user manager instead of the system manager.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.pass_context
def cli(ctx: click.Context, user_mode: bool, debug: bool) -> None:
    """Run batch jobs as transient systemd units: every process tracked,
    limited, accounted and killed with its job."""
    ctx.obj = Context(user=user_mode, debug=debug)
    if ctx.invoked_subcommand is None:
        from slotmgr.systemd.manager import Manager

        manager = Manager.connect(user=user_mode)
        try:
            features = manager.features
        finally:
            manager.close()
        click.echo(
            f"slotmgr {__version__}: systemd {features.version_string} at "
            f"{manager.address}. Commands: slotmgr --help"
        )


def _limit_options(func: F) -> F:
    """Add one option per LIMIT_OPTIONS entry: the table drives parsing and help.
    `multiple`, so that an option given twice is refused rather than the last
    one silently winning."""
    for opt in reversed(LIMIT_OPTIONS):
        metavar = "DEVICE RATE" if opt.nargs == 2 else opt.spec.kind.value
        func = click.option(
            opt.flag,
            opt.dest,
            nargs=opt.nargs,
            multiple=True,
            metavar=metavar,
            help=f"{opt.help} [{opt.key}=]",
        )(func)
    return func


def _check_job_id(value: str | None) -> str:
    if value is None:
        return new_job_id()
    if not is_job_id(value):
        raise UsageError(f"invalid --job-id {value!r}: use {JOB_ID_RULE}")
    return value


# The sections of `slotmgr run --help` and of the man page, in this order
# (slotmgr.cli.help_sections). An option not named here is listed under "Other options".
RUN_OPTION_SECTIONS: dict[str, str] = {
    "--unit": "Job",
    "--job-id": "Job",
    "--slice": "Job",
    "--scope": "Job",
    "--slot": "Job",
    "--wait-for-slot": "Job",
    "--batch-id": "Job",
    **{opt.flag: "Limits (systemd's syntax)" for opt in LIMIT_OPTIONS},
    "--property": "Limits (systemd's syntax)",
    "--inherit-limits": "Limits (systemd's syntax)",
    "--no-private-tmp": "Isolation (on by default)",
    "--no-private-pids": "Isolation (on by default)",
    "--no-private-ipc": "Isolation (on by default)",
    "--no-private-shm": "Isolation (on by default)",
    "--no-scratch": "Isolation (on by default)",
    "--keep-scratch": "Isolation (on by default)",
    "--no-landlock": "Isolation (on by default)",
    "--private-network": "Isolation (on by default)",
    "--uid": "Identity and environment",
    "--gid": "Identity and environment",
    "--setenv": "Identity and environment",
    "--pass-env": "Identity and environment",
    "--working-directory": "Identity and environment",
    "--output": "Output",
    "--error": "Output",
    "--append": "Output",
    "--verbose": "Output",
    "--quiet": "Output",
    "--json": "Accounting",
}


@cli.command(
    cls=SectionedCommand,
    sections=RUN_OPTION_SECTIONS,
    context_settings={"ignore_unknown_options": False},
)
@click.option(
    "--unit", "unit", metavar="NAME", help=f"Unit name (default {UNIT_PREFIX}<jobid>.service)."
)
@click.option("--job-id", metavar="ID", help="Job id (default: a random one).")
@click.option(
    "--slice",
    "slice_",
    metavar="SLICE",
    default=None,
    help=f"Slice to run the job in (default {DEFAULT_SLICE}).",
)
@click.option(
    "--scope", is_flag=True, help="Run as a transient scope: slotmgr forks the job itself."
)
@click.option("--slot", metavar="N", help="Run the job in batch slot N (see: slotmgr slots).")
@click.option(
    "--wait-for-slot",
    "wait_for_slot",
    metavar="DURATION",
    help="If the slot is full, wait up to DURATION (e.g. 30s, 2h, infinity) for a place "
    "instead of exiting 75 at once; 75 when it passes.",
)
@click.option(
    "--batch-id",
    metavar="ID",
    help="The batch system's id of the job, for its record and log (default in Slurm: "
    "SLURM_JOB_ID.SLURM_STEP_ID.SLURM_PROCID).",
)
@click.option(
    "--as-step-task",
    is_flag=True,
    hidden=True,
    help="batch-run's, inside a Slurm step: run COMMAND as a task of the step's one "
    "unit on this node (slotmgr.job.step), which --job-id names.",
)
@_limit_options
@click.option(
    "--inherit-limits",
    is_flag=True,
    help="Apply the limits of slotmgr's own cgroup (a batch job's memory, CPUs, tasks) "
    "to the job; the tighter value where an option also sets one.",
)
@click.option(
    "-p",
    "--property",
    "properties",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other supported unit property, e.g. -p MemoryLow=1G.",
)
@click.option(
    "-E",
    "--setenv",
    "setenv",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="Set an environment variable for the job; NAME alone passes the caller's.",
)
@click.option(
    "--pass-env",
    "pass_env",
    multiple=True,
    metavar="PATTERN",
    help="Pass the caller's variables whose names match PATTERN, e.g. 'SLURM_*' ('*': all).",
)
@click.option(
    "--working-directory",
    metavar="DIR",
    help="The job's working directory (default: the current one); the command is found from it.",
)
@click.option("--uid", metavar="USER", help="Run the job as this user (slotmgr must be root).")
@click.option("--gid", metavar="GROUP", help="Run the job with this group.")
@click.option("--no-private-tmp", is_flag=True, help="Share /tmp and /var/tmp with the host.")
@click.option("--no-private-pids", is_flag=True, help="Let the job see every process on the node.")
@click.option(
    "--no-private-ipc", is_flag=True, help="Share SysV IPC and POSIX message queues with the node."
)
@click.option("--no-private-shm", is_flag=True, help="Share /dev/shm with the node.")
@click.option("--no-scratch", is_flag=True, help="No per-job scratch directory ($SLOTMGR_SCRATCH).")
@click.option("--keep-scratch", is_flag=True, help="Keep the scratch directory after the job.")
@click.option(
    "--no-landlock",
    is_flag=True,
    help="Do not scope abstract unix sockets and signals to the job (Landlock, Linux 6.12+).",
)
@click.option(
    "--private-network",
    is_flag=True,
    help="Give the job its own network (loopback only): its own abstract sockets and localhost.",
)
@click.option(
    "--json",
    "json_path",
    metavar="FILE",
    help="Write the job's record as JSON to FILE ('-' for stdout).",
)
@click.option(
    "-o",
    "--output",
    "output",
    metavar="FILE",
    help="Write the job's stdout (and its stderr, unless --error) to FILE, relative to the "
    "working directory; %j in FILE is the job id, %u the user name, %% a %.",
)
@click.option("-e", "--error", "error", metavar="FILE", help="Write the job's stderr to FILE.")
@click.option("--append", is_flag=True, help="Append to --output/--error files, do not replace.")
@click.option("-q", "--quiet", is_flag=True, help="Print neither the start line nor the summary.")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Print the start line (job id and unit) even when stderr is not a terminal.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def run(
    obj: Context,
    /,
    unit: str | None,
    job_id: str | None,
    slice_: str | None,
    scope: bool,
    slot: str | None,
    wait_for_slot: str | None,
    batch_id: str | None,
    as_step_task: bool,
    inherit_limits: bool,
    properties: tuple[str, ...],
    setenv: tuple[str, ...],
    pass_env: tuple[str, ...],
    working_directory: str | None,
    uid: str | None,
    gid: str | None,
    no_private_tmp: bool,
    no_private_pids: bool,
    no_private_ipc: bool,
    no_private_shm: bool,
    no_scratch: bool,
    keep_scratch: bool,
    no_landlock: bool,
    private_network: bool,
    json_path: str | None,
    output: str | None,
    error: str | None,
    append: bool,
    quiet: bool,
    verbose: bool,
    command: tuple[str, ...],
    **limit_values: Any,
) -> None:
    """Run COMMAND as a job and exit with its exit status.

    Put -- before COMMAND when it has options of its own.
    """
    from slotmgr.job.spec import complete_unit_name, expand_output_name
    from slotmgr.systemd.messages import check_unit_name

    if scope and (uid is not None or gid is not None):
        raise UsageError(
            "--scope runs the job as the caller: it takes no --uid/--gid",
            hint="leave out --scope: a service job runs as --uid through systemd's User=",
        )
    job = _check_job_id(job_id)
    try:
        unit = (
            unit_name_for(job, scope=scope)
            if unit is None
            else complete_unit_name(unit, scope=scope)
        )
        check_unit_name(unit)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if slice_ is not None:
        if not slice_.endswith(".slice"):
            raise UsageError(f"invalid --slice {slice_!r}: a slice name ends in .slice")
        try:
            check_unit_name(slice_)
        except ValueError:
            raise UsageError(
                f"invalid --slice {slice_!r}: use letters, digits and ':_.-@\\', ending in .slice"
            ) from None
    if working_directory is not None:
        try:
            check_text(working_directory, what="--working-directory")
        except ValueError as exc:
            raise UsageError(f"invalid {exc}") from None
    # As srun and condor_run: the job starts where slotmgr was called.
    try:
        workdir = os.path.abspath(working_directory or os.getcwd())
    except FileNotFoundError:
        raise UsageError(
            "the current directory no longer exists", hint="--working-directory DIR"
        ) from None

    given: list[Given] = []
    for opt in LIMIT_OPTIONS:
        for raw in limit_values.get(opt.dest) or ():
            value = tuple(raw) if opt.nargs == 2 else raw
            text = " ".join(value) if isinstance(value, tuple) else value
            given.append(Given(opt.key, value, f"{opt.flag} {text}"))
    try:
        for text in properties:
            key, raw = parse_assignment(text)
            given.append(Given(key, raw, f"-p {text}"))
        # Checked now, before any bus is opened; versions are checked again
        # against the running systemd.
        limits = job_limits(given)
    except PropertyError as exc:
        raise UsageError(str(exc)) from None
    if inherit_limits:
        from slotmgr.job import inherit

        limits = inherit.merged(limits, inherit.inherited_limits())
    environment = job_environment(setenv, pass_env, os.environ)
    batch = batch_id_from(os.environ) if batch_id is None else check_batch_id(batch_id)
    user, group = request.check_user(uid, gid)
    if not obj.user and os.geteuid() != 0:
        raise PermissionDenied(
            "only root may run jobs on the system manager",
            hint="'slotmgr --user run ...' runs one under your own user manager; "
            "else ask the node's admin, or submit it through the batch system",
        )
    if user is None and not obj.user:
        user = pwd.getpwuid(os.geteuid()).pw_name  # root's own job says User=root
    if scope and private_network:
        raise UsageError(
            "--private-network needs a service job: a scope's processes are slotmgr's own "
            "children (drop --scope)"
        )
    if keep_scratch and no_scratch:
        raise UsageError("--keep-scratch and --no-scratch exclude each other")
    init = request.init_choice(
        command,
        no_private_pids=no_private_pids,
        scope=scope,
        landlock=request.landlock_choice(no_landlock, no_private_pids),
    )
    slot_def = None
    admission = None
    if wait_for_slot is not None and slot is None:
        raise UsageError("--wait-for-slot needs --slot: only a slot can be full")
    if slot is not None:
        from slotmgr.node import admission as slot_admission
        from slotmgr.node import slots

        if slice_ is not None:
            raise UsageError("--slot and --slice exclude each other: a slot runs in its own slice")
        slot_def = slots.require_slot(slot)
        slots.check_job_fits(slot_def, limits)
        slice_ = slot_def.slice
        admission = slot_admission.Admission.for_job(
            slot_def, user_manager=obj.user, wait_usec=request.check_wait(wait_for_slot)
        )

    owner = user or pwd.getpwuid(os.geteuid()).pw_name
    outputs: list[str | None] = []
    for template in (output, error):
        try:
            name = (
                None if template is None else expand_output_name(template, job_id=job, user=owner)
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        outputs.append(None if name is None else os.path.join(workdir, name))
    if append and output is None and error is None:
        raise UsageError("--append needs --output or --error")

    # Only now: a refused command line costs no more than its checks.
    from slotmgr.history import store as history
    from slotmgr.job import runner

    spec = JobSpec(
        command=command,
        job_id=job,
        unit=unit,
        slice=slice_ or DEFAULT_SLICE,
        slot=None if slot_def is None else slot_def.name,
        limits=tuple(limits),
        environment=environment,
        batch_id=batch,
        working_directory=workdir,
        user=user,
        group=group,
        private_tmp=not no_private_tmp,
        private_pids=not no_private_pids,
        # A user manager's units get no IPC namespace nor /dev/shm mount: the
        # job failed to start with them in the 257 guest (the summary says so).
        private_ipc=not no_private_ipc and not obj.user,
        private_shm=not no_private_shm and not obj.user,
        private_network=private_network,
        landlock_scope=init.landlock_scope,
        landlock_missing=init.landlock_missing,
        catatonit=init.catatonit,
        init_why=init.init_why,
        scratch_base=None if no_scratch else request.scratch_base(scope=scope, user_mode=obj.user),
        keep_scratch=keep_scratch,
        scope=scope,
        history_db=history.default_db_path(obj.user),
        user_manager=obj.user,
    )
    files = runner.OutputFiles(
        stdout=outputs[0],
        stderr=outputs[1] if outputs[1] is not None else outputs[0],
        append=append,
        json=json_path,
    )
    if as_step_task:
        from slotmgr.job import step

        if scope or obj.user or slot is not None or json_path is not None or job_id is None:
            raise UsageError(
                "--as-step-task is batch-run's: a service on the system manager, with a "
                "--job-id and no --scope, --user, --slot or --json (the step's record is "
                "its unit's: slotmgr history --batch-id JOB.STEP)"
            )
        sys.exit(step.run_task(spec, files=files))
    announce = not quiet and (verbose or sys.stderr.isatty())
    code = runner.run(spec, quiet=quiet, announce=announce, files=files, admission=admission)
    sys.exit(code)


def _report(message: str, code: int) -> None:
    # shown(): a value quoted in the message cannot break it into two lines.
    click.echo(f"slotmgr: error: {shown(message)}", err=True)
    sys.exit(code)


def _check_utf8(args: Sequence[str]) -> None:
    """Refuse an argument that is not UTF-8 (Python hands its bytes over as
    surrogate escapes): D-Bus strings must be UTF-8, so it could reach systemd
    neither as a command, nor a value, nor a name."""
    for position, arg in enumerate(args, start=1):
        try:
            raw = arg.encode("utf-8", "surrogateescape")
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"argument {position} ({raw.decode('utf-8', 'backslashreplace')}) is not valid "
                f"UTF-8 (byte 0x{raw[exc.start]:02x}): systemd takes only UTF-8 text"
            ) from None
        except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
            raise UsageError(f"argument {position} ({shown(arg)}) is not valid UTF-8") from None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the click group, turning every failure into one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args[: args.index("--")] if "--" in args else "--debug" in args
    try:
        _check_utf8(args)
        # standalone_mode=False: click returns --help/--version's status
        # instead of exiting, and lets errors reach the handlers below.
        status = cli.main(args=args, prog_name="slotmgr", standalone_mode=False)
        sys.exit(status if isinstance(status, int) else 0)
    except click.exceptions.Abort:
        _report("aborted", 130)
    except click.UsageError as exc:
        _report(exc.format_message().splitlines()[0], ExitCode.USAGE)
    except click.ClickException as exc:
        _report(exc.format_message(), ExitCode.USAGE)
    except SlotmgrError as exc:
        if debug:
            _print_traceback()
        _report(exc.one_line(), exc.exit_code)
    except KeyboardInterrupt:
        _report("interrupted", 130)
    except Exception as exc:  # a bug: say so briefly, unless asked for detail
        if debug:
            _print_traceback()
        _report(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            ExitCode.INTERNAL,
        )
