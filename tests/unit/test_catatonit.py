"""catatonit as the job's init, run for real (as root) in the command lines
slotmgr writes for it (jobspec.exec_argv): pidshim's exit and signal contract.

Forms:
  257       unshare --pid --fork --mount-proc + catatonit -- env --default-signal -- CMD
            (util-linux's unshare stands in for PrivatePIDs=yes: catatonit is PID 1 of a
            namespace someone else made)
  252       unshare --pid --fork --mount-proc --kill-child -- catatonit -- env ... CMD
  252-user  the same as user nobody holding CAP_SYS_ADMIN only as an ambient capability
            (what systemd 252 gives a --uid job), with setpriv emptying it before the job
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from slotmgr.job.init import find_catatonit
from slotmgr.job.spec import JobSpec, exec_argv
from slotmgr.systemd.features import features_from_version

NOBODY = "65534"
AS_NOBODY_WITH_SYS_ADMIN = [
    "setpriv",
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=+sys_admin",
    "--ambient-caps=+sys_admin",
]
STAND_IN_FOR_PRIVATE_PIDS = ["unshare", "--pid", "--fork", "--mount-proc"]
FORMS = ["257", "252", "252-user"]
TIMEOUT = 30
# A unit's PATH: the host's may name directories user nobody cannot search (EACCES: 126).
UNIT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


@pytest.fixture(scope="module")
def catatonit() -> str:
    assert os.geteuid() == 0, "these tests make PID namespaces: run them as root"
    path = find_catatonit()
    assert path, "catatonit is not installed (scripts/setup installs it)"
    return path


def argv_of(form: str, catatonit: str, command: list[str], **kw: Any) -> list[str]:
    version, _, who = form.partition("-")
    spec = JobSpec(
        command=tuple(command),
        job_id="ab12",
        unit="u.service",
        python="/usr/bin/python3",
        catatonit=catatonit,
        user="nobody" if who else "root",
        **kw,
    )
    argv = exec_argv(spec, features_from_version(version))
    if version == "257":
        return [*STAND_IN_FOR_PRIVATE_PIDS, *argv]
    return [*AS_NOBODY_WITH_SYS_ADMIN, *argv] if who else argv


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT, cwd="/", env=UNIT_ENV
    )


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def the_init(top: int, catatonit: str) -> int:
    """catatonit's PID as the host sees it: unshare's child, once it has exec'd."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for child in children(top):
            try:
                if cmdline(child)[:1] == [catatonit]:
                    return child
            except OSError:
                continue
        time.sleep(0.02)
    raise AssertionError("catatonit did not start")


@pytest.mark.parametrize("form", FORMS)
def test_the_jobs_exit_status_is_passed_on(form: str, catatonit: str) -> None:
    assert run(argv_of(form, catatonit, ["sh", "-c", "exit 7"])).returncode == 7
    assert run(argv_of(form, catatonit, ["true"])).returncode == 0


@pytest.mark.parametrize("form", FORMS)
def test_a_job_killed_by_a_signal_gives_128_plus_n(form: str, catatonit: str) -> None:
    out = run(argv_of(form, catatonit, ["sh", "-c", "kill -USR1 $$"]))
    assert out.returncode == 128 + signal.SIGUSR1


@pytest.mark.parametrize("form", FORMS)
def test_a_command_that_cannot_run_gives_126_or_127(
    form: str, catatonit: str, tmp_path: Path
) -> None:
    assert run(argv_of(form, catatonit, ["no-such-command-catatonit"])).returncode == 127
    plain = tmp_path / "not-executable"
    plain.write_text("x\n")
    plain.chmod(0o644)
    tmp_path.chmod(0o755)
    assert run(argv_of(form, catatonit, [str(plain)])).returncode == 126


