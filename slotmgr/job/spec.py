"""What a job is, and the unit properties that make it: pure functions.

`JobSpec` holds everything `slotmgr run` was asked for; `unit_properties`
turns it into StartTransientUnit's property list for the running systemd.
No I/O here beyond looking at paths, so every choice is unit-tested.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slotmgr.naming import (
    BATCH_ID_FIELD,
    description_for,
    launcher_unit_for,
    marker_field,
)
from slotmgr.naming import unit_name_for as unit_name_for  # where callers have found it
from slotmgr.systemd.features import Features
from slotmgr.systemd.properties import ACCOUNTING_KEYS, build_property
from slotmgr.systemd.wire import Property

DEFAULT_SLICE = "slotmgr.slice"
ROOT = "root"
# systemd's unit types: a --unit NAME ending in one of these keeps it (and must
# be the job's own type); any other name gets the job's type added, as systemd-run does.
UNIT_TYPES = frozenset(
    [
        "service",
        "socket",
        "target",
        "device",
        "mount",
        "automount",
        "swap",
        "timer",
        "path",
        "slice",
        "scope",
    ]
)
ENV_PROGRAM = "/usr/bin/env"
# The compiled init (slotmgr.job.init finds it) and, on systemd < 257, util-linux's
# tools that make its namespace and empty a user job's capabilities before the job.
CATATONIT_PATHS = ("/usr/libexec/catatonit/catatonit", "/usr/bin/catatonit")
UNSHARE_INIT = ["/usr/bin/unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--"]
SETPRIV_NO_CAPS = ["/usr/bin/setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--"]
# In front of the job's own command under catatonit: default dispositions and an
# empty signal mask (catatonit hands on the mask it was started with, plus TSTP,
# TTIN and TTOU blocked), and env's 126/127 for a command it cannot run.
JOB_ENV_UNDER_CATATONIT = [ENV_PROGRAM, "--default-signal", "--"]
# Why a job's init is pidshim and not catatonit (the summary's "init:" line).
INIT_WHY_LANDLOCK = "Landlock scope"
INIT_WHY_SCOPE = "scope"
# Files live units name by path stay at the package's top, so a unit started
# before an upgrade still finds them after it.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIDSHIM = os.path.join(PACKAGE_DIR, "pidshim.py")
CAP_SYS_ADMIN = 21
DEFAULT_STOP_TIMEOUT_USEC = 90_000_000
RM_PROGRAM = "/usr/bin/rm"
HOST_ROOT_VIA_PID1 = "/proc/1/root"
SCRATCH_VARIABLE = "SLOTMGR_SCRATCH"
# tmpfs options: /dev/shm as the host's (world-writable, sticky); the scratch
# base an empty stand-in for the host's, writable by root only.
SHM_MOUNT_OPTIONS = "mode=1777,nosuid,nodev"
SCRATCH_BASE_MOUNT_OPTIONS = "mode=0755,nosuid,nodev"


@dataclass(frozen=True)
class JobSpec:
    command: tuple[str, ...]
    job_id: str
    unit: str
    slice: str = DEFAULT_SLICE
    slot: str | None = None
    limits: tuple[tuple[str, str | tuple[str, ...]], ...] = ()  # (unit key, raw value)
    environment: tuple[str, ...] = ()  # NAME=VALUE
    working_directory: str | None = None
    user: str | None = None
    group: str | None = None
    private_tmp: bool = True
    private_pids: bool = True
    private_ipc: bool = True  # SysV IPC and POSIX message queues of the job's own
    private_shm: bool = True  # a /dev/shm of the job's own
    private_network: bool = False  # loopback only: abstract sockets and localhost the job's own
    landlock_scope: bool = False  # the init scopes abstract sockets and signals (Landlock ABI 6)
    landlock_missing: str = ""  # why not, when it is not: for the summary
    catatonit: str | None = None  # the init is catatonit, at this path (else pidshim)
    init_why: str = ""  # why pidshim, when no derived reason says it (jobinit.choose_init)
    scratch_base: str | None = None  # a scratch directory is wanted, in this base
    scratch_dir: str | None = None  # and was made here (runner, by scratch.make_scratch_dir)
    keep_scratch: bool = False
    scope: bool = False
    history_db: str = ""
    user_manager: bool = False  # the job runs under the caller's user manager (--user)
    batch_id: str | None = None  # the batch system's id of the job (Slurm job.step.task ...)
    # The PID of the launcher the job is bound to (slotmgr.job.binding), for
    # people to read; None: not bound (a scope, whose processes are the launcher's own).
    launcher: int | None = None
    # This run's own key in the history: unlike the job id, never reused.
    run_id: str = field(default_factory=lambda: new_run_id())
    python: str = field(default_factory=lambda: sys.executable)

    @property
    def description(self) -> str:
        text = shlex.join(self.command)
        if len(text) > 200:
            text = text[:197] + "..."
        return description_for(self.job_id, text)


def new_job_id() -> str:
    """Short, unique enough on one node, and safe in a unit name."""
    # os.urandom, not secrets: the same bytes, without secrets' import of
    # hmac and hashlib in a process that every job starts.
    return os.urandom(5).hex()


def new_run_id() -> str:
    """128 random bits: no two runs share one, whatever their job ids."""
    return os.urandom(16).hex()


def uses_catatonit(spec: JobSpec) -> bool:
    """catatonit is the job's init: a service (a scope's init is the shim,
    forked by the launcher) with a PID namespace, where it was chosen."""
    return spec.catatonit is not None and spec.private_pids and not spec.scope


def needs_ambient_sys_admin(spec: JobSpec, features: Features) -> bool:
    """systemd < 257 makes no PID namespace: the init's unshare and /proc
    mount need CAP_SYS_ADMIN, which a user's job gets as an ambient capability."""
    return (
        spec.private_pids
        and not spec.scope
        and not features.private_pids
        and spec.user not in (None, ROOT)
    )


