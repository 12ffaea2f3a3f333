"""What a job is isolated by, as its summary and `slotmgr status` say it:
from the job's spec at its start, or read back from a running unit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from slotmgr.job.spec import (
    CATATONIT_PATHS,
    INIT_WHY_LANDLOCK,
    INIT_WHY_SCOPE,
    SCRATCH_VARIABLE,
    ExecLine,
    JobSpec,
    parse_exec_argv,
    uses_catatonit,
)


def init_line(spec: JobSpec) -> str | None:
    """Which init the job got, and for pidshim why (where it is known)."""
    if not spec.private_pids:
        return None
    if uses_catatonit(spec):
        return "init: catatonit"
    why = spec.init_why or (
        INIT_WHY_LANDLOCK if spec.landlock_scope else INIT_WHY_SCOPE if spec.scope else ""
    )
    return f"init: pidshim ({why})" if why else "init: pidshim"


def isolation_lines(spec: JobSpec) -> list[str]:
    """What the job was isolated by, for the summary: one line, one more when
    abstract unix sockets stayed shared with the node, and the init's."""
    shim = spec.private_pids
    made = [
        ("pids", shim),
        ("tmp", spec.private_tmp and (shim or not spec.scope)),
        ("ipc", spec.private_ipc and (shim or not spec.scope)),
        ("shm", spec.private_shm and (shim or not spec.scope)),
        ("scratch", spec.scratch_dir is not None),
        ("network", spec.private_network),
        ("abstract-sockets(landlock)", spec.landlock_scope),
        ("signals(landlock)", spec.landlock_scope),
    ]
    names = [name for name, got in made if got]
    lines = [f"isolation: {', '.join(names) or 'none'}"]
    if not spec.landlock_scope and not spec.private_network:
        lines.append(f"abstract sockets: shared, {spec.landlock_missing or 'not scoped'}")
    init = init_line(spec)
    return lines if init is None else [*lines, init]


def _unit_argv(props: Mapping[str, Any]) -> list[str]:
    for key in ("ExecStartEx", "ExecStart"):
        for entry in props.get(key) or []:
            return [str(arg) for arg in entry[1]]
    return []


def isolation_of_unit(
    props: Mapping[str, Any], process_argvs: Sequence[Sequence[str]] = ()
) -> list[str]:
    """isolation_lines for a running unit, from its properties (GetAll) and,
    for a scope (whose shim no property records), its processes' argv."""
    unit_argv = _unit_argv(props)
    lines = [parse_exec_argv(argv) for argv in [unit_argv, *process_argvs]]
    init = next((line for line in lines if line.init), ExecLine("", (), (), ()))
    flags = init.init_flags
    scope = "PIDs" in props or not unit_argv
    temporary = {str(entry[0]) for entry in props.get("TemporaryFileSystem") or []}

    def by_unit_or_shim(prop: str, flag: str) -> bool:
        return bool(props.get(prop)) if not scope else flag in flags

    # The last one: exec_argv puts slotmgr's own after the job's -E.
    scratch = [
        a.partition("=")[2]
        for a in lines[0].environment
        if a.startswith(f"{SCRATCH_VARIABLE}=") and props.get("BindPaths")
    ]
    catatonit = next((path for path in CATATONIT_PATHS if path in unit_argv), None)
    spec = JobSpec(
        command=(),
        job_id="",
        unit="",
        scope=scope,
        private_pids=bool(init.init) or props.get("PrivatePIDs") == "yes",
        private_tmp=by_unit_or_shim("PrivateTmp", "--private-tmp"),
        private_ipc=by_unit_or_shim("PrivateIPC", "--private-ipc"),
        private_shm="/dev/shm" in temporary or (scope and "--private-shm" in flags),
        private_network=bool(props.get("PrivateNetwork")),
        landlock_scope="--landlock-scope" in flags,
        landlock_missing="not scoped by Landlock for this job; use --private-network",
        catatonit=catatonit if init.init == "catatonit" else None,
        scratch_dir=scratch[-1] if scratch else None,
    )
    return isolation_lines(spec)
