"""From a JobSpec to the unit's property list, per systemd version."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slotmgr.history.hook import HOOK
from slotmgr.job.isolation import isolation_lines
from slotmgr.job.spec import (
    PIDSHIM,
    JobSpec,
    check_command,
    command_from_exec_argv,
    command_of_unit,
    complete_unit_name,
    exec_argv,
    expand_output_name,
    stop_hook_argv,
    unit_name_for,
    unit_properties,
)
from slotmgr.naming import job_id_of_unit
from slotmgr.systemd.features import Features, features_from_version
from slotmgr.systemd.wire import Property

CATATONIT = "/usr/libexec/catatonit/catatonit"
V252 = features_from_version("252")
V257 = features_from_version("257")


def spec(**kw: Any) -> JobSpec:
    base: dict[str, Any] = dict(
        command=("sleep", "1"),
        job_id="ab12",
        unit="slotmgr-ab12.service",
        history_db="/var/lib/slotmgr/history.db",
        python="/usr/bin/python3",
    )
    base.update(kw)
    return JobSpec(**base)


def props_of(s: JobSpec, features: Features, **kw: Any) -> dict[str, Property]:
    return {p.name: p for p in unit_properties(s, features, **kw)}


def test_252_uses_the_shim_to_make_the_pid_namespace() -> None:
    props = props_of(spec(), V252)
    argv = props["ExecStart"].value[0][1]
    # env(1) starts the shim with signals blocked, so a stop during its start is kept.
    assert argv == [
        "/usr/bin/env",
        "--block-signal",
        "/usr/bin/python3",
        "-I",
        "-S",
        PIDSHIM,
        "--unshare",
        "--started-blocked",
        "--",
        "sleep",
        "1",
    ]
    assert "PrivatePIDs" not in props
    assert props["PrivateTmp"].value is True


def test_257_lets_systemd_make_it_and_runs_the_shim_as_pid_1() -> None:
    props = props_of(spec(), V257)
    argv = props["ExecStartEx"].value[0][1]
    assert argv == [
        "/usr/bin/env",
        "--block-signal",
        "/usr/bin/python3",
        "-I",
        "-S",
        PIDSHIM,
        "--started-blocked",
        "--",
        "sleep",
        "1",
    ]
    assert props["PrivatePIDs"].value == "yes"


def test_a_scope_shim_is_not_started_blocked() -> None:
    argv = exec_argv(spec(scope=True), V257)
    assert argv[0] != "/usr/bin/env" and "--started-blocked" not in argv
    assert argv[argv.index("--") + 1 :] == ["sleep", "1"]


def test_isolation_can_be_turned_off() -> None:
    props = props_of(
        spec(private_pids=False, private_tmp=False, private_ipc=False, private_shm=False), V257
    )
    assert props["ExecStartEx"].value[0][1] == ["sleep", "1"]
    for key in (
        "PrivatePIDs",
        "PrivateTmp",
        "PrivateIPC",
        "TemporaryFileSystem",
        "BindPaths",
        "PrivateNetwork",
    ):
        assert key not in props


@pytest.mark.parametrize("features", [V252, V257])
def test_a_system_job_is_never_delegated_a_user_managers_is(features: Features) -> None:
    # Delegate=yes would hand the unit's cgroup to the job's user, who could
    # freeze a sub-cgroup and hang PID 1 (issue 9, finding 3).
    assert "Delegate" not in props_of(spec(), features)
    assert "Delegate" not in props_of(spec(scope=True, unit="slotmgr-ab12.scope"), features)
    assert props_of(spec(user_manager=True), features)["Delegate"].value is True


@pytest.mark.parametrize("features", [V252, V257])
def test_ipc_and_shm_are_private_by_default(features: Features) -> None:
    props = props_of(spec(), features)
    assert props["PrivateIPC"].value is True
    assert props["TemporaryFileSystem"].value == [("/dev/shm", "mode=1777,nosuid,nodev")]
    assert "PrivateNetwork" not in props
    assert props_of(spec(private_network=True), features)["PrivateNetwork"].value is True


def test_a_scope_gets_its_isolation_from_the_shim() -> None:
    argv = exec_argv(spec(scope=True, landlock_scope=True), V257)
    shim = argv[: argv.index("--")]
    assert shim[shim.index(PIDSHIM) + 1 :] == [
        "--unshare",
        "--private-tmp",
        "--private-ipc",
        "--private-shm",
        "--landlock-scope",
    ]
    argv = exec_argv(spec(scope=True, private_ipc=False, private_shm=False), V257)
    assert "--private-ipc" not in argv and "--private-shm" not in argv


def test_the_init_scopes_with_landlock_only_when_asked() -> None:
    assert "--landlock-scope" not in exec_argv(spec(), V257)
    assert "--landlock-scope" in exec_argv(spec(landlock_scope=True), V252)


SCRATCH = "/var/lib/slotmgr/scratch/ab12"


def test_scratch_hides_the_other_jobs_and_is_exported() -> None:
    props = props_of(spec(scratch_dir=SCRATCH, environment=("SLOTMGR_SCRATCH=/elsewhere",)), V257)
    assert props["TemporaryFileSystem"].value == [
        ("/dev/shm", "mode=1777,nosuid,nodev"),
        ("/var/lib/slotmgr/scratch", "mode=0755,nosuid,nodev"),
    ]
    assert props["BindPaths"].value == [(SCRATCH, SCRATCH, False, 0)]
    argv = props["ExecStartEx"].value[0][1]
    # In the job's own env(1), after the init; last, so that the job's -E cannot move it.
    assert argv[argv.index("--", argv.index(PIDSHIM)) :][:4] == [
        "--",
        "/usr/bin/env",
        "--",
        "SLOTMGR_SCRATCH=/elsewhere",
    ]
    assert argv[: argv.index("sleep")][-1] == f"SLOTMGR_SCRATCH={SCRATCH}"
    assert command_from_exec_argv(argv) == ["sleep", "1"]


def test_scratch_is_removed_by_the_unit_with_rm_unless_kept() -> None:
    # The hook runs in the job's mount namespace (where the directory is a bind
    # mount) but the node's PID namespace: the node's directory through PID 1.
    rm = ["/usr/bin/rm", "-rf", "--one-file-system", "--", "/proc/1/root" + SCRATCH]
    props = props_of(spec(scratch_dir=SCRATCH), V257)
    hook, removal = props["ExecStopPostEx"].value  # the record first: it must not be lost
    assert hook[1][:2] == ["/bin/sh", HOOK]
    assert removal == ("/usr/bin/rm", rm, ["privileged", "ignore-failure", "no-env-expand"])
    _hook, removal252 = props_of(spec(scratch_dir=SCRATCH), V252)["ExecStopPost"].value
    assert removal252 == ("/usr/bin/rm", rm, True)
    kept = props_of(spec(scratch_dir=SCRATCH, keep_scratch=True), V257)
    assert len(kept["ExecStopPostEx"].value) == 1


def test_isolation_lines_say_what_the_job_got() -> None:
    full = spec(scratch_dir=SCRATCH, landlock_scope=True)
    assert isolation_lines(full) == [
        "isolation: pids, tmp, ipc, shm, scratch, abstract-sockets(landlock), signals(landlock)",
        "init: pidshim (Landlock scope)",
    ]
    old_kernel = spec(
        landlock_missing="kernel lacks Landlock ABI 6 (has 3); use --private-network",
        catatonit=CATATONIT,
    )
    assert isolation_lines(old_kernel) == [
        "isolation: pids, tmp, ipc, shm",
        "abstract sockets: shared, kernel lacks Landlock ABI 6 (has 3); use --private-network",
        "init: catatonit",
    ]
    assert isolation_lines(spec(private_network=True, init_why="no catatonit installed")) == [
        "isolation: pids, tmp, ipc, shm, network",
        "init: pidshim (no catatonit installed)",
    ]
    bare = spec(scope=True, private_pids=False)
    assert isolation_lines(bare) == ["isolation: none", "abstract sockets: shared, not scoped"]


def test_accounting_is_always_on_and_the_stop_hook_is_privileged() -> None:
    props = props_of(spec(slot="3"), V257)
    for key in (
        "CPUAccounting",
        "MemoryAccounting",
        "IOAccounting",
        "TasksAccounting",
        "IPAccounting",
    ):
        assert props[key].value is True
    _path, argv, flags = props["ExecStopPostEx"].value[0]
    assert set(flags) == {"privileged", "ignore-failure", "no-env-expand"}
    assert argv[:2] == ["/bin/sh", HOOK]  # no interpreter of slotmgr's in the job's stop
    assert props["ExecStartEx"].value[0][2] == ["no-env-expand"]
    assert props["CollectMode"].value == "inactive-or-failed"


def test_252_commands_survive_a_daemon_reload() -> None:
    """252 loses ExecStartEx=/ExecStopPostEx= of a transient unit at a
    daemon-reload: there the plain properties carry the same meaning."""
    s = spec(slot="3", command=("sh", "-c", "echo $HOME ${X} $$"))
    props = props_of(s, V252)
    assert "ExecStartEx" not in props and "ExecStopPostEx" not in props
    path, argv, ignore_failure = props["ExecStart"].value[0]
    assert (path, ignore_failure) == ("/usr/bin/env", False)
    assert argv[-3:] == ["sh", "-c", "echo $$HOME $${X} $$$$"]  # "$$" is a literal "$"
    path, argv, ignore_failure = props["ExecStopPost"].value[0]
    assert ignore_failure is True and argv == stop_hook_argv(s)
    assert props["PermissionsStartOnly"].value is True  # the stop hook runs as root
    # What systemd reports back is turned into the job's own command again.
    reported: dict[str, Any] = {
        "ExecStartEx": [(path, props["ExecStart"].value[0][1], [], 0, 0, 0, 0, 0, 0, 0)]
    }
    assert command_of_unit(reported) == ["sh", "-c", "echo $HOME ${X} $$"]
    ex = props_of(s, V257)["ExecStartEx"].value[0]
    assert command_of_unit({"ExecStartEx": [(*ex, 0, 0, 0, 0, 0, 0, 0)]}) == list(s.command)


@pytest.mark.parametrize("features", [V252, V257])
def test_environment_goes_through_env_not_the_unit(features: Features) -> None:
    s = spec(environment=("A=1", "LD_PRELOAD=/x.so"), user="nobody")
    props = props_of(s, features)
    assert "Environment" not in props
    key = "ExecStartEx" if features is V257 else "ExecStart"
    argv = props[key].value[0][1]
    # Not in front of the shim (which holds CAP_SYS_ADMIN on 252): only the
    # job's own exec, after the shim's "--", gets the job's variables.
    shim_end = argv.index("--")
    assert argv[0] == "/usr/bin/env" and argv[1] == "--block-signal"
    assert not any("=" in arg for arg in argv[:shim_end])
    assert argv[shim_end + 1 :] == ["/usr/bin/env", "--", "A=1", "LD_PRELOAD=/x.so", "sleep", "1"]
    assert command_from_exec_argv(argv) == ["sleep", "1"]


def test_without_a_shim_one_env_sets_the_variables() -> None:
    argv = exec_argv(spec(environment=("A=1",), private_pids=False), V257)
    assert argv == ["/usr/bin/env", "--", "A=1", "sleep", "1"]
    assert command_from_exec_argv(argv) == ["sleep", "1"]


def test_commands_of_units_made_by_the_earlier_layout_still_read_back() -> None:
    old = [
        "/usr/bin/env",
        "--block-signal",
        "A=1",
        "/usr/bin/python3",
        "-I",
        "-S",
        PIDSHIM,
        "--started-blocked",
        "--",
        "sleep",
        "1",
    ]
    assert command_from_exec_argv(old) == ["sleep", "1"]


def test_only_a_user_job_on_252_gets_the_ambient_capability() -> None:
    assert props_of(spec(user="nobody"), V252)["AmbientCapabilities"].value == 1 << 21
    root = props_of(spec(user="root"), V252)
    assert "AmbientCapabilities" not in root and root["User"].value == "root"
    assert "AmbientCapabilities" not in props_of(spec(user="nobody"), V257)


def test_working_directory_keeps_the_recorder_running_if_the_job_removes_it() -> None:
    assert props_of(spec(working_directory="/srv/x"), V257)["WorkingDirectory"].value == "-/srv/x"


@pytest.mark.parametrize(
    ("name", "scope", "expected"),
    [
        ("ux-named", False, "ux-named.service"),
        ("ux-named.service", False, "ux-named.service"),
        ("my.job", False, "my.job.service"),
        ("ux", True, "ux.scope"),
        ("ux.scope", True, "ux.scope"),
    ],
)
def test_unit_names_get_the_jobs_type_as_systemd_run_adds_it(
    name: str, scope: bool, expected: str
) -> None:
    assert complete_unit_name(name, scope=scope) == expected


@pytest.mark.parametrize(
    ("name", "scope"),
    [
        ("ux.scope", False),
        ("ux.service", True),
        ("ux.timer", False),
        ("ux.slice", False),
    ],
)
def test_a_unit_name_of_another_type_is_refused(name: str, scope: bool) -> None:
    with pytest.raises(ValueError, match=r"must end in \.(service|scope)"):
        complete_unit_name(name, scope=scope)


def test_output_names_take_sbatchs_escapes() -> None:
    assert expand_output_name("out-%j.%u.log", job_id="ab12", user="alice") == "out-ab12.alice.log"
    assert expand_output_name("100%%-%j", job_id="ab12", user="alice") == "100%-ab12"
    for bad in ("x-%x", "x-%", "%J"):
        with pytest.raises(ValueError, match="%j"):
            expand_output_name(bad, job_id="ab12", user="alice")


def test_check_command_resolves_from_the_working_directory(tmp_path: Path) -> None:
    simulate = tmp_path / "simulate"
    simulate.write_text("#!/bin/sh\n")
    simulate.chmod(0o755)
    assert check_command(["./simulate"], cwd=str(tmp_path)) == str(tmp_path / "simulate")
    with pytest.raises(FileNotFoundError):
        check_command(["./simulate"], cwd="/")


@pytest.mark.parametrize("features", [V252, V257])
def test_command_from_exec_argv_inverts_exec_argv(features: Features) -> None:
    for s in (
        spec(),
        spec(private_pids=False),
        spec(environment=("X=y",)),
        spec(command=("sh", "-c", "echo -- $HOME")),
    ):
        assert command_from_exec_argv(exec_argv(s, features)) == list(s.command)


def test_stdio_fds_and_limits() -> None:
    props = props_of(spec(limits=(("MemoryMax", "1G"),)), V252, stdio_fds=(0, 1, 2))
    assert props["StandardOutputFileDescriptor"].value == 1
    assert props["MemoryMax"].value == 1024**3


def test_scope_has_pids_and_no_exec() -> None:
    props = props_of(spec(scope=True, unit="slotmgr-ab12.scope"), V257, scope_pids=[1234])
    assert props["PIDs"].value == [1234]
    assert "ExecStartEx" not in props and "ExecStopPostEx" not in props


def test_names() -> None:
    assert unit_name_for("ab") == "slotmgr-ab.service"
    assert unit_name_for("ab", scope=True) == "slotmgr-ab.scope"
    assert spec().description == "slotmgr job ab12: sleep 1"


@pytest.mark.parametrize("features", [V252, V257], ids=["252", "257"])
def test_every_service_job_carries_its_marker_whatever_its_name(features: Features) -> None:
    props = props_of(spec(unit="ux-named.service"), features)
    assert props["LogExtraFields"].signature == "aay"
    assert props["LogExtraFields"].value == [b"SLOTMGR_JOB=ab12"]
    assert (
        job_id_of_unit(
            "ux-named.service",
            {"LogExtraFields": props["LogExtraFields"].value, "Description": "x"},
        )
        == "ab12"
    )


def test_a_scope_job_is_marked_by_its_description() -> None:
    props = props_of(spec(scope=True, unit="ux.scope"), V257, scope_pids=[1])
    assert "LogExtraFields" not in props  # a scope has no exec context
    assert job_id_of_unit("ux.scope", {"Description": props["Description"].value}) == "ab12"


def test_check_command(tmp_path: Path) -> None:
    assert check_command(["sh"]).endswith("/sh")
    with pytest.raises(FileNotFoundError):
        check_command(["no-such-command-xyz"])
    with pytest.raises(FileNotFoundError):
        check_command([str(tmp_path / "missing")])
    plain = tmp_path / "plain"
    plain.write_text("data")
    os.chmod(plain, stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(PermissionError):  # no x bit at all: not even root may run it
        check_command([str(plain)])
    with pytest.raises(PermissionError):
        check_command([str(tmp_path)])
    with pytest.raises(PermissionError):
        check_command(["plain"], path=str(tmp_path))


def test_stop_timeout_protects_the_stop_hook_unless_given() -> None:
    assert props_of(spec(), V252)["TimeoutStopUSec"].value == 90_000_000
    given = props_of(spec(limits=(("TimeoutStopSec", "5min"),)), V252)
    assert given["TimeoutStopUSec"].value == 300_000_000
    assert "TimeoutStopUSec" not in props_of(spec(scope=True, unit="x.scope"), V252)


def test_the_stop_hook_gets_the_spool_the_run_and_the_manager() -> None:
    s = spec(slot="3", user_manager=True)
    assert stop_hook_argv(s) == ["/bin/sh", HOOK, s.history_db + ".spool", s.run_id, s.unit, "user"]
    assert stop_hook_argv(spec())[-1] == "system"
    assert len(s.run_id) == 32 and s.run_id != spec(slot="3").run_id  # 128 bits, each run


@pytest.mark.parametrize("features", [V252, V257])
def test_status_reads_the_isolation_back_from_the_unit(features: Features) -> None:
    from slotmgr.job.isolation import isolation_of_unit

    full = spec(scratch_dir=SCRATCH, landlock_scope=True, private_network=True)
    props = {name: p.value for name, p in props_of(full, features).items()}
    assert isolation_of_unit(props) == isolation_lines(full)
    bare = spec(private_ipc=False, private_shm=False)
    props = {name: p.value for name, p in props_of(bare, features).items()}
    assert isolation_of_unit(props) == [
        "isolation: pids, tmp",
        "abstract sockets: shared, not scoped by Landlock for this job; use --private-network",
        "init: pidshim",
    ]
    # catatonit, with the job's variables and scratch directory after it.
    caught = spec(catatonit=CATATONIT, scratch_dir=SCRATCH, environment=("A=1",), user="nobody")
    props = {name: p.value for name, p in props_of(caught, features).items()}
    assert isolation_of_unit(props) == [
        "isolation: pids, tmp, ipc, shm, scratch",
        "abstract sockets: shared, not scoped by Landlock for this job; use --private-network",
        "init: catatonit",
    ]
    # A scope: its shim's argv, as its process shows it.
    scoped = spec(scope=True, unit="slotmgr-ab12.scope", private_tmp=False)
    props = {name: p.value for name, p in props_of(scoped, features, scope_pids=[7]).items()}
    assert isolation_of_unit(props, [exec_argv(scoped, features)])[0] == "isolation: pids, ipc, shm"


# -- catatonit as the init ---------------------------------------------------------------

UNSHARE = ["/usr/bin/unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--"]
SETPRIV = ["/usr/bin/setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--"]


def test_257_runs_catatonit_as_pid_1_with_the_jobs_env_after_it() -> None:
    props = props_of(spec(catatonit=CATATONIT, environment=("A=1",), user="nobody"), V257)
    assert props["ExecStartEx"].value[0][1] == [
        CATATONIT,
        "--",
        "/usr/bin/env",
        "--default-signal",
        "--",
        "A=1",
        "sleep",
        "1",
    ]
    assert props["PrivatePIDs"].value == "yes"
    assert "KillMode" not in props and "AmbientCapabilities" not in props


def test_252_makes_catatonits_namespace_with_unshare_and_empties_a_users_capabilities() -> None:
    props = props_of(spec(catatonit=CATATONIT, environment=("A=1",), user="nobody"), V252)
    argv = props["ExecStart"].value[0][1]
    # catatonit right after unshare (each exec before it is a time a stop would be
    # lost); setpriv empties the capabilities before the job's own env(1).
    assert argv == [
        *UNSHARE,
        CATATONIT,
        "--",
        *SETPRIV,
        "/usr/bin/env",
        "--default-signal",
        "--",
        "A=1",
        "sleep",
        "1",
    ]
    # Not in front of a capable process: only the job's own env(1) sets variables.
    assert not any("=" in arg and not arg.startswith("--") for arg in argv[: argv.index("A=1")])
    assert props["AmbientCapabilities"].value == 1 << 21
    # unshare(1) forwards no SIGTERM: systemd signals the whole cgroup, as on 257.
    assert "KillMode" not in props and "PrivatePIDs" not in props
    root = props_of(spec(catatonit=CATATONIT, user="root"), V252)
    assert root["ExecStart"].value[0][1] == [
        *UNSHARE,
        CATATONIT,
        "--",
        "/usr/bin/env",
        "--default-signal",
        "--",
        "sleep",
        "1",
    ]
    assert "AmbientCapabilities" not in root


def test_a_scope_and_a_job_without_pid_namespace_never_run_catatonit() -> None:
    argv = exec_argv(spec(catatonit=CATATONIT, scope=True), V257)
    assert PIDSHIM in argv and CATATONIT not in argv
    assert exec_argv(spec(catatonit=CATATONIT, private_pids=False), V252) == ["sleep", "1"]


def inverse_cases() -> Iterator[JobSpec]:
    commands = [
        ("sleep", "1"),
        ("sh", "-c", "echo -- $HOME"),
        ("/usr/bin/env", "-i", "X=1", "id"),
        ("env", "--", "A=1"),
        ("--", "x"),
        (CATATONIT, "--", "true"),
        ("/usr/bin/unshare", "--pid", "true"),
    ]
    shapes: list[dict[str, Any]] = [
        {},
        {"environment": ("X=y", "B=2")},
        {"scratch_dir": SCRATCH},
        {"user": "nobody"},
        {"user": "root"},
        {"private_pids": False},
        {"landlock_scope": True},
        {"scope": True, "unit": "slotmgr-ab12.scope"},
    ]
    for command in commands:
        for shape in shapes:
            for init in (None, CATATONIT):
                yield spec(command=command, catatonit=init, **shape)


@pytest.mark.parametrize("features", [V252, V257])
def test_command_from_exec_argv_inverts_every_form(features: Features) -> None:
    for s in inverse_cases():
        argv = exec_argv(s, features)
        assert command_from_exec_argv(argv) == list(s.command), argv


@pytest.mark.parametrize("features", [V252, V257])
def test_the_unit_reads_back_as_the_jobs_own_command(features: Features) -> None:
    for s in inverse_cases():
        props = {name: p.value for name, p in props_of(s, features).items()}
        if "ExecStart" in props:  # systemd shows it as ExecStartEx too, without flags
            path, argv, _ignore = props["ExecStart"][0]
            props["ExecStartEx"] = [(path, argv, [])]
        if not s.scope:
            assert command_of_unit(props) == list(s.command)


def test_the_init_processes_are_told_from_the_jobs() -> None:
    from slotmgr.job.spec import is_init_argv

    job = ["/usr/bin/env", "--default-signal", "--", "A=1", "sleep", "1"]
    outer = [*UNSHARE, CATATONIT, "--", *SETPRIV, *job]
    assert is_init_argv(outer)  # 252: unshare outside the namespace
    assert is_init_argv(outer[len(UNSHARE) :])  # the namespace's PID 1
    assert is_init_argv([CATATONIT, "--", *job])  # 257's, or a root job's
    assert not is_init_argv([*SETPRIV, *job])  # the job's first process, about to exec it
    assert not is_init_argv(job) and not is_init_argv(["sleep", "1"])
    assert not is_init_argv([CATATONIT, "--", "sleep", "1"])  # not slotmgr's form
    assert is_init_argv(["/usr/bin/python3", "-I", "-S", PIDSHIM, "--", "x"])
    assert not is_init_argv(["/usr/bin/python3", "-I", "-S", "/home/u/pidshim.py", "--", "x"])


def test_status_says_which_init_ran() -> None:
    from slotmgr.job.isolation import isolation_of_unit

    for features in (V252, V257):
        for s, line in (
            (spec(catatonit=CATATONIT), "init: catatonit"),
            (spec(), "init: pidshim"),
            (spec(landlock_scope=True), "init: pidshim (Landlock scope)"),
            (spec(private_pids=False), None),
        ):
            props = {name: p.value for name, p in props_of(s, features).items()}
            lines = isolation_of_unit(props)
            assert (lines[-1] if line else lines[-1][:5]) == (line or lines[-1][:5])
            assert line is not None or not any(x.startswith("init:") for x in lines)