def shim_argv(spec: JobSpec, features: Features) -> list[str]:
    """The PID-namespace init in front of the command, if isolation is on.

    On systemd >= 257 systemd makes the namespace (PrivatePIDs=yes) and the
    init is its PID 1; on older systemd, and in a scope (which systemd does
    not exec), the init's namespace is made in front of it: by pidshim
    itself (--unshare), or for catatonit by util-linux's unshare (exec_argv
    then empties a user job's capabilities with setpriv, after catatonit).
    """
    if not spec.private_pids:
        return []
    if uses_catatonit(spec):
        assert spec.catatonit is not None
        catatonit = [spec.catatonit, "--"]
        return catatonit if features.private_pids else [*UNSHARE_INIT, *catatonit]
    argv = [spec.python, "-I", "-S", PIDSHIM]
    if spec.scope or not features.private_pids:
        argv.append("--unshare")
    if spec.scope:  # systemd execs nothing in a scope: the shim makes what it can
        argv += [
            flag
            for flag, wanted in (
                ("--private-tmp", spec.private_tmp),
                ("--private-ipc", spec.private_ipc),
                ("--private-shm", spec.private_shm),
            )
            if wanted
        ]
    if spec.landlock_scope:
        argv.append("--landlock-scope")
    if not spec.scope:
        argv.append("--started-blocked")  # exec_argv blocks the signals to match
    return [*argv, "--"]


