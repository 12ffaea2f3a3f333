"""Shared pieces of the batch tier: a real Slurm cluster around slotmgr.

These tests run inside a batch guest of the test bed (`252-batch`: Slurm
22.05; `257-batch`: Slurm 24.11, where test_spank.py also runs), as root,
against the daemons the guest starts at boot: slurmctld and two slurmd
(nodes n1 and n2, multiple-slurmd) in partition `debug`, see
tests/testbed/guest/overlay/usr/local/lib/testbed/batch-setup. They act as
a user would: `sbatch`, `srun`, `scancel`, `scontrol`, `systemctl`. Off such
a guest the whole tier FAILS with a pointer to the test bed; it never skips.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_SRC = REPO / "packaging" / "slurm"
EPILOG = Path("/usr/libexec/slotmgr/slotmgr-epilog")
SLURM_CONF = Path("/etc/slurm/slurm.conf")
# What the RPM installs as `slotmgr` (the Epilog calls it by this path): here a
# root-owned script that runs this repository's slotmgr (install_slotmgr_command).
SLOTMGR_COMMAND = Path("/usr/bin/slotmgr")
NODES = ("n1", "n2")
CLUSTER_UNITS = ("testbed-batch-setup", "munge", "slurmctld", "slurmd@n1", "slurmd@n2")
# Under emulation the daemons need ~10-30 s after boot to register.
CLUSTER_DEADLINE = 180.0
JOB_DEADLINE = 120.0
# Accounting tests: the job burns this much CPU by its own count. slotmgr's
# figure, the unit's, also counts a fixed cost per job: systemd's start of the
# unit and the job's init (pidshim on 257, for the Landlock scope). A `true`
# job's unit used 0.54-0.82 s in 257-batch under emulation (and up to 2.4 s
# with another guest running beside it): within 5% for a job of this size.
BURN_SECONDS = 60.0
TEST_USER = "batchuser"
# Jobs' working directories: not under /tmp or /var/tmp, which slotmgr's
# jobs get private copies of.
WORK_ROOT = Path("/srv/batch-tests")
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
# Modules that need a Slurm of at least this version (spank_prepend_task_argv: 23.11).
NEEDS_SLURM = {"test_spank.py": (23, 11)}


def slurm_version() -> tuple[int, int] | None:
    """`scontrol --version` as (major, minor), e.g. (24, 11); None without Slurm."""
    try:
        out = subprocess.run(
            ["scontrol", "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"(\d+)\.(\d+)", out)
    return (int(found[1]), int(found[2])) if found else None


def _debian_major() -> str:
    try:
        return Path("/etc/debian_version").read_text().split(".", 1)[0].strip()
    except OSError:
        return ""


def _deselection_reasons(names: set[str]) -> dict[str, str]:
    """Why each of these modules cannot run in this guest, if it cannot: a
    Slurm older than it needs (252-batch has 22.05), or HTCondor on Debian 12,
    which packages none. Off a batch guest nothing is deselected: the tier
    then fails at its `cluster` fixture, as it should."""
    reasons: dict[str, str] = {}
    wanted = names & NEEDS_SLURM.keys()
    version = slurm_version() if wanted else None
    for name in sorted(wanted):
        if version is not None and version < NEEDS_SLURM[name]:
            need = ".".join(map(str, NEEDS_SLURM[name]))
            reasons[name] = (
                f"it needs Slurm >= {need}, this guest has {version[0]}.{version[1]:02d}"
            )
    if (
        "test_htcondor.py" in names
        and _debian_major() == "12"
        and not shutil.which("condor_submit")
    ):
        reasons["test_htcondor.py"] = "Debian 12 packages no HTCondor (guest 257-batch runs it)"
    if "test_accounting.py" in names and _debian_major() == "12" and not shutil.which("slurmdbd"):
        reasons["test_accounting.py"] = "252-batch has no slurmdbd (guest 257-batch runs it)"
    return reasons


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/batch/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.batch)
    # A module that cannot run in this guest is deselected, not skipped, and
    # says so: deselected tests are counted as neither passed nor skipped.
    reasons = _deselection_reasons({Path(str(item.fspath)).name for item in items})
    if not reasons:
        return
    dropped = [item for item in items if Path(str(item.fspath)).name in reasons]
    items[:] = [item for item in items if item not in dropped]
    config.hook.pytest_deselected(items=dropped)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for name, why in sorted(reasons.items()):
        line = f"batch: {name} deselected: {why}"
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(line)
        else:
            print(line)


def run(
    argv: list[str],
    timeout: float = 60,
    check: bool = True,
    user: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """A command as root, or as `user` (runuser), with its output captured."""
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def node_states() -> dict[str, str]:
    """`sinfo`'s state of each node, e.g. {'n1': 'idle', 'n2': 'mix'}."""
    proc = run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False, timeout=30)
    states = {}
    for line in proc.stdout.splitlines():
        if len(line.split()) == 2:
            node, state = line.split()
            states[node] = state
    return states


