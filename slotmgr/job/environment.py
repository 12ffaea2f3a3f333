"""The job's environment from `-E` and `--pass-env`, and its batch system id.

`-E NAME=VALUE` sets a variable; `-E NAME` takes NAME's value from the
caller, as systemd-run does (and, as there, passes nothing if the caller has
no NAME); `--pass-env PATTERN` passes every variable of the caller whose name
matches the shell pattern (`SLURM_*`, `_CONDOR_*`, `*` for all). `-E` wins
over `--pass-env` for the same name. Only names that are variable names are
passed by a pattern: others (bash's exported functions, `BASH_FUNC_f%%`)
are left out, as systemd's PassEnvironment= leaves them.

All of it reaches only the job: exec_argv puts it on the env(1) in front of
the job's own command, behind the init, never into the unit's Environment=
(which root's stop hook would see). Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence

from slotmgr.errors import UsageError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A pattern is a name with the shell's wildcards: nothing that could be a value.
_PATTERN = re.compile(r"[A-Za-z0-9_*?\[\]!-]{1,256}")
_BATCH_ID = re.compile(r"[A-Za-z0-9_.:+-]{1,128}")
BATCH_ID_RULE = "1-128 letters, digits and '_.:+-'"


def _utf8(name: str, value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, as surrogate escapes
        raise UsageError(
            f"{what}: the value of {name} is not valid UTF-8: systemd takes only UTF-8 text"
        ) from None
    if "\0" in value:
        raise UsageError(f"{what}: the value of {name} holds a NUL byte")
    return value


def job_environment(
    setenv: Sequence[str], pass_env: Sequence[str], caller: Mapping[str, str]
) -> tuple[str, ...]:
    """NAME=VALUE for the job, in a stable order (patterns' matches sorted,
    then -E in its order), each name once."""
    chosen: dict[str, str] = {}
    for pattern in pass_env:
        if not _PATTERN.fullmatch(pattern):
            raise UsageError(
                f"invalid --pass-env {pattern!r}: use a variable name with the shell "
                "wildcards * ? [...], e.g. 'SLURM_*'"
            )
        for name in sorted(caller):
            if _ENV_NAME.fullmatch(name) and fnmatch.fnmatchcase(name, pattern):
                chosen[name] = _utf8(name, caller[name], f"--pass-env {pattern}")
    for item in setenv:
        name, sep, value = item.partition("=")
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(
                f"invalid --setenv {item!r}: use NAME=VALUE, or NAME to pass the "
                "caller's, with NAME a variable name"
            )
        if sep:
            chosen.pop(name, None)  # -E's place in the order, not the pattern's
            chosen[name] = value
        elif name in caller:
            chosen.pop(name, None)
            chosen[name] = _utf8(name, caller[name], f"-E {name}")
    return tuple(f"{name}={value}" for name, value in chosen.items())


def check_batch_id(value: str, *, source: str = "--batch-id") -> str:
    if not _BATCH_ID.fullmatch(value):
        raise UsageError(f"invalid {source} {value!r}: use {BATCH_ID_RULE}")
    return value


def batch_id_from(caller: Mapping[str, str]) -> str | None:
    """The batch id a Slurm task's environment names: job.step.task
    (SLURM_JOB_ID, SLURM_STEP_ID, SLURM_PROCID), or job.batch for the batch
    script, which has no step id. None outside Slurm."""
    job = caller.get("SLURM_JOB_ID")
    if not job:
        return None
    step = caller.get("SLURM_STEP_ID")
    task = caller.get("SLURM_PROCID", "0")
    found = f"{job}.batch" if step is None else f"{job}.{step}.{task}"
    return check_batch_id(found, source="batch id from SLURM_JOB_ID/SLURM_STEP_ID/SLURM_PROCID")
