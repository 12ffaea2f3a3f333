"""What a job is, and the unit properties that make it: pure functions.

`JobSpec` holds everything `slotmgr run` was asked for; `unit_properties`
turns it into StartTransientUnit's property list for the running systemd.
No I/O here beyond looking at paths, so every choice is unit-tested.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from slotmgr.features import Features
from slotmgr.messages import Property
from slotmgr.properties import build_property

DEFAULT_SLICE = "slotmgr.slice"
UNIT_PREFIX = "slotmgr-"
ENV_PROGRAM = "/usr/bin/env"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PIDSHIM = os.path.join(PACKAGE_DIR, "pidshim.py")
RECORDER = os.path.join(PACKAGE_DIR, "recorder.py")
CAP_SYS_ADMIN = 21


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
    scope: bool = False
    history_db: str = ""
    user_manager: bool = False  # the job runs under the caller's user manager (--user)
    python: str = field(default_factory=lambda: sys.executable)

    @property
    def description(self) -> str:
        text = shlex.join(self.command)
        if len(text) > 200:
            text = text[:197] + "..."
        return f"slotmgr job {self.job_id}: {text}"


def new_job_id() -> str:
    """Short, unique enough on one node, and safe in a unit name."""
    return secrets.token_hex(5)


def unit_name_for(job_id: str, *, scope: bool = False) -> str:
    return f"{UNIT_PREFIX}{job_id}.{'scope' if scope else 'service'}"


def job_id_from_unit(unit: str) -> str:
    """slotmgr-ab12.service -> ab12; any other unit name -> the name's stem."""
    stem = unit.rsplit(".", 1)[0]
    return stem[len(UNIT_PREFIX) :] if stem.startswith(UNIT_PREFIX) else stem


def shim_argv(spec: JobSpec, features: Features) -> list[str]:
    """The PID-namespace init in front of the command, if isolation is on.

    On systemd >= 257 systemd makes the namespace (PrivatePIDs=yes) and the
    shim is its PID 1; on older systemd, and in a scope (which systemd does
    not exec), the shim makes the namespace itself (--unshare).
    """
    if not spec.private_pids:
        return []
    argv = [spec.python, "-I", "-S", PIDSHIM]
    if spec.scope or not features.private_pids:
        argv.append("--unshare")
    if spec.scope and spec.private_tmp:
        argv.append("--private-tmp")
    return [*argv, "--"]


def exec_argv(spec: JobSpec, features: Features) -> list[str]:
    """The full command line the unit runs.

    The job's environment goes on an env(1) prefix rather than into the
    unit's Environment=, because Environment= would also reach the
    recorder, which runs as root: a job must not choose root's LD_PRELOAD.
    """
    argv: list[str] = []
    if spec.environment:
        argv += [ENV_PROGRAM, *spec.environment]
    return argv + shim_argv(spec, features) + list(spec.command)


def command_from_exec_argv(argv: Sequence[str]) -> list[str]:
    """The inverse of exec_argv: the job's own command, wrappers removed."""
    rest = list(argv)
    if rest and rest[0] == ENV_PROGRAM:
        rest = rest[1:]
        while rest and "=" in rest[0] and not rest[0].startswith("/"):
            rest = rest[1:]
    if len(rest) >= 4 and rest[1:3] == ["-I", "-S"] and rest[3].endswith("pidshim.py"):
        rest = rest[rest.index("--") + 1 :] if "--" in rest else rest[4:]
    return rest


def recorder_argv(spec: JobSpec) -> list[str]:
    """The ExecStopPost= hook. It runs 'privileged' ('+': as root, outside
    the job's namespaces) and 'ignore-failure' ('-': a recorder failure does
    not fail the job); -I keeps PYTHON* variables out of it."""
    argv = [
        spec.python,
        "-I",
        RECORDER,
        "--job-id",
        spec.job_id,
        "--unit",
        spec.unit,
        "--db",
        spec.history_db,
    ]
    if spec.slot is not None:
        argv += ["--slot", spec.slot]
    if spec.user_manager:
        argv.append("--user-manager")
    return argv


def _exec_command(argv: Sequence[str], *flags: str) -> tuple[str, list[str], list[str]]:
    """One entry of ExecStartEx=/ExecStopPostEx= (a(sasas)): path, argv, flags."""
    return (argv[0], list(argv), list(flags))


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
    for key in (
        "CPUAccounting",
        "MemoryAccounting",
        "IOAccounting",
        "TasksAccounting",
        "IPAccounting",
    ):
        props.append(Property(key, "b", True))
    for key, raw in spec.limits:
        props += build_property(key, raw, features)
    if spec.scope:
        props.append(Property("PIDs", "au", list(scope_pids)))
        return props

    props.append(Property("Type", "s", "exec"))
    # no-env-expand: the command reaches the job as given, "$HOME" included.
    props.append(
        Property(
            "ExecStartEx", "a(sasas)", [_exec_command(exec_argv(spec, features), "no-env-expand")]
        )
    )
    props.append(
        Property(
            "ExecStopPostEx",
            "a(sasas)",
            [_exec_command(recorder_argv(spec), "privileged", "ignore-failure", "no-env-expand")],
        )
    )
    if spec.private_tmp:
        props.append(Property("PrivateTmp", "b", True))
    if spec.private_pids and features.private_pids:
        props += build_property("PrivatePIDs", "yes", features)
    elif spec.private_pids:
        # The shim outside the namespace forwards SIGTERM to the job once;
        # control-group would also signal every process in it directly.
        props.append(Property("KillMode", "s", "mixed"))
        if spec.user:
            # The shim's unshare and mount need CAP_SYS_ADMIN; it drops every
            # capability before the job is forked (pidshim.drop_capabilities).
            props.append(Property("AmbientCapabilities", "t", 1 << CAP_SYS_ADMIN))
    if spec.working_directory:
        props.append(Property("WorkingDirectory", "s", spec.working_directory))
    if spec.user:
        props.append(Property("User", "s", spec.user))
    if spec.group:
        props.append(Property("Group", "s", spec.group))
    if stdio_fds:
        stdin_fd, stdout_fd, stderr_fd = stdio_fds
        props += [
            Property("StandardInputFileDescriptor", "h", stdin_fd),
            Property("StandardOutputFileDescriptor", "h", stdout_fd),
            Property("StandardErrorFileDescriptor", "h", stderr_fd),
        ]
    return props


def check_command(command: Sequence[str], *, path: str | None = None) -> str:
    """Resolve the executable the way execvp will, so a typo is reported
    before a unit is made. Returns the resolved path; raises FileNotFoundError
    or PermissionError."""
    name = command[0]
    if "/" in name:
        if not os.path.exists(name):
            raise FileNotFoundError(name)
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            raise PermissionError(name)
        return name
    search = path if path is not None else os.environ.get("PATH", os.defpath)
    found_unexecutable = False
    for directory in search.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            found_unexecutable = True
    if found_unexecutable:
        raise PermissionError(name)
    raise FileNotFoundError(name)