def cluster_diagnostics() -> str:
    """What an engineer would look at when the cluster did not come up."""
    parts = []
    for argv in (
        ["sinfo", "-N", "-l"],
        ["systemctl", "--no-pager", "--full", "status", *CLUSTER_UNITS],
        ["sh", "-c", "tail -n 15 /var/log/slurm/*.log"],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        parts.append(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    return "\n".join(parts)


def wait_for_cluster(timeout: float = CLUSTER_DEADLINE) -> float:
    """Wait until sinfo shows both nodes idle; return the guest's uptime then.

    Fails loudly, with the daemons' status and logs, past the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        states = node_states()
        if all(states.get(node) == "idle" for node in NODES):
            return float(Path("/proc/uptime").read_text().split()[0])
        if time.monotonic() > deadline:
            pytest.fail(
                f"the Slurm cluster did not come up within {timeout:.0f} s: "
                f"nodes {states or 'none'} (want {', '.join(NODES)} idle)\n"
                f"{cluster_diagnostics()}",
                pytrace=False,
            )
        time.sleep(1)


@pytest.fixture(autouse=True, scope="session")
def cluster() -> float:
    """The guest's cluster, up: both nodes idle. Its value: guest uptime then (s)."""
    if os.geteuid() != 0 or not os.path.isdir("/run/systemd/system") or not shutil.which("sbatch"):
        pytest.fail(
            "the batch tests need root, systemd as PID 1 and Slurm: run them in the test bed, "
            "python3 -m tests.testbed run --guest 252-batch -- python3 -m pytest tests/batch",
            pytrace=False,
        )
    uptime = wait_for_cluster()
    print(f"\nbatch: cluster up (both nodes idle) at guest uptime {uptime:.1f} s")
    return uptime


@pytest.fixture(scope="session")
def test_user() -> pwd.struct_passwd:
    """An unprivileged user for jobs, as on a real cluster (same uid everywhere)."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        run(["useradd", "--create-home", "--shell", "/bin/sh", TEST_USER])
        return pwd.getpwnam(TEST_USER)


@pytest.fixture
def workdir(request: pytest.FixtureRequest, test_user: pwd.struct_passwd) -> Iterator[Path]:
    """A fresh directory the test user owns, for job scripts and output files."""
    name = "".join(c for c in request.node.name if c.isalnum() or c in "-_")[:60]
    path = WORK_ROOT / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    WORK_ROOT.chmod(0o755)
    os.chown(path, test_user.pw_uid, test_user.pw_gid)
    yield path


def write_script(directory: Path, name: str, body: str, owner: pwd.struct_passwd) -> Path:
    script = directory / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    os.chown(script, owner.pw_uid, owner.pw_gid)
    return script


def sbatch(script: Path, *options: str, user: str | None = None) -> str:
    """Submit `script` with `sbatch --parsable`; return the Slurm job id.

    Output goes to slurm-%j.out in the script's directory (the job's cwd)."""
    proc = run(
        ["sbatch", "--parsable", f"--chdir={script.parent}", *options, str(script)], user=user
    )
    job_id = proc.stdout.strip().split(";")[0]
    assert job_id.isdigit(), f"sbatch printed no job id: {proc.stdout!r} {proc.stderr!r}"
    return job_id


def job_info(job_id: str) -> dict[str, str]:
    """`scontrol show job -o` as a dict (JobState, NodeList, ExitCode ...)."""
    proc = run(["scontrol", "show", "job", "-o", job_id], check=False)
    info = {}
    for word in proc.stdout.split():
        key, sep, value = word.partition("=")
        if sep and key not in info:
            info[key] = value
    return info


def job_state(job_id: str) -> str:
    return job_info(job_id).get("JobState", "")


def wait_for_state(job_id: str, states: tuple[str, ...], timeout: float = JOB_DEADLINE) -> str:
    """Wait until the job is in one of `states`; return that state."""
    seen: list[str] = []

    def reached() -> bool:
        state = job_state(job_id)
        if not seen or seen[-1] != state:
            seen.append(state)
        return state in states

    try:
        wait_until(reached, timeout, f"job {job_id} to be {'/'.join(states)}")
    except AssertionError as err:
        raise AssertionError(
            f"{err}; states seen: {' -> '.join(seen)}\n"
            f"{run(['scontrol', 'show', 'job', job_id], check=False).stdout}"
        ) from None
    return seen[-1]


def wait_for_end(job_id: str, timeout: float = JOB_DEADLINE) -> dict[str, str]:
    wait_for_state(job_id, FINISHED, timeout)
    return job_info(job_id)


def output_of(directory: Path, job_id: str) -> str:
    """The job's output file (sbatch's default slurm-%j.out)."""
    path = directory / f"slurm-{job_id}.out"
    # slurmstepd closes the file before the job is reported finished, but
    # on a slow guest give the last write a moment.
    wait_until(path.exists, 10, f"{path} to exist")
    return path.read_text()


def slotmgr_argv() -> list[str]:
    """How a batch script calls slotmgr: this repository, by the guest's Python."""
    return [sys.executable, "-m", "slotmgr"]


