"""Pure parts of issue 13's generic mechanisms: the launcher's watcher and the
job's binding to it, inherited limits, the caller's environment, batch ids.
The same mechanisms against a real systemd: tests/systemd/test_binding.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from slotmgr.errors import UsageError
from slotmgr.history import hook as stophook
from slotmgr.history.accounting import LAUNCHER_GONE, SYSTEMD_STOP_JOB, stopped_result
from slotmgr.job import binding, inherit
from slotmgr.job.environment import batch_id_from, check_batch_id, job_environment
from slotmgr.job.spec import JobSpec, stop_hook_argv, unit_properties
from slotmgr.naming import job_id_of_fields, launcher_unit_for
from slotmgr.systemd.features import features_from_version

V252 = features_from_version("252")
RUN = "0123456789abcdef0123456789abcdef"


def spec(**kw: Any) -> JobSpec:
    base: dict[str, Any] = dict(
        command=("sleep", "1"),
        job_id="ab12",
        unit="slotmgr-ab12.service",
        history_db="/var/lib/slotmgr/history.db",
        python="/usr/bin/python3",
        run_id=RUN,
    )
    base.update(kw)
    return JobSpec(**base)


# -- the launcher's watcher ---------------------------------------------------------

# A launcher as slotmgr.job.runner holds its pipe: it starts the watcher's
# program (as systemd would, its stdin the read end), prints the watcher's
# PID, then waits to be killed, holding the write end.
LAUNCHER = """
import subprocess, sys, time
from slotmgr.job import binding
with binding.launcher_pipe() as read_end:
    watcher = subprocess.Popen([binding.CAT], stdin=read_end, stdout=subprocess.DEVNULL)
    print(watcher.pid, flush=True)
    time.sleep(600)
"""


def _watcher_exited(pid: int, timeout: float) -> bool:
    """Whether `pid` (not our child: a zombie of the killed launcher's is
    reaped by us, the subreaper below) is gone within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            if not Path(f"/proc/{pid}").exists():
                return True
        time.sleep(0.02)
    return False


