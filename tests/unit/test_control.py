"""Job control without a bus: naming jobs, reading units, who may do what,
and the process checks of adopt."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import pytest

from slotmgr.caller import Caller
from slotmgr.errors import ExitCode, PermissionDenied, SlotmgrError, UsageError
from slotmgr.job import adopt, control, stopping
from slotmgr.job.control import Action, JobInfo
from slotmgr.kernel import cgroup, procs
from slotmgr.systemd.manager import Manager, UnitState
from slotmgr.systemd.values import UINT64_MAX

NOW = 1_700_000_100.0
PROPS = {
    "ActiveState": "active",
    "SubState": "running",
    "FreezerState": "running",
    "Slice": "slotmgr-slot2.slice",
    "User": "",
    "InactiveExitTimestamp": 1_700_000_000_000_000,
    "CPUUsageNSec": 2_500_000_000,
    "MemoryCurrent": 12 * 1024**2,
    "TasksCurrent": 3,
    "MainPID": 4242,
    "ControlGroup": "/slotmgr.slice/slotmgr-slot2.slice/slotmgr-ab12.service",
    "LogExtraFields": [b"SLOTMGR_JOB=ab12"],
    "Description": "slotmgr job ab12: sleep 9",
}


def info(**changes: object) -> JobInfo:
    return control.job_info("slotmgr-ab12.service", {**PROPS, **changes}, owner_uid=0, now=NOW)


def test_job_info_from_unit_properties() -> None:
    job = info()
    assert (job.job_id, job.unit, job.slot, job.user, job.uid) == (
        "ab12",
        "slotmgr-ab12.service",
        "2",
        "root",
        0,
    )
    assert job.state == "active/running"
    assert job.runtime_usec == 100_000_000 and job.start_time == 1_700_000_000.0
    assert job.cpu_usage_usec == 2_500_000 and job.memory_current_bytes == 12 * 1024**2
    assert job.tasks_current == 3 and job.main_pid == 4242
    assert job.to_dict()["state"] == "active/running"


def test_job_info_unavailable_figures_are_none_and_frozen_shows() -> None:
    job = info(
        MemoryCurrent=UINT64_MAX,
        TasksCurrent=UINT64_MAX,
        CPUUsageNSec=UINT64_MAX,
        InactiveExitTimestamp=0,
        MainPID=0,
        FreezerState="frozen",
        Slice="slotmgr.slice",
    )
    assert job.memory_current_bytes is None and job.tasks_current is None
    assert job.cpu_usage_usec is None and job.runtime_usec is None and job.main_pid is None
    assert job.slot is None
    assert job.state == "active/running (frozen)"


def test_job_user_from_user_property_name_number_or_owner() -> None:
    nobody = pwd.getpwnam("nobody")
    assert (info(User="nobody").user, info(User="nobody").uid) == ("nobody", nobody.pw_uid)
    assert info(User=str(nobody.pw_uid)).user == "nobody"
    assert info(User="no-such-user-xyz").uid == -1  # nobody's: only root may act on it
    owned = control.job_info("slotmgr-x.scope", PROPS, owner_uid=nobody.pw_uid, now=NOW)
    assert owned.user == "nobody"


def test_job_info_takes_the_id_from_the_marker_not_the_name() -> None:
    job = control.job_info("ux-named.service", PROPS, owner_uid=0, now=NOW)
    assert (job.job_id, job.unit, job.command) == ("ab12", "ux-named.service", [])
    with pytest.raises(control.NotAJob, match=r"'slotmgr-ab12\.service' is not a slotmgr job"):
        control.job_info(
            "slotmgr-ab12.service", {**PROPS, "LogExtraFields": []}, owner_uid=0, now=NOW
        )


class FakeManager:
    """Loaded units (name -> properties) as GetUnit, GetAll and
    ListUnitsByPatterns show them."""

    def __init__(self, units: dict[str, dict[str, object]]) -> None:
        self.units = units
        self.listed = 0

    def unit_path(self, name: str) -> str | None:
        return f"/unit/{name}" if name in self.units else None

    def unit_properties(self, name: str, interface: str = "") -> dict[str, object]:
        return self.units[name]

    def list_units(
        self, patterns: Sequence[str], states: Sequence[str] = ()
    ) -> list[tuple[str, str, str, object]]:
        self.listed += 1
        assert tuple(patterns) == ("*.service", "*.scope")
        return [
            (name, str(p.get("Description", "")), "loaded", p.get("ActiveState", ""))
            for name, p in self.units.items()
            if not states or p["ActiveState"] in states
        ]


def marked(job_id: str, **changes: object) -> dict[str, object]:
    return {
        **PROPS,
        "LogExtraFields": [f"SLOTMGR_JOB={job_id}".encode()],
        "Description": f"slotmgr job {job_id}: sleep 9",
        **changes,
    }


def test_find_job_by_id_under_its_default_name_without_listing() -> None:
    manager = FakeManager({"slotmgr-ab12.service": marked("ab12")})
    assert control.find_job(cast(Manager, manager), "ab12")[0] == "slotmgr-ab12.service"
    assert manager.listed == 0


def test_find_job_by_id_or_unit_whatever_its_unit_is_named() -> None:
    manager = FakeManager(
        {
            "ux-named.service": marked("ab12"),
            "sshd.service": {**PROPS, "LogExtraFields": [], "Description": "OpenSSH server"},
        }
    )
    assert control.find_job(cast(Manager, manager), "ab12")[0] == "ux-named.service"
    assert control.find_job(cast(Manager, manager), "ux-named.service")[0] == "ux-named.service"
    with pytest.raises(control.NotAJob, match=r"'sshd\.service' is not a slotmgr job"):
        control.find_job(cast(Manager, manager), "sshd.service")
    with pytest.raises(UsageError, match="no such job 'zz'"):
        control.find_job(cast(Manager, manager), "zz")


def test_a_description_alone_does_not_make_a_job() -> None:
    """A service that says it is job ab12 but has no marker (or another's) is none."""
    manager = FakeManager(
        {
            "fake.service": marked("ab12", LogExtraFields=[]),
            "other.service": marked("ab12", LogExtraFields=[b"SLOTMGR_JOB=zz"]),
            "slotmgr-ab12.service": marked(
                "ab12", LogExtraFields=[b"SLOTMGR_JOB=ab12", b"SLOTMGR_JOB=zz"]
            ),
        }
    )
    with pytest.raises(UsageError, match="no such job 'ab12'"):
        control.find_job(cast(Manager, manager), "ab12")
    # What the marker says counts: other.service is job zz.
    assert [(j.unit, j.job_id) for j in control.list_jobs(cast(Manager, manager), ROOT)] == [
        ("other.service", "zz")
    ]


def test_list_jobs_finds_jobs_by_marker() -> None:
    manager = FakeManager(
        {
            "ux-named.service": marked("ab12"),
            "slotmgr-cd.service": marked("cd", InactiveExitTimestamp=1_699_000_000_000_000),
            "slotmgr-old.service": marked("old", ActiveState="inactive"),
            "slotmgr-lookalike.service": {**PROPS, "LogExtraFields": [], "Description": "x"},
        }
    )
    assert [j.job_id for j in control.list_jobs(cast(Manager, manager), ROOT)] == ["cd", "ab12"]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("a b", "invalid job 'a b'"),
        ("../x", "invalid job '../x'"),
        ("slotmgr-a b.service", "invalid unit name"),
    ],
)
def test_job_argument_refused(arg: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        control.check_job_argument(arg)


ROOT = Caller(uid=0, user_mode=False)
ALICE = Caller(uid=1000, user_mode=False)
ALICE_USER_MANAGER = Caller(uid=1000, user_mode=True)


def owned_by(uid: int) -> JobInfo:
    return control.job_info("slotmgr-ab12.service", PROPS, owner_uid=uid, now=NOW)


@pytest.mark.parametrize("action", list(Action))
def test_root_and_user_managers_may_do_everything(action: Action) -> None:
    control.check_permission(ROOT, owned_by(1000), action)
    control.check_permission(ALICE_USER_MANAGER, owned_by(1000), action)


@pytest.mark.parametrize("action", list(Action))
def test_non_root_may_not_touch_other_users_system_jobs(action: Action) -> None:
    with pytest.raises(
        PermissionDenied,
        match=f"job ab12 belongs to root: you may {action.value} only your own jobs",
    ) as err:
        control.check_permission(ALICE, owned_by(0), action)
    assert err.value.exit_code == ExitCode.NO_PERMISSION == 77  # type: ignore[comparison-overlap]  # an IntEnum member equals its int


@pytest.mark.parametrize("action", [Action.STOP, Action.KILL, Action.ADOPT])
def test_non_root_may_not_control_even_their_own_system_jobs(action: Action) -> None:
    with pytest.raises(PermissionDenied) as err:
        control.check_permission(ALICE, owned_by(1000), action)
    message = err.value.one_line()
    assert f"{action.value} of job ab12 needs root" in message
    assert f"`slotmgr --user {action.value}`" in message and "slotmgr --user run" in message


@pytest.mark.parametrize("action", [Action.LIST, Action.STATUS])
def test_non_root_may_look_at_their_own_system_jobs(action: Action) -> None:
    control.check_permission(ALICE, owned_by(1000), action)
    assert control.visible(ALICE, owned_by(1000)) and not control.visible(ALICE, owned_by(0))
    assert control.visible(ROOT, owned_by(1000))


@pytest.mark.parametrize(
    ("state", "gone", "finished"),
    [
        (None, True, True),
        (("inactive", "dead"), True, True),
        (("failed", "failed"), True, True),
        (("active", "running"), False, False),
        (("deactivating", "stop-sigterm"), False, False),  # the job's processes still run
        (("deactivating", "stop-post"), True, False),  # the recorder runs: never kill it
        (("deactivating", "final-sigterm"), True, False),
        (("active", "abandoned"), False, False),
    ],
)
def test_states_for_stop(state: tuple[str, str] | None, gone: bool, finished: bool) -> None:
    unit_state = None if state is None else UnitState(*state)
    assert stopping.processes_gone(unit_state) is gone
    assert stopping.is_finished(unit_state) is finished


def test_parse_pids() -> None:
    assert adopt.parse_pids(["12", "7", "12"]) == [12, 7]
    for bad in ("1", "0", "-3", "x", "1.5", ""):
        with pytest.raises(UsageError, match="invalid PID"):
            adopt.parse_pids([bad])


# -- adopt's process checks ------------------------------------------------------------


def process(uid: int = 1000, cgroup: str = "/user.slice/session-1.scope") -> procs.ProcessInfo:
    return procs.ProcessInfo(
        pid=777, start_time=5, uids=(uid, uid, uid, uid), cgroup=cgroup, comm="mpi agent"
    )


def test_adoptable_process_of_the_jobs_user() -> None:
    assert adopt.check_adoptable(process(), owned_by(1000)) is True


def test_adopt_refuses_another_users_process() -> None:
    with pytest.raises(
        PermissionDenied,
        match=r"process 777 \(mpi agent\) belongs to root "
        r"\(uid 0\), job ab12 to ",
    ):
        adopt.check_adoptable(process(uid=0), owned_by(1000))


def test_adopt_refuses_a_setuid_process_with_mixed_ids() -> None:
    mixed = procs.ProcessInfo(pid=9, start_time=1, uids=(1000, 0, 0, 0), cgroup="/", comm="su")
    with pytest.raises(PermissionDenied, match=r"belongs to root \(uid 0\) and "):
        adopt.check_adoptable(mixed, owned_by(1000))


def test_adopt_refuses_a_process_in_another_job_and_skips_one_in_this_job() -> None:
    with pytest.raises(
        PermissionDenied,
        match=r"already in slotmgr job zz9 "
        r"\(ux-other.service\)",
    ):
        adopt.check_adoptable(process(), owned_by(1000), ("ux-other.service", "zz9"))
    assert (
        adopt.check_adoptable(process(), owned_by(1000), ("slotmgr-ab12.service", "ab12")) is False
    )


def test_job_of_process_is_the_marked_unit_systemd_names() -> None:
    class ByPid:
        def __init__(self, unit: str, props: dict[str, object]) -> None:
            self.found = (unit, props)

        def unit_of_pid(self, pid: int) -> tuple[str, dict[str, object]]:
            return self.found

    assert control.job_of_process(cast(Manager, ByPid("ux.service", marked("q"))), 9) == (
        "ux.service",
        "q",
    )
    # A user's own `systemd-run --user --unit slotmgr-q.service`: in their user@UID.service.
    assert (
        control.job_of_process(
            cast(Manager, ByPid("user@1000.service", {**PROPS, "LogExtraFields": []})), 9
        )
        is None
    )


def test_parse_stat_with_a_hostile_name() -> None:
    text = "123 (a) b (c) S 1 123 123 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2 3"
    assert procs.parse_stat(text) == ("a) b (c", 98765)


def test_parse_status_uids_and_cgroup() -> None:
    assert procs.parse_status_uids("Name:\tx\nUid:\t1\t2\t3\t4\nGid:\t0\t0\t0\t0\n") == (1, 2, 3, 4)
    assert (
        procs.parse_cgroup("1:name=systemd:/x\n0::/slotmgr.slice/a.service\n")
        == "/slotmgr.slice/a.service"
    )
    with pytest.raises(ValueError):
        procs.parse_status_uids("Name: x\n")


def test_pinned_process_reads_itself_and_detects_its_end() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with procs.PinnedProcess(child.pid) as pin:
            assert pin.info.uid == os.getuid() and pin.info.comm.startswith("python")
            assert pin.still_same()
            child.kill()
            child.wait()
            assert not pin.alive() and not pin.still_same()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_pinned_process_notices_a_reused_pid(tmp_path: Path) -> None:
    """A fake /proc whose PID now shows another start time: not the same process."""
    pid = os.getpid()
    real = procs.read_process(pid)
    fake = tmp_path / str(pid)
    fake.mkdir()
    for name in ("stat", "status", "cgroup"):
        (fake / name).write_bytes(Path(f"/proc/{pid}/{name}").read_bytes())
    with procs.PinnedProcess(pid, proc=str(tmp_path)) as pin:
        assert pin.info.start_time == real.start_time and pin.still_same()
        stat = (fake / "stat").read_text()
        head, _, tail = stat.rpartition(")")
        fields = tail.split()
        fields[19] = str(int(fields[19]) + 1)
        (fake / "stat").write_text(head + ") " + " ".join(fields))
        assert pin.alive() and not pin.still_same()
        (fake / "stat").unlink()
        assert not pin.still_same()


def test_no_such_process() -> None:
    with pytest.raises(ProcessLookupError):
        procs.PinnedProcess(2**22 + 12345)


def test_adopt_refuses_a_pid_with_no_process_before_any_bus_call() -> None:
    class NoBus:
        def attach_processes(self, *_a: object) -> None:
            raise AssertionError("must not be called")

        def unit_of_pid(self, *_a: object) -> None:
            raise AssertionError("must not be called")

    with pytest.raises(UsageError, match="no process 4194999"):
        adopt.adopt(NoBus(), owned_by(os.getuid()), [4194999])  # type: ignore[arg-type]


def test_adopt_checks_every_pid_before_moving_any() -> None:
    calls: list[tuple[str, Sequence[int]]] = []

    class Recorder:
        def attach_processes(self, unit: str, pids: Sequence[int]) -> None:
            calls.append((unit, pids))

        def unit_of_pid(self, pid: int) -> tuple[str, dict[str, str]]:
            return ("session-1.scope", {"Description": "Session 1"})

    mine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        job = owned_by(os.getuid())
        outcome = adopt.adopt(
            cast(Manager, Recorder()),
            job,
            [mine.pid],
            user_manager=True,
        )
        assert outcome.adopted == (mine.pid,) and calls == [(job.unit, [mine.pid])]
        calls.clear()
        with pytest.raises(PermissionDenied):
            adopt.adopt(Recorder(), owned_by(4321), [mine.pid])  # type: ignore[arg-type]
        assert calls == []
    finally:
        mine.kill()
        mine.wait()


def test_a_system_job_adopts_by_roots_own_write_to_its_cgroup(tmp_path: Path) -> None:
    """No AttachProcessesToUnit (it needs Delegate=yes): the PID is written to
    the unit's cgroup.procs, and the move is then confirmed."""
    mine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        group = "/slotmgr.slice/slotmgr-ab12.service"
        (tmp_path / group.lstrip("/")).mkdir(parents=True)
        procs_file = tmp_path / group.lstrip("/") / "cgroup.procs"
        procs_file.write_text("")
        with procs.PinnedProcess(mine.pid) as pin:
            # A fake cgroup tree moves nothing: the confirmation says so.
            with pytest.raises(SlotmgrError, match=f"process {mine.pid} is in .*, not {group}"):
                adopt.move_into_cgroup(pin, group, root=str(tmp_path))
            assert procs_file.read_text() == str(mine.pid)
            with pytest.raises(UsageError, match="is gone: the job has ended"):
                adopt.move_into_cgroup(pin, "/gone.service", root=str(tmp_path))
            mine.kill()
            mine.wait()
            procs_file.write_text("")
            with pytest.raises(UsageError, match="ended while it was checked"):
                adopt.move_into_cgroup(pin, group, root=str(tmp_path))
            assert procs_file.read_text() == ""  # a dead process's PID is never written
    finally:
        mine.kill()
        mine.wait()


def test_cgroup_files(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "memory.max").write_text("max\n")
    (tmp_path / "g" / "memory.current").write_text("4096\n")
    assert cgroup.read_int("/g", "memory.max", root=str(tmp_path)) is None
    assert cgroup.read_int("/g", "memory.current", root=str(tmp_path)) == 4096
    assert cgroup.read_int("/g", "nope", root=str(tmp_path)) is None
    assert cgroup.read_file("/g", "memory.max", root=str(tmp_path)) == "max"
    (tmp_path / "g" / "cpu.stat").write_text(
        "usage_usec 30\nuser_usec 20\nsystem_usec 10\nnr_x 1\n"
    )
    assert cgroup.cpu_stat("/g", root=str(tmp_path)) == {
        "usage_usec": 30,
        "user_usec": 20,
        "system_usec": 10,
    }
    (tmp_path / "g" / "sub").mkdir()
    (tmp_path / "g" / "cgroup.procs").write_text("7\n")
    (tmp_path / "g" / "sub" / "cgroup.procs").write_text("8\n9\n")
    assert sorted(cgroup.pids("/g", root=str(tmp_path))) == [7, 8, 9]


def test_wait_for_times_out_and_reads_state_again() -> None:
    class FakeManager:
        """What stopping asks of the systemd layer: a unit's state, and a wait
        for its next change (none comes here: each wait ends by time)."""

        def __init__(self, states: Iterator[UnitState]) -> None:
            self.states = states
            self.waits: list[float | None] = []

        def unit_state(self, unit: str) -> UnitState:
            return next(self.states)

        def wait_for_unit_change(self, unit: str, *, timeout: float | None) -> None:
            assert timeout is not None
            self.waits.append(timeout)
            time.sleep(min(timeout, 0.05))

    running = FakeManager(iter(lambda: UnitState("active", "running"), None))
    with pytest.raises(TimeoutError):
        stopping.wait_for(
            cast(Manager, running), "slotmgr-x.service", stopping.is_finished, timeout=0.2
        )
    assert running.waits and all(t is not None and 0 <= t <= 0.2 for t in running.waits)
    ending = FakeManager(
        iter([UnitState("active", "running"), UnitState("deactivating", "stop-post")])
    )
    assert stopping.wait_for(
        cast(Manager, ending), "slotmgr-x.service", stopping.processes_gone, timeout=5
    ) == UnitState("deactivating", "stop-post")
    assert ending.waits == [1.0]  # woken at least every second to read the state again


def test_one_rule_decides_whose_jobs_and_records_a_caller_sees() -> None:
    """slotmgr.caller holds it; job control and the history both ask it."""
    assert ROOT.owns(1000) and ALICE_USER_MANAGER.owns(0)
    assert ALICE.owns(1000) and not ALICE.owns(1001) and not ALICE.owns(0)


def test_a_units_user_reads_the_same_for_job_control_and_records() -> None:
    """User= may be a name or a number; both layers ask slotmgr.caller.user_of."""
    from slotmgr.caller import user_of

    assert user_of("root", 1234) == ("root", 0)
    assert user_of("0", 1234) == ("root", 0)  # a number is looked up too
    assert user_of("", 0) == ("root", 0)  # no User=: the manager's own
    assert user_of("4000000000", 0) == ("4000000000", 4000000000)  # no such entry
    assert user_of("no-such-user-here", 0) == ("no-such-user-here", -1)