def exec_argv(spec: JobSpec, features: Features) -> list[str]:
    """The full command line the unit runs.

    The job's environment goes on an env(1) in front of the job's own
    command, after the init: never into the unit's Environment=, which would
    also reach the stop hook (root), nor in front of the init, which on 252
    holds CAP_SYS_ADMIN (pidshim until it forks the job, unshare and catatonit
    while it runs): a job must choose neither
    root's nor a capable process's LD_PRELOAD. The init passes its own
    environment on, so the inner env(1) runs without capabilities and sets
    the job's variables for its exec alone.

    Signals sent while the init starts: the kernel discards a signal of
    default disposition sent to a PID-namespace init, so a stop then would
    be lost. pidshim (an interpreter, milliseconds to start) is started by an
    outer env(1) with every signal blocked (shim_argv's --started-blocked);
    it unblocks them for the job. catatonit blocks every signal as its first
    act and is started without: an outer env(1) would only move that moment
    to its own start on 257, and on 252 it would make unshare's whole start a
    time when a SIGTERM stays pending in unshare, never reaching the
    namespace forked after it (seen in the test bed; README: the start-up
    window). A scope's processes are the launcher's own children, and it
    stops them.
    """
    shim = shim_argv(spec, features)
    argv: list[str] = []
    catatonit = uses_catatonit(spec)
    if "--started-blocked" in shim:
        argv += [ENV_PROGRAM, "--block-signal"]
    argv += shim
    # The scratch variable last: the job's own -E cannot point it elsewhere.
    environment = [*spec.environment]
    if spec.scratch_dir is not None:
        environment.append(f"{SCRATCH_VARIABLE}={spec.scratch_dir}")
    if catatonit:
        # setpriv after catatonit, not before: catatonit must be the
        # namespace's PID 1 from unshare's exec on, as each exec in between
        # is a time a stop would be lost (a user's job stopped right after it
        # started waited for the stop timeout in the 252 guest). So catatonit,
        # like unshare, keeps the capability; the job cannot ptrace nor read a
        # process that holds capabilities it lacks, and gets none itself.
        if needs_ambient_sys_admin(spec, features):
            argv += SETPRIV_NO_CAPS
        argv += [*JOB_ENV_UNDER_CATATONIT, *environment]
    elif environment or spec.command[:1] == (ENV_PROGRAM,):
        # "--": the end of env's options, as a mark of slotmgr's own env too.
        # Also in front of a command that is env itself, so that
        # command_from_exec_argv takes exactly one env away.
        argv += [ENV_PROGRAM, "--", *environment]
    return argv + list(spec.command)


def _split_env(rest: list[str]) -> tuple[list[str], list[str]]:
    """`env [OPTIONS] [--] [NAME=VALUE...] CMD` -> (CMD, the assignments)."""
    rest = rest[1:]
    while rest and rest[0].startswith("-"):
        option, rest = rest[0], rest[1:]
        if option == "--":
            break
    assignments: list[str] = []
    while rest and "=" in rest[0] and rest[0][0] != "/":
        assignments.append(rest[0])
        rest = rest[1:]
    return rest, assignments


@dataclass(frozen=True)
class ExecLine:
    """A unit's or a process's command line, read back (parse_exec_argv)."""

    init: str  # "catatonit", "pidshim", or "" (none)
    init_flags: tuple[str, ...]  # pidshim's options
    environment: tuple[str, ...]  # the job's own NAME=VALUE (and slotmgr's scratch)
    command: tuple[str, ...]  # the job's own command


def _is_pidshim(argv: Sequence[str]) -> bool:
    return len(argv) >= 4 and list(argv[1:3]) == ["-I", "-S"] and argv[3].endswith("pidshim.py")


def _without_setpriv(rest: list[str]) -> list[str]:
    return rest[len(SETPRIV_NO_CAPS) :] if rest[: len(SETPRIV_NO_CAPS)] == SETPRIV_NO_CAPS else rest


def _is_catatonit(argv: Sequence[str]) -> bool:
    # Followed by the job's env(1) (after setpriv), as exec_argv always writes it.
    return (
        len(argv) >= 2
        and argv[0] in CATATONIT_PATHS
        and argv[1] == "--"
        and _without_setpriv(list(argv[2:]))[:2] == JOB_ENV_UNDER_CATATONIT[:2]
    )


def _strip_catatonit_prefix(rest: list[str]) -> list[str] | None:
    """[unshare...] catatonit -- [setpriv...] REST -> REST; None if not that."""
    if rest[: len(UNSHARE_INIT)] == UNSHARE_INIT:
        rest = rest[len(UNSHARE_INIT) :]
    return _without_setpriv(rest[2:]) if _is_catatonit(rest) else None


def parse_exec_argv(argv: Sequence[str]) -> ExecLine:
    """The inverse of exec_argv, for every form it writes (and the earlier
    layout's `env --block-signal NAME=VALUE... shim`)."""
    rest = list(argv)
    environment: list[str] = []
    if rest and rest[0] == ENV_PROGRAM:
        after, assignments = _split_env(rest)
        if not (_is_pidshim(after) or _strip_catatonit_prefix(after) is not None):
            return ExecLine("", (), tuple(assignments), tuple(after))  # the job's own env
        rest, environment = after, assignments
    init, flags = "", tuple[str, ...]()
    if _is_pidshim(rest):
        end = rest.index("--") if "--" in rest else 4
        init, flags, rest = "pidshim", tuple(rest[4:end]), rest[end + 1 :]
    elif (inner := _strip_catatonit_prefix(rest)) is not None:
        init, rest = "catatonit", inner
    if init and rest and rest[0] == ENV_PROGRAM:
        rest, environment = _split_env(rest)
    return ExecLine(init, flags, tuple(environment), tuple(rest))