@pytest.mark.parametrize("form", FORMS)
def test_the_job_starts_with_no_signal_blocked_or_ignored(form: str, catatonit: str) -> None:
    # catatonit itself would hand on TSTP, TTIN and TTOU blocked (and on 252 the
    # mask it inherited): the job's own env(1) clears both.
    out = run(argv_of(form, catatonit, ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16]


@pytest.mark.parametrize("form", FORMS)
def test_the_jobs_variables_reach_the_job_and_not_the_init(form: str, catatonit: str) -> None:
    job = ["sh", "-c", "echo $SLOTMGR_T_VAR; read _"]
    proc = subprocess.Popen(
        argv_of(form, catatonit, job, environment=("SLOTMGR_T_VAR=own",)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
        env=UNIT_ENV,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "own\n"
        for pid in (proc.pid, the_init(proc.pid, catatonit)):  # unshare (or its stand-in), init
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not any(item.startswith(b"SLOTMGR_T_VAR=") for item in environ), pid
    finally:
        proc.communicate("\n", timeout=TIMEOUT)
    assert proc.returncode == 0


@pytest.mark.parametrize("form", FORMS)
def test_sigterm_to_the_init_reaches_the_job_once(form: str, catatonit: str) -> None:
    job = [
        "sh",
        "-c",
        "n=0; trap 'n=$((n+1))' TERM; echo ready; "
        "while sleep 0.2; do [ $n -gt 0 ] && sleep 1 && exit $((40+n)); done",
    ]
    proc = subprocess.Popen(
        argv_of(form, catatonit, job), stdout=subprocess.PIPE, text=True, cwd="/", env=UNIT_ENV
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        os.kill(the_init(proc.pid, catatonit), signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 41  # once, and catatonit passed the status on
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("form", FORMS)
def test_nothing_of_the_job_outlives_its_main_process(form: str, catatonit: str) -> None:
    marker = f"{300 + os.getpid() % 1000}.{FORMS.index(form) + 1}"
    job = ["sh", "-c", f"setsid sleep {marker} & sleep {marker} & sleep 0.3; exit 5"]
    assert run(argv_of(form, catatonit, job)).returncode == 5
    left = []
    for pid in Path("/proc").glob("[0-9]*"):
        try:
            if cmdline(int(pid.name)) == ["sleep", marker]:
                left.append(pid.name)
        except (OSError, ValueError):
            continue
    assert left == []


def caps(pid: int | str) -> dict[str, int]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in text.splitlines()
        if line.startswith("Cap")
    }


def test_a_user_jobs_processes_hold_no_capability(catatonit: str) -> None:
    job = ["sh", "-c", "grep ^Cap /proc/self/status; echo child; sh -c 'grep ^Cap /proc/$$/status'"]
    out = run(argv_of("252-user", catatonit, job))
    assert out.returncode == 0, out.stderr
    job_part, child_part = out.stdout.split("child\n")
    for name, text in (("job", job_part), ("its child", child_part)):
        status = {line.split(":")[0]: int(line.split()[1], 16) for line in text.splitlines()}
        assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == 0, (name, status)
        assert status["CapInh"] == 0, (name, status)


def test_a_user_jobs_init_cannot_be_read_or_traced_by_the_job(catatonit: str) -> None:
    # catatonit keeps the capability unshare needed (as unshare does, outside):
    # the job, which has none, may neither read its memory nor its environment.
    job = ["sh", "-c", "grep ^CapEff /proc/1/status; head -c1 /proc/1/environ && echo readable"]
    out = run(argv_of("252-user", catatonit, job))
    assert int(out.stdout.split()[1], 16) == 1 << 21, out.stdout
    assert "readable" not in out.stdout and "Permission denied" in out.stderr, out


def test_without_setpriv_the_capability_would_reach_the_job(catatonit: str) -> None:
    # What SETPRIV_NO_CAPS is for: the ambient capability survives both execs.
    argv = argv_of("252-user", catatonit, ["grep", "^CapAmb", "/proc/self/status"])
    at = argv.index("/usr/bin/setpriv")
    out = run(argv[:at] + argv[at + 4 :])
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[1], 16) == 1 << 21