def slotmgr_env_line() -> str:
    return f"export PYTHONPATH={REPO}\n"


# -- slotmgr's entry for a batch job's user: sudo + batch-run ------------------------

BATCH_RUN = Path("/usr/libexec/slotmgr/batch-run")
SUDOERS = Path("/etc/sudoers.d/slotmgr")


@pytest.fixture(scope="session")
def batch_entry() -> Path:
    """slotmgr's sudo entry installed as the RPM installs it: the shipped
    sudoers rule (packaging/sudoers.d/slotmgr) as is, and a root-owned
    batch-run at its path, which (the repository not being installed in the
    guest) puts this repository first on its path. Yields the entry."""
    shipped = (REPO / "packaging" / "libexec" / "batch-run").read_text()
    head, _, body = shipped.partition("\n")
    BATCH_RUN.parent.mkdir(parents=True, exist_ok=True)
    BATCH_RUN.write_text(f"{head}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n{body}")
    BATCH_RUN.chmod(0o755)
    SUDOERS.write_text((REPO / "packaging" / "sudoers.d" / "slotmgr").read_text())
    SUDOERS.chmod(0o440)
    run(["visudo", "-c", "-f", str(SUDOERS)])
    return BATCH_RUN


def slotmgr_units_of(batch_job: str) -> dict[str, str]:
    """Running slotmgr units whose batch id belongs to Slurm job `batch_job`:
    unit -> batch id (from the unit's LogExtraFields, as `journalctl
    SLOTMGR_BATCH_ID=...` finds them)."""
    listed = run(
        ["systemctl", "list-units", "--plain", "--no-legend", "--all", "slotmgr-*.service"]
    ).stdout
    found = {}
    for line in listed.splitlines():
        unit = line.split()[0]
        fields = run(
            ["systemctl", "show", unit, "--property=LogExtraFields", "--value"], check=False
        ).stdout.split()
        for field in fields:
            name, _, value = field.partition("=")
            if name == "SLOTMGR_BATCH_ID" and value.split(".")[0] == batch_job:
                found[unit] = value
    return found


def slurm_config() -> dict[str, str]:
    """`scontrol show config` as a dict (PluginDir, PlugStackConfig, Epilog ...)."""
    config = {}
    for line in run(["scontrol", "show", "config"]).stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def configured_in(config: dict[str, str], key: str, wanted: str) -> bool:
    """Whether `key` (24.11: `Epilog[0]`, `Epilog[1]` ...) names `wanted`."""
    return any(value == wanted for name, value in config.items() if name.partition("[")[0] == key)


def reconfigure(key: str, wanted: str) -> None:
    """`scontrol reconfigure`, then wait until `scontrol show config` has
    `wanted` in `key` (24.11 may list several scripts there) and both nodes
    are idle again."""
    run(["scontrol", "reconfigure"], timeout=120)

    def configured() -> bool:
        return configured_in(slurm_config(), key, wanted)

    try:
        wait_until(configured, 120, f"scontrol show config: {key} = {wanted}")
    except AssertionError as err:
        shown = [line for line in run(["scontrol", "show", "config"]).stdout.splitlines()
                 if key.lower() in line.lower()]  # fmt: skip
        logs = run(["sh", "-c", "tail -n 20 /var/log/slurm/slurmctld.log"], check=False).stdout
        raise AssertionError(f"{err}\n{shown}\n{logs}") from None
    wait_for_cluster()


def install_slotmgr_command() -> Path:
    """/usr/bin/slotmgr as the RPM installs it (root's, 0755), running this
    repository's slotmgr with the guest's Python."""
    SLOTMGR_COMMAND.write_text(
        f"#!{sys.executable} -I\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from slotmgr.cli.main import main\nmain()\n"
    )
    SLOTMGR_COMMAND.chmod(0o755)
    return SLOTMGR_COMMAND


def install_epilog() -> Path:
    """slotmgr's Epilog as an admin installs it (README, "With Slurm"): root's
    script at its path, `Epilog=` in slurm.conf, `scontrol reconfigure`; and
    the `slotmgr` command it calls. Once per guest: later calls find it set."""
    install_slotmgr_command()
    run(["install", "-o", "root", "-g", "root", "-m", "0755",
         str(SLURM_SRC / "slotmgr-epilog"), str(EPILOG)])  # fmt: skip
    if not configured_in(slurm_config(), "Epilog", str(EPILOG)):
        with SLURM_CONF.open("a") as conf:
            conf.write(f"Epilog={EPILOG}\n")
        reconfigure("Epilog", str(EPILOG))
    return EPILOG