def is_init_argv(argv: Sequence[str]) -> bool:
    """Is this process slotmgr's PID-namespace init (either one), or a part of
    it (252's unshare outside the namespace, pidshim's outer half)? pidshim
    only at this installation's path: a process of the job's may be named so."""
    init = parse_exec_argv(argv).init
    return init == "catatonit" or (init == "pidshim" and PIDSHIM in argv[3:4])


def command_from_exec_argv(argv: Sequence[str]) -> list[str]:
    """The inverse of exec_argv: the job's own command, wrappers removed
    (the outer env, the init, the env that sets the job's variables)."""
    return list(parse_exec_argv(argv).command)


def command_of_unit(props: Mapping[str, Any]) -> list[str]:
    """The job's own command from its unit's properties (GetAll). A unit
    started without no-env-expand (systemd < 257, see exec_properties) holds
    its arguments with every "$" doubled: undo that."""
    for entry in props.get("ExecStartEx") or []:
        command = command_from_exec_argv(entry[1])
        if "no-env-expand" in entry[2]:
            return command
        return [arg.replace("$$", "$") for arg in command]
    exec_start = props.get("ExecStart") or []
    return command_from_exec_argv(exec_start[0][1]) if exec_start else []


def stop_hook_argv(spec: JobSpec) -> list[str]:
    """The ExecStopPost= hook that takes the job's record (slotmgr.history.hook):
    a shell script, no interpreter. It runs 'privileged' ('+': as root, in
    the node's PID namespace; in 257's guest still in the job's mount
    namespace) and 'ignore-failure' ('-': a hook failure does not fail the job)."""
    from slotmgr.history.hook import hook_argv
    from slotmgr.history.store import spool_dir

    return hook_argv(
        spool_dir(spec.history_db),
        spec.run_id,
        spec.unit,
        user_manager=spec.user_manager,
        launcher_unit=None if spec.launcher is None else launcher_unit_for(spec.run_id),
    )


def scratch_removal_argv(spec: JobSpec) -> list[str] | None:
    """The ExecStopPost= that removes the job's scratch directory: rm, not
    an interpreter. --one-file-system: never into a mount inside it. The hook
    runs in the job's mount namespace (seen on 257 with '+' as on 252 with
    PermissionsStartOnly=), where the scratch base is a tmpfs holding only a
    bind mount of the job's directory, which rmdir cannot remove (EBUSY); but
    in the node's PID namespace: so it reaches the node's directory through
    PID 1's root."""
    if spec.scratch_dir is None or spec.keep_scratch:
        return None
    return [RM_PROGRAM, "-rf", "--one-file-system", "--", HOST_ROOT_VIA_PID1 + spec.scratch_dir]


def _exec_command(argv: Sequence[str], *flags: str) -> tuple[str, list[str], list[str]]:
    """One entry of ExecStartEx=/ExecStopPostEx= (a(sasas)): path, argv, flags."""
    return (argv[0], list(argv), list(flags))


def exec_properties(spec: JobSpec, features: Features) -> list[Property]:
    """The job's command and its stop hook, in the form that survives a
    daemon-reload on this systemd.

    From 257: ExecStartEx=/ExecStopPostEx= with flags. Before (252), those
    are lost at a daemon-reload (see Features.exec_ex_survives_reload), so the
    plain ExecStart=/ExecStopPost= are used, and the flags are had another
    way: "$$" is systemd's own escape of a literal "$" (no-env-expand), and
    PermissionsStartOnly= runs the hook as root ('privileged'; like '+'
    it stays in the job's mount namespace, which the hook does not mind).
    """
    job = exec_argv(spec, features)
    # The stop hook first: it reads the cgroup before anything else runs there,
    # and a large scratch directory's removal must not cost the record (both
    # share the stop timeout). So the launcher may return while rm still runs.
    removal = scratch_removal_argv(spec)
    stop_post = [stop_hook_argv(spec)] + ([] if removal is None else [removal])
    if features.exec_ex_survives_reload:
        # no-env-expand: the command reaches the job as given, "$HOME" included.
        return [
            Property("ExecStartEx", "a(sasas)", [_exec_command(job, "no-env-expand")]),
            Property(
                "ExecStopPostEx",
                "a(sasas)",
                [
                    _exec_command(argv, "privileged", "ignore-failure", "no-env-expand")
                    for argv in stop_post
                ],
            ),
        ]

    def escaped(argv: Sequence[str]) -> list[str]:
        return [arg.replace("$", "$$") for arg in argv]

    return [
        Property("ExecStart", "a(sasb)", [(job[0], escaped(job), False)]),
        Property("ExecStopPost", "a(sasb)", [(argv[0], escaped(argv), True) for argv in stop_post]),
        Property("PermissionsStartOnly", "b", True),
    ]


