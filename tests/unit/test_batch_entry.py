"""`batch-run`, the sudo entry for a batch job's user (slotmgr/cli/batch.py):
what it forces, what it takes, what it refuses. Against sudo and a real
systemd: tests/batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slotmgr.cli.batch import ALLOWED, Refused, run_argv, slurm_batch_id
from slotmgr.errors import ExitCode
from slotmgr.job.step import step_job_id

REPO = Path(__file__).resolve().parents[2]
SUDO = {"SUDO_UID": "1001", "SUDO_GID": "1002", "SUDO_USER": "alice"}


def test_the_caller_sudo_names_is_the_jobs_user_and_the_limits_are_inherited() -> None:
    argv = run_argv(["--batch-id", "5.0.1", "--pass-env", "SLURM_*", "--", "a.out", "-x"], SUDO, 0)
    assert argv == [
        "run",
        "--uid",
        "1001",
        "--gid",
        "1002",
        "--inherit-limits",
        "--batch-id",
        "5.0.1",
        "--pass-env",
        "SLURM_*",
        "--",
        "a.out",
        "-x",
    ]


def test_values_may_be_given_inline_and_flags_alone() -> None:
    argv = run_argv(["--memory-max=1G", "-q", "--", "true"], SUDO, 0)
    assert argv[-5:] == ["--memory-max", "1G", "-q", "--", "true"]


@pytest.mark.parametrize(
    "option",
    [
        "--uid",
        "--gid",
        "-p",
        "--property",
        "--unit",
        "--slice",
        "--slot",
        "--job-id",
        "--cpu-weight",
        "--io-weight",
        "--no-private-pids",
        "--no-private-tmp",
        "--scope",
        "--working-directory",
        "--user",
        "--debug",
        "--inherit-limits",
        "--uid=0",
    ],
)
def test_an_option_that_could_reach_past_the_callers_own_job_is_refused(option: str) -> None:
    with pytest.raises(Refused) as refused:
        run_argv([option, "0", "--", "true"], SUDO, 0)
    assert refused.value.code == ExitCode.USAGE
    assert "is not for a batch job's user to give" in str(refused.value)


@pytest.mark.parametrize("value", ["--uid=0", "--uid", "-p", "-"])
def test_a_value_that_looks_like_an_option_is_refused(value: str) -> None:
    if value == "-":  # stdout, for --json
        assert run_argv(["--json", value, "--", "true"], SUDO, 0)[6:8] == ["--json", "-"]
        return
    for args in (["-E", value], [f"--pass-env={value}"]):
        with pytest.raises(Refused, match="may not start with '-'"):
            run_argv([*args, "--", "true"], SUDO, 0)


def test_the_command_after_dashes_is_the_jobs_whatever_it_looks_like() -> None:
    argv = run_argv(["--", "sh", "--uid", "0", "-p", "User=root"], SUDO, 0)
    assert argv[-6:] == ["--", "sh", "--uid", "0", "-p", "User=root"]
    assert argv[1:3] == ["--uid", "1001"]


@pytest.mark.parametrize(
    ("args", "env", "euid", "code"),
    [
        (["--", "true"], {}, 0, ExitCode.NO_PERMISSION),  # not through sudo
        (["--", "true"], SUDO, 1001, ExitCode.NO_PERMISSION),  # not root
        (["--", "true"], {**SUDO, "SUDO_UID": "0"}, 0, ExitCode.NO_PERMISSION),  # root's own
        (["--", "true"], {**SUDO, "SUDO_UID": "x"}, 0, ExitCode.NO_PERMISSION),
        (["true"], SUDO, 0, ExitCode.USAGE),  # no --
        (["--"], SUDO, 0, ExitCode.USAGE),  # no command
        (["--batch-id"], SUDO, 0, ExitCode.USAGE),  # no value
        (["--quiet=yes", "--", "true"], SUDO, 0, ExitCode.USAGE),
    ],
)
def test_refusals_have_their_own_codes(
    args: list[str], env: dict[str, str], euid: int, code: int
) -> None:
    with pytest.raises(Refused) as refused:
        run_argv(args, env, euid)
    assert refused.value.code == code


def test_every_allowed_option_is_one_of_runs() -> None:
    from slotmgr.cli.main import run

    names = {opt for param in run.params for opt in param.opts}
    assert set(ALLOWED) <= names


def test_the_shipped_entry_refuses_one_line_when_not_run_by_sudo() -> None:
    code = (
        "import runpy, sys; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[2:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    entry = REPO / "packaging" / "libexec" / "batch-run"
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO), str(entry), "--", "true"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == ExitCode.NO_PERMISSION, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("slotmgr: error: batch-run is")


def test_the_sudoers_rule_allows_the_entry_alone_and_keeps_no_pam_session() -> None:
    text = (REPO / "packaging" / "sudoers.d" / "slotmgr").read_text()
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert rules == [
        "Defaults!/usr/libexec/slotmgr/batch-run !pam_session, !requiretty, "
        'env_keep += "SLURM_* SLURMD_* _CONDOR_*"',
        "ALL ALL=(root) NOPASSWD: /usr/libexec/slotmgr/batch-run",
    ]


# /proc/self/cgroup of a task of Slurm job 41, step 3, on node n1 (cgroup v2).
STEP_CGROUP = "0::/system.slice/n1_slurmstepd.scope/job_41/step_3/user/task_0\n"


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        (STEP_CGROUP, "41.3"),
        ("0::/system.slice/slurmstepd.scope/job_41/step_batch/user/task_0\n", "41.batch"),
        ("0::/system.slice/slurmstepd.scope/job_41/step_extern/user/task_special\n", "41.extern"),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
        ("0::/system.slice/job_41/step_3.service\n", None),
        ("12:pids:/job_41/step_3\n0::/\n", None),  # a v1 line is not the caller's place
        ("", None),
    ],
)
def test_the_slurm_batch_id_is_the_steps_the_callers_cgroup_names(
    cgroup: str, expected: str | None
) -> None:
    assert slurm_batch_id(cgroup) == expected


BATCH_CGROUP = "0::/system.slice/n1_slurmstepd.scope/job_41/step_batch/user/task_0\n"


def test_under_slurm_the_batch_id_is_forced_and_another_is_refused() -> None:
    # The environment claims another job: the cgroup, made by root, decides.
    env = {**SUDO, "SLURM_JOB_ID": "99", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1"}
    argv = run_argv(["--", "true"], env, 0, BATCH_CGROUP)
    assert argv[argv.index("--batch-id") + 1] == "41.batch"
    assert "--as-step-task" not in argv  # the batch script is a job of its own
    same = run_argv(["--batch-id", "41.batch", "--", "true"], env, 0, BATCH_CGROUP)
    assert same.count("--batch-id") == 1
    with pytest.raises(Refused) as refused:
        run_argv(["--batch-id", "99.batch", "--", "true"], env, 0, BATCH_CGROUP)
    assert refused.value.code == ExitCode.USAGE
    assert "'99.batch'" in str(refused.value) and "41.batch" in str(refused.value)
    # Outside Slurm the caller's own label stands, as before.
    free = run_argv(["--batch-id", "7.0", "--", "true"], SUDO, 0, "0::/system.slice/x.service\n")
    assert free[free.index("--batch-id") + 1] == "7.0"


def test_a_task_of_a_numbered_step_is_a_task_of_the_steps_one_unit_on_the_node() -> None:
    argv = run_argv(["-q", "--", "a.out"], SUDO, 0, STEP_CGROUP)
    assert argv[argv.index("--batch-id") + 1] == "41.3"
    job_id = argv[argv.index("--job-id") + 1]
    assert job_id == step_job_id("41.3", "/system.slice/n1_slurmstepd.scope/job_41/step_3")
    assert "--as-step-task" in argv and argv[-2:] == ["--", "a.out"]
    # Every task of the step on this node: the same unit.
    assert (
        run_argv(["--", "b.out"], SUDO, 0, STEP_CGROUP.replace("task_0", "task_1"))[
            : argv.index("--as-step-task") + 1
        ]
        == argv[: argv.index("--as-step-task") + 1]
    )
    with pytest.raises(Refused, match="has no record of its own"):
        run_argv(["--json", "r.json", "--", "a.out"], SUDO, 0, STEP_CGROUP)
