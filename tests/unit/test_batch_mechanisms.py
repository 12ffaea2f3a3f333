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

from slotmgr import launchwatch
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


def watch(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-I", "-S", launchwatch.__file__, *args])


def test_the_watcher_exits_once_its_launcher_is_gone_by_sigkill() -> None:
    launcher = subprocess.Popen(["sleep", "600"])
    started = launchwatch.start_time(launcher.pid)
    assert started is not None
    watcher = watch(str(launcher.pid), str(started))
    try:
        time.sleep(0.3)
        assert watcher.poll() is None  # waits while the launcher runs
        launcher.kill()
        launcher.wait()
        assert watcher.wait(timeout=10) == 0
    finally:
        for proc in (launcher, watcher):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_pid_that_names_another_process_now_is_never_waited_for() -> None:
    other = subprocess.Popen(["sleep", "600"])
    try:
        started = launchwatch.start_time(other.pid)
        assert started is not None
        # The launcher's start time was another: the PID has been reused.
        assert watch(str(other.pid), str(started + 1)).wait(timeout=10) == 0
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_launcher_gone_before_the_watcher_starts_ends_it_at_once() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert watch(str(gone.pid), "1").wait(timeout=10) == 0


@pytest.mark.parametrize("args", [(), ("12",), ("x", "1"), ("1", "-2"), ("1", "2", "3")])
def test_the_watcher_refuses_arguments_it_cannot_read(args: tuple[str, ...]) -> None:
    assert watch(*args).wait(timeout=10) == launchwatch.USAGE_ERROR


def test_start_time_reads_past_a_command_name_with_spaces_and_parentheses(
    tmp_path: Path,
) -> None:
    odd = tmp_path / "a) b ("
    odd.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(odd), "600"])
    try:
        time.sleep(0.1)
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert launchwatch.start_time(proc.pid) == int(fields[19])
    finally:
        proc.kill()
        proc.wait()


# -- the job bound to it --------------------------------------------------------------


def test_a_bound_job_binds_to_and_starts_after_its_watcher_which_holds_no_privilege() -> None:
    job = spec(launcher=(4321, 99))
    props = {p.name: p.value for p in unit_properties(job, V252)}
    watcher = launcher_unit_for(RUN)
    assert props["BindsTo"] == [watcher] and props["After"] == [watcher]
    ((name, aux),) = binding.aux_units(job)
    shown = {p.name: p.value for p in aux}
    assert name == watcher == f"slotmgr-launcher-{RUN}.service"
    assert shown["ExecStart"] == [
        (
            "/usr/bin/python3",
            ["/usr/bin/python3", "-I", "-S", binding.LAUNCHWATCH, "4321", "99"],
            False,
        )
    ]
    assert shown["DynamicUser"] is True and shown["Slice"] == "slotmgr.slice"
    assert shown["CollectMode"] == "inactive-or-failed"
    assert "LogExtraFields" not in shown  # no marker: the watcher is no job
    # The stop hook is told which unit watches the launcher.
    assert stop_hook_argv(job)[-1] == watcher


def test_a_user_managers_watcher_is_the_users_and_an_unbound_job_has_none() -> None:
    ((_, aux),) = binding.aux_units(spec(launcher=(1, 2), user_manager=True))
    assert "DynamicUser" not in {p.name for p in aux}
    unbound = {p.name for p in unit_properties(spec(), V252)}
    assert "BindsTo" not in unbound and binding.aux_units(spec()) == []
    assert len(stop_hook_argv(spec())) == 6  # the hook's earlier form, as live units have it


def test_the_launcher_is_this_process() -> None:
    pid, started = binding.this_launcher()
    assert pid == os.getpid() and started == launchwatch.start_time(pid)


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