def isolation_properties(spec: JobSpec) -> list[Property]:
    """The namespaces and mounts of a service job (a scope's are the shim's)."""
    props: list[Property] = []
    if spec.private_tmp:
        props.append(Property("PrivateTmp", "b", True))
    if spec.private_ipc:
        props.append(Property("PrivateIPC", "b", True))
    if spec.private_network:
        props.append(Property("PrivateNetwork", "b", True))
    tmpfs: list[tuple[str, str]] = []
    if spec.private_shm:
        tmpfs.append(("/dev/shm", SHM_MOUNT_OPTIONS))
    if spec.scratch_dir is not None:
        # Every other job's scratch hidden under an empty tmpfs; the job's own
        # bound back at the same path (systemd mounts the deeper path last).
        tmpfs.append((os.path.dirname(spec.scratch_dir), SCRATCH_BASE_MOUNT_OPTIONS))
        bind = (spec.scratch_dir, spec.scratch_dir, False, 0)  # not recursive, must exist
        props.append(Property("BindPaths", "a(ssbt)", [bind]))
    if tmpfs:
        props.append(Property("TemporaryFileSystem", "a(ss)", tmpfs))
    return props


def unit_properties(
    spec: JobSpec,
    features: Features,
    *,
    stdio_fds: Sequence[int] = (),
    scope_pids: Sequence[int] = (),
) -> list[Property]:
    """StartTransientUnit's property list for this job on this systemd."""
    props = [
        Property("Description", "s", spec.description),
        Property("Slice", "s", spec.slice),
        Property("CollectMode", "s", "inactive-or-failed"),
    ]
    for key in ACCOUNTING_KEYS:
        props += build_property(key, "yes", features)
    for key, raw in spec.limits:
        props += build_property(key, raw, features)
    if not spec.scope and "TimeoutStopSec" not in dict(spec.limits):
        # The stop hook runs in the stop phase: a node's short DefaultTimeoutStopSec=
        # must not cut it off and lose the record. systemd's stock 90 s, unless asked.
        props.append(Property("TimeoutStopUSec", "t", DEFAULT_STOP_TIMEOUT_USEC))
    if spec.user_manager:
        # Within the user's own manager, whose whole subtree the user owns
        # anyway: delegated, so that `slotmgr --user adopt` may use
        # AttachProcessesToUnit (systemd allows it on delegated units only).
        # Never for the system manager: the job's user would own the unit's
        # cgroup, and freezing a sub-cgroup of it hangs PID 1 (issue 9, 3);
        # root moves adopted processes itself (adopt.move_into_cgroup).
        props.append(Property("Delegate", "b", True))
    if spec.scope:
        props.append(Property("PIDs", "au", list(scope_pids)))
        return props

    props.append(Property("Type", "s", "exec"))
    # The job's marker (slotmgr.naming); a scope's is its Description.
    fields = [marker_field(spec.job_id)]
    if spec.batch_id is not None:  # `journalctl SLOTMGR_BATCH_ID=...`, as the marker
        fields.append(f"{BATCH_ID_FIELD}={spec.batch_id}".encode())
    props.append(Property("LogExtraFields", "aay", fields))
    if spec.launcher is not None:
        # Started with its launcher's watcher, stopped when it stops (slotmgr.job.binding).
        watcher = launcher_unit_for(spec.run_id)
        props += [Property("BindsTo", "as", [watcher]), Property("After", "as", [watcher])]
    props += exec_properties(spec, features)
    props += isolation_properties(spec)
    if spec.private_pids and features.private_pids:
        props += build_property("PrivatePIDs", "yes", features)
    elif spec.private_pids:
        if not uses_catatonit(spec):
            # The shim outside the namespace forwards SIGTERM to the job once;
            # control-group would also signal every process in it directly.
            # unshare(1) forwards nothing (it blocks SIGTERM while it waits):
            # catatonit's job keeps control-group, as on 257.
            props.append(Property("KillMode", "s", "mixed"))
        if needs_ambient_sys_admin(spec, features):
            # For the namespace and /proc: pidshim drops every capability
            # before the job is forked (pidshim.drop_capabilities); under
            # catatonit setpriv empties them in front of the job's own env
            # (SETPRIV_NO_CAPS), unshare and catatonit keep them.
            props.append(Property("AmbientCapabilities", "t", 1 << CAP_SYS_ADMIN))
    if spec.working_directory:
        # "-": should the job remove its directory, the root stop hook, which
        # systemd starts in it too, still runs (and the record is kept).
        props.append(Property("WorkingDirectory", "s", f"-{spec.working_directory}"))
    if spec.user:  # always on the system manager (cli): root's own jobs say User=root
        props.append(Property("User", "s", spec.user))
    if spec.group:
        props.append(Property("Group", "s", spec.group))
    if stdio_fds:
        props += stdio_properties(stdio_fds)
    return props


