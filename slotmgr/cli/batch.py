"""`batch-run`: the one way a batch job's own user has slotmgr run its job.

    sudo -n /usr/libexec/slotmgr/batch-run [OPTIONS] -- CMD [ARGS...]

A batch system runs its job's tasks as the job's user (HTCondor's
USER_JOB_WRAPPER, a Slurm SPANK plugin's prepended argv, a batch script), but
only root may make units on the system manager; a `sudo slotmgr ...` rule
would hand root to any user (`--uid 0`, `-p ...`). This entry is what the
shipped sudoers rule (packaging/sudoers.d/slotmgr) allows instead. It decides,
not the caller:

- the job runs as the user sudo says called it (SUDO_UID, SUDO_GID: set by
  sudo, not by the caller), always;
- the limits of the caller's cgroup hold for it (--inherit-limits, always);
- under Slurm, the batch id is the step's that the caller's cgroup names
  (`.../job_N/step_S/...`, made by root's slurmstepd; no user can leave it
  for another job's), not a label of the caller's: `N.batch`, `N.extern` or
  `N.S`. So the Epilog, which stops a job's units by batch id, and anything
  that reads the records by batch id, find the job's own and no other user's;
- a task of a numbered step runs as a task of the step's one unit on this
  node (slotmgr.job.step): the step's tasks here share its cgroup and
  namespaces, as MPI ranks on a node need;
- of `slotmgr run`'s options only those that can concern nobody but the
  caller's own job are taken: the batch id, the environment it passes,
  limits that only ever restrict it (never a weight, never `-p`), its output
  files (opened as the user) and how much is printed. Any other is refused.

Everything else is `slotmgr run`'s: the checks as the user, the binding to
this launcher, the record, the exit status (ExitCode; 77 when not run by sudo
as root).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

from slotmgr.errors import ExitCode

PROG = "batch-run"
# `slotmgr run` options a batch job's user may give: name -> takes a value.
ALLOWED: dict[str, bool] = {
    "--batch-id": True,
    "--pass-env": True,
    "-E": True,
    "--setenv": True,
    "--memory-max": True,
    "--memory-high": True,
    "--memory-swap-max": True,
    "--cpu-quota": True,
    "--cpus": True,
    "--tasks-max": True,
    "--runtime-max": True,
    "-o": True,
    "--output": True,
    "-e": True,
    "--error": True,
    "--append": False,
    "--json": True,
    "-q": False,
    "--quiet": False,
    "-v": False,
    "--verbose": False,
}


# What sudo sets for the command: none of it is the caller's to pass on.
SUDO_SET = (
    "SUDO_COMMAND",
    "SUDO_USER",
    "SUDO_UID",
    "SUDO_GID",
    "SUDO_HOME",
    "HOME",
    "USER",
    "LOGNAME",
    "MAIL",
    "SHELL",
)


# A Slurm step's cgroup (cgroup v2, `[NODE_]slurmstepd.scope/job_N/step_S/...`).
_SLURM_STEP = re.compile(r"/job_([0-9]+)/step_([a-z]+|[0-9]+)(?=/|$)")


def slurm_step_of(cgroup: str) -> tuple[str, str, str] | None:
    """(job, step, the step's cgroup path) of the Slurm step whose cgroup this
    process is in (`cgroup`: the text of /proc/self/cgroup), or None."""
    for line in cgroup.splitlines():
        hierarchy, _, path = line.partition("::")
        if hierarchy != "0":
            continue  # the unified hierarchy's line is "0::/path"
        found = _SLURM_STEP.search(path)
        if found is None:
            return None
        return found[1], found[2], path[: found.end()]
    return None


def slurm_batch_id(cgroup: str) -> str | None:
    """The batch id of the Slurm step whose cgroup this process is in, or
    None outside one: N.batch, N.extern, or N.S for a task of step S (the
    step's tasks on a node are one job, slotmgr.job.step)."""
    found = slurm_step_of(cgroup)
    return None if found is None else f"{found[0]}.{found[1]}"


class Refused(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _value(name: str, value: str) -> str:
    """An option's value, never one that looks like an option itself (but
    `-`, stdout): whatever a parser would make of it, it cannot become one."""
    if value.startswith("-") and value != "-":
        raise Refused(
            f"{PROG}: the value of {name} may not start with '-' ({value!r})", ExitCode.USAGE
        )
    return value


def run_argv(
    args: Sequence[str], environ: dict[str, str], euid: int, cgroup: str = ""
) -> list[str]:
    """The `slotmgr run` command line for this call, or Refused. Pure;
    `cgroup`: the caller's /proc/self/cgroup."""
    if euid != 0 or not environ.get("SUDO_UID", "").isdigit():
        raise Refused(
            "batch-run is for sudo to run as root on a job's user's behalf "
            "(sudo -n /usr/libexec/slotmgr/batch-run -- CMD); as root, use slotmgr run",
            ExitCode.NO_PERMISSION,
        )
    uid = environ["SUDO_UID"]
    gid = environ.get("SUDO_GID", "")
    if uid == "0":
        raise Refused(
            "batch-run runs jobs for users, not root: as root, use slotmgr run",
            ExitCode.NO_PERMISSION,
        )
    taken: list[str] = []
    rest = list(args)
    while rest and rest[0] != "--":
        name, sep, inline = rest[0].partition("=")
        if not name.startswith("-") or name not in ALLOWED:
            allowed = ", ".join(sorted({a for a in ALLOWED if a.startswith("--")}))
            raise Refused(
                f"{PROG}: option {rest[0]!r} is not for a batch job's user to give "
                f"(allowed: {allowed}; then -- CMD)",
                ExitCode.USAGE,
            )
        if ALLOWED[name] and not sep:
            if len(rest) < 2:
                raise Refused(f"{PROG}: option {name} needs a value", ExitCode.USAGE)
            taken += [name, _value(name, rest[1])]
            rest = rest[2:]
        elif ALLOWED[name]:
            taken += [name, _value(name, inline)]
            rest = rest[1:]
        elif sep:
            raise Refused(f"{PROG}: option {name} takes no value", ExitCode.USAGE)
        else:
            taken.append(name)
            rest = rest[1:]
    if len(rest) < 2:
        raise Refused(f"{PROG}: no command: give -- CMD [ARGS...]", ExitCode.USAGE)
    forced = ["--uid", uid, *(["--gid", gid] if gid.isdigit() else []), "--inherit-limits"]
    step = slurm_step_of(cgroup)
    if step is not None:
        step_id = f"{step[0]}.{step[1]}"
        # A value never starts with '-' (_value), so a name is followed by its value.
        asked = [taken[i + 1] for i, name in enumerate(taken) if name == "--batch-id"]
        other = [value for value in asked if value != step_id]
        if other:
            raise Refused(
                f"{PROG}: --batch-id {other[0]!r} is not this Slurm step's: under Slurm "
                f"the batch id is the one the caller's cgroup names ({step_id}); "
                "leave --batch-id out",
                ExitCode.USAGE,
            )
        if not asked:
            forced += ["--batch-id", step_id]
    if step is not None and step[1].isdigit():
        # A task of a step: the step's tasks on this node are one job (slotmgr.job.step).
        from slotmgr.job.step import step_job_id

        if "--json" in taken:
            raise Refused(
                f"{PROG}: --json: a task of Slurm step {step[0]}.{step[1]} has no record "
                f"of its own; the step's is its unit's (slotmgr history --batch-id "
                f"{step[0]}.{step[1]})",
                ExitCode.USAGE,
            )
        forced += ["--job-id", step_job_id(step_id, step[2]), "--as-step-task"]
    return ["run", *forced, *taken, *rest]


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with open("/proc/self/cgroup") as f:
            cgroup = f.read()
        run_args = run_argv(args, dict(os.environ), os.geteuid(), cgroup)
    except Refused as exc:
        print(f"slotmgr: error: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    # sudo's own variables, and root's identity it set, are no part of the
    # job's environment (systemd sets the user's HOME, USER, LOGNAME, SHELL).
    for name in SUDO_SET:
        os.environ.pop(name, None)
    from slotmgr.cli.main import main as slotmgr_main

    slotmgr_main(run_args)


if __name__ == "__main__":
    main()