@pytest.fixture
def subreaper() -> Any:
    """The killed launcher's orphans are reparented to this process."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def start_launcher() -> tuple[subprocess.Popen[str], int]:
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert launcher.stdout is not None
    return launcher, int(launcher.stdout.readline())


def test_the_watcher_waits_while_its_launcher_lives_and_exits_once_it_is_sigkilled(
    subreaper: None,
) -> None:
    launcher, watcher = start_launcher()
    try:
        # cat holds only the read end (the write end is close-on-exec): it waits.
        assert not _watcher_exited(watcher, timeout=1.0)
        launcher.kill()
        launcher.wait()
        assert _watcher_exited(watcher, timeout=10)
    finally:
        launcher.kill()
        launcher.wait()
        if Path(f"/proc/{watcher}").exists():
            os.kill(watcher, 9)


def test_the_write_end_is_closed_when_the_block_ends() -> None:
    with binding.launcher_pipe() as read_end:
        assert not os.get_inheritable(read_end)
        reader = os.dup(read_end)
        os.set_blocking(reader, False)
        with pytest.raises(BlockingIOError):  # the write end is held: no end-of-file yet
            os.read(reader, 1)
    try:
        assert os.read(reader, 1) == b""  # end-of-file: the watcher would exit
    finally:
        os.close(reader)


# -- the job bound to it --------------------------------------------------------------


def test_a_bound_job_binds_to_and_starts_after_its_watcher_which_holds_no_privilege() -> None:
    job = spec(launcher=4321)
    props = {p.name: p.value for p in unit_properties(job, V252)}
    watcher = launcher_unit_for(RUN)
    assert props["BindsTo"] == [watcher] and props["After"] == [watcher]
    ((name, aux),) = binding.aux_units(job, 7)
    shown = {p.name: p.value for p in aux}
    assert name == watcher == f"slotmgr-launcher-{RUN}.service"
    # No interpreter: cat on the pipe's read end, which systemd gets as fd 7.
    assert shown["ExecStart"] == [("/usr/bin/cat", ["/usr/bin/cat"], False)]
    assert shown["StandardInputFileDescriptor"] == 7
    assert shown["StandardOutput"] == "null"
    assert "PID 4321" in str(shown["Description"])  # for the admin reading it
    assert shown["DynamicUser"] is True and shown["Slice"] == "slotmgr.slice"
    assert shown["CollectMode"] == "inactive-or-failed"
    assert "LogExtraFields" not in shown  # no marker: the watcher is no job
    # The stop hook is told which unit watches the launcher.
    assert stop_hook_argv(job)[-1] == watcher


def test_a_user_managers_watcher_is_the_users_and_an_unbound_job_has_none() -> None:
    ((_, aux),) = binding.aux_units(spec(launcher=1, user_manager=True), 7)
    assert "DynamicUser" not in {p.name for p in aux}
    unbound = {p.name for p in unit_properties(spec(), V252)}
    assert "BindsTo" not in unbound and binding.aux_units(spec(), None) == []
    assert len(stop_hook_argv(spec())) == 6  # the hook's earlier form, as live units have it


def test_cat_is_where_the_watcher_names_it() -> None:
    assert os.access(binding.CAT, os.X_OK)


@pytest.mark.parametrize(
    ("job_type", "gone", "expected"),
    [
        ("stop", True, ("cancelled", LAUNCHER_GONE)),
        ("stop", False, ("cancelled", SYSTEMD_STOP_JOB)),
        (None, True, ("exit-code", None)),  # ended by itself before its launcher
    ],
)
def test_a_stop_is_the_launchers_going_away_only_when_its_watcher_is(
    job_type: str | None, gone: bool, expected: tuple[str, str | None]
) -> None:
    assert stopped_result("exit-code", 143, None, job_type, launcher_gone=gone) == expected


@pytest.mark.parametrize(
    ("state", "gone"), [("inactive", True), ("failed", True), ("active", False)]
)
def test_the_hooks_launcher_line_decides(state: str, gone: bool) -> None:
    launch = stophook.Launch(
        job_id="ab",
        run_id=RUN,
        unit="slotmgr-ab.service",
        slice="slotmgr.slice",
        slot=None,
        user="root",
        uid=0,
        command=["sleep", "9"],
        systemd_version="252",
        batch_id="9.0.1",
    )
    end = {
        "service_result": "success",
        "exit_code": "killed",
        "exit_status": "TERM",
        "systemd.JobType": "stop",
        "launcher.state": state,
    }
    rec = stophook.record_of(launch, end, end_time=time.time())
    assert rec.stopped_by == (LAUNCHER_GONE if gone else SYSTEMD_STOP_JOB)
    assert rec.batch_id == "9.0.1"


# -- the caller's environment and the batch id ---------------------------------------

CALLER = {
    "SLURM_JOB_ID": "12",
    "SLURM_NODELIST": "n[1-2]",
    "_CONDOR_SLOT": "slot1",
    "HOME": "/home/a",
    "BASH_FUNC_f%%": "() { :; }",
    "SLURMISH": "x",
}


def test_patterns_pass_matching_variable_names_only() -> None:
    assert job_environment([], ["SLURM_*"], CALLER) == (
        "SLURM_JOB_ID=12",
        "SLURM_NODELIST=n[1-2]",
    )
    everything = job_environment([], ["*"], CALLER)
    assert "HOME=/home/a" in everything and "_CONDOR_SLOT=slot1" in everything
    assert not any(item.startswith("BASH_FUNC") for item in everything)


def test_a_name_alone_takes_the_callers_value_and_is_left_out_if_unset() -> None:
    assert job_environment(["HOME", "NOT_SET", "A=1"], [], CALLER) == ("HOME=/home/a", "A=1")


def test_setenv_wins_over_a_pattern_for_the_same_name() -> None:
    got = job_environment(["SLURM_JOB_ID=99"], ["SLURM_*"], CALLER)
    assert got == ("SLURM_NODELIST=n[1-2]", "SLURM_JOB_ID=99")


@pytest.mark.parametrize(
    ("setenv", "patterns", "message"),
    [
        (["1A"], [], "invalid --setenv '1A'"),
        (["A B=1"], [], "invalid --setenv 'A B=1'"),
        ([], ["A=B*"], "invalid --pass-env 'A=B*'"),
        ([], [""], "invalid --pass-env ''"),
        ([], ["A\n*"], "invalid --pass-env 'A\\n*'"),
    ],
)
def test_bad_names_and_patterns_are_refused(
    setenv: list[str], patterns: list[str], message: str
) -> None:
    with pytest.raises(UsageError, match="^" + re.escape(message)):
        job_environment(setenv, patterns, CALLER)


def test_a_value_that_is_not_utf8_is_refused_naming_its_variable() -> None:
    caller = {"ODD": "caf\udce9"}  # what Python makes of the byte 0xe9
    with pytest.raises(UsageError, match="the value of ODD is not valid UTF-8"):
        job_environment(["ODD"], [], caller)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_JOB_ID": "7"}, "7.batch"),
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "2", "SLURM_PROCID": "5"}, "7.2.5"),
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"}, "7.0.0"),
        ({}, None),
    ],
)
def test_slurms_ids_name_the_batch_job(env: dict[str, str], expected: str | None) -> None:
    assert batch_id_from(env) == expected


@pytest.mark.parametrize("bad", ["", "a b", "x" * 129, "1;rm", "é"])
def test_a_bad_batch_id_is_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid --batch-id"):
        check_batch_id(bad)
    with pytest.raises(UsageError, match="SLURM_JOB_ID"):
        batch_id_from({"SLURM_JOB_ID": bad or " "})


def test_the_batch_id_tags_the_jobs_log_beside_its_marker() -> None:
    fields = {p.name: p.value for p in unit_properties(spec(batch_id="5.0.1"), V252)}
    assert b"SLOTMGR_BATCH_ID=5.0.1" in fields["LogExtraFields"]
    assert job_id_of_fields(fields["LogExtraFields"]) == "ab12"


# -- inherited limits ----------------------------------------------------------------


def reader(files: dict[tuple[str, str], str]) -> inherit.Reader:
    return lambda group, name: files.get((group, name))


SLURM_TASK = "/system.slice/n1_slurmstepd.scope/job_5/step_batch/user/task_0"
JOB = "/system.slice/n1_slurmstepd.scope/job_5"


def test_the_tightest_limit_on_the_way_up_holds() -> None:
    files = {
        (SLURM_TASK, "memory.max"): "max",
        (JOB, "memory.max"): str(64 << 20),
        (JOB + "/step_batch", "memory.max"): str(128 << 20),
        ("/system.slice", "memory.max"): "max",
        (JOB, "memory.swap.max"): "0",
        (SLURM_TASK, "pids.max"): "50",
        (JOB, "pids.max"): "80",
        (JOB, "cpu.max"): "150000 100000",
        (SLURM_TASK, "cpu.max"): "max 100000",
        ("", "cpuset.cpus.effective"): "0-7",
        (SLURM_TASK, "cpuset.cpus.effective"): "2-3",
    }
    found = {i.key: (i.raw, i.source) for i in inherit.limits_of(SLURM_TASK, reader(files))}
    assert found == {
        "MemoryMax": (str(64 << 20), f"memory.max of {JOB}"),
        "MemorySwapMax": ("0", f"memory.swap.max of {JOB}"),
        "TasksMax": ("50", f"pids.max of {SLURM_TASK}"),
        "CPUQuota": ("150.00%", f"cpu.max of {JOB}"),
        "AllowedCPUs": ("2-3", f"cpuset.cpus.effective of {SLURM_TASK}"),
    }


def test_no_limit_anywhere_inherits_nothing() -> None:
    files = {
        (SLURM_TASK, "memory.max"): "max",
        ("", "cpuset.cpus.effective"): "0-7",
        (SLURM_TASK, "cpuset.cpus.effective"): "0-7",  # all of the node's
    }
    assert inherit.limits_of(SLURM_TASK, reader(files)) == []


def test_a_quota_is_rounded_down_never_looser() -> None:
    files = {(JOB, "cpu.max"): "33333 100000"}
    (limit,) = inherit.limits_of(JOB, reader(files))
    assert limit.raw == "33.33%"


@pytest.mark.parametrize(
    ("name", "text"),
    [("memory.max", "lots"), ("pids.max", "-1"), ("cpu.max", "1 0"), ("cpu.max", "x y")],
)
def test_a_limit_file_that_does_not_parse_is_refused_naming_it(name: str, text: str) -> None:
    with pytest.raises(UsageError, match=f"{name} of {JOB} reads"):
        inherit.limits_of(JOB, reader({(JOB, name): text}))


def test_merged_keeps_the_tighter_and_intersects_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)  # CPU lists are checked against the node's
    inherited = [
        inherit.Inherited("MemoryMax", str(64 << 20), "memory.max of /j"),
        inherit.Inherited("TasksMax", "40", "pids.max of /j"),
        inherit.Inherited("AllowedCPUs", "0-3", "cpuset.cpus.effective of /j"),
        inherit.Inherited("CPUQuota", "50.00%", "cpu.max of /j"),
    ]
    given = (("MemoryMax", "32M"), ("TasksMax", "100"), ("AllowedCPUs", "2-5"))
    assert dict(inherit.merged(given, inherited)) == {
        "MemoryMax": "32M",
        "TasksMax": "40",
        "AllowedCPUs": "2-3",
        "CPUQuota": "50.00%",
    }


def test_limits_that_cannot_be_merged_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    cpus = [inherit.Inherited("AllowedCPUs", "0-1", "cpuset.cpus.effective of /j")]
    with pytest.raises(UsageError, match="share no CPU"):
        inherit.merged((("AllowedCPUs", "4"),), cpus)
    memory = [inherit.Inherited("MemoryMax", "1000", "memory.max of /j")]
    with pytest.raises(UsageError, match="cannot be compared"):
        inherit.merged((("MemoryMax", "50%"),), memory)


def test_this_process_has_a_cgroup_to_inherit_from() -> None:
    assert inherit.own_group().startswith("/")