def stdio_properties(stdio_fds: Sequence[int]) -> list[Property]:
    """The service's stdin, stdout and stderr: these descriptors of ours
    (the caller's own, or --output/--error files), passed over the bus."""
    stdin_fd, stdout_fd, stderr_fd = stdio_fds
    return [
        Property("StandardInputFileDescriptor", "h", stdin_fd),
        Property("StandardOutputFileDescriptor", "h", stdout_fd),
        Property("StandardErrorFileDescriptor", "h", stderr_fd),
    ]


def check_command(
    command: Sequence[str], *, path: str | None = None, cwd: str | None = None
) -> str:
    """Resolve the executable the way execvp will in the job's working
    directory `cwd`, so a typo is reported before a unit is made. Checks
    with the effective ids (see asuser.acting_as). Returns the resolved
    path; raises FileNotFoundError or PermissionError."""
    name = command[0]
    base = cwd if cwd is not None else os.getcwd()
    if "/" in name:
        candidate = os.path.normpath(os.path.join(base, name))
        if not os.path.exists(candidate):
            raise FileNotFoundError(name)
        if os.path.isdir(candidate) or not os.access(candidate, os.X_OK, effective_ids=True):
            raise PermissionError(name)
        return candidate
    search = path if path is not None else os.environ.get("PATH", os.defpath)
    found_unexecutable = False
    for directory in search.split(os.pathsep):
        candidate = os.path.join(base, directory or ".", name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK, effective_ids=True):
                return candidate
            found_unexecutable = True
    if found_unexecutable:
        raise PermissionError(name)
    raise FileNotFoundError(name)


def complete_unit_name(name: str, *, scope: bool) -> str:
    """--unit NAME as systemd-run takes it: the job's type is added when NAME
    ends in no unit type; a NAME of another type is refused (ValueError)."""
    wanted = "scope" if scope else "service"
    _stem, dot, suffix = name.rpartition(".")
    if not dot or suffix not in UNIT_TYPES:
        return f"{name}.{wanted}"
    if suffix != wanted:
        raise ValueError(
            f"invalid --unit {name!r}: a {wanted} job's unit name must end in .{wanted} "
            "(or give none: it is added)"
        )
    return name


# The escapes of --output/--error names, as sbatch's filename patterns.
OUTPUT_ESCAPES = {"j": "the job id", "u": "the job's user name", "%": "a literal %"}


def expand_output_name(template: str, *, job_id: str, user: str) -> str:
    """sbatch-like file name pattern -> file name; ValueError on an unknown escape."""
    values = {"j": job_id, "u": user, "%": "%"}
    parts: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char != "%":
            parts.append(char)
            i += 1
            continue
        escape = template[i + 1 : i + 2]
        if escape not in values:
            allowed = ", ".join(f"%{key} ({what})" for key, what in OUTPUT_ESCAPES.items())
            raise ValueError(
                f"invalid file name {template!r}: unknown escape %{escape or ''}: use {allowed}"
            )
        parts.append(values[escape])
        i += 2
    return "".join(parts)
