"""Signal delivery without a bus: when a signal would end the main process, and
signalling a cgroup's processes by pinned PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from slotmgr.errors import BusTimeout
from slotmgr.job import delivery
from slotmgr.job.spec import PIDSHIM
from slotmgr.kernel import cgroup, procs
from slotmgr.systemd.manager import UnitState

HANDLES_USR1 = "SigIgn:\t0000000000000000\nSigCgt:\t0000000000000200\n"  # bit 10: SIGUSR1
IGNORES_TERM = "SigIgn:\t0000000000004000\nSigCgt:\t0000000000000000\n"  # bit 15: SIGTERM
DEFAULTS = "SigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n"


@pytest.mark.parametrize(
    ("signum", "status", "fatal"),
    [
        (signal.SIGKILL, HANDLES_USR1, True),
        (signal.SIGUSR1, HANDLES_USR1, False),
        (signal.SIGUSR1, DEFAULTS, True),
        (signal.SIGTERM, IGNORES_TERM, False),
        (signal.SIGTERM, DEFAULTS, True),
        (signal.SIGCHLD, DEFAULTS, False),
        (signal.SIGWINCH, DEFAULTS, False),
        (signal.SIGSTOP, DEFAULTS, False),
        (signal.SIGCONT, DEFAULTS, False),
        (signal.SIGRTMIN, DEFAULTS, True),
    ],
)
def test_is_fatal(signum: signal.Signals, status: str, fatal: bool) -> None:
    assert delivery.is_fatal(int(signum), "Name:\tx\n" + status) is fatal


def test_is_fatal_reads_a_real_process() -> None:
    # This test process: Python catches SIGINT, SIGTERM is left at its default.
    status = Path("/proc/self/status").read_text()
    assert delivery.is_fatal(signal.SIGINT, status) is False
    assert delivery.is_fatal(signal.SIGTERM, status) is True


CATCHER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGUSR1, lambda *_: (open(sys.argv[1], 'w').close(), "
    "sys.exit(0)))\n"
    "open(sys.argv[1] + '.ready', 'w').close()\n"
    "time.sleep(60)\n"
)


def test_signal_all_but_skips_the_excluded_and_the_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake cgroup directory listing two live children, a PID that is gone,
    and this process; the real /proc says which cgroup each one is in."""
    own = procs.parse_cgroup(Path("/proc/self/cgroup").read_text())
    group_dir = tmp_path / own.lstrip("/")
    group_dir.mkdir(parents=True, exist_ok=True)
    marks = [tmp_path / "a", tmp_path / "b"]
    children = [subprocess.Popen([sys.executable, "-c", CATCHER, str(m)]) for m in marks]
    try:
        deadline = time.monotonic() + 30
        while not all(Path(f"{m}.ready").exists() for m in marks):
            assert time.monotonic() < deadline, "children not ready"
            time.sleep(0.05)
        gone = subprocess.Popen(["true"])
        gone.wait()
        (group_dir / "cgroup.procs").write_text(
            "".join(f"{pid}\n" for pid in (children[0].pid, children[1].pid, gone.pid))
        )
        monkeypatch.setattr(cgroup, "CGROUP_ROOT", str(tmp_path))
        # In a container this process may be in the root cgroup, which
        # signal_all_but refuses (a no_control_group test below): here the
        # fake directory stands in for a job's.
        monkeypatch.setattr(delivery, "is_job_group", lambda group: group == own)
        sent = delivery.signal_all_but(own, {children[1].pid}, signal.SIGUSR1)
        assert sent == 1
        assert children[0].wait(timeout=30) == 0 and marks[0].exists()
        time.sleep(0.5)
        assert children[1].poll() is None and not marks[1].exists()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_signal_all_but_leaves_a_process_of_another_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PID listed under a cgroup it is not in (its number reused) is not signalled."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "elsewhere.slice").mkdir()
        (tmp_path / "elsewhere.slice" / "cgroup.procs").write_text(f"{child.pid}\n")
        monkeypatch.setattr(cgroup, "CGROUP_ROOT", str(tmp_path))
        assert delivery.signal_all_but("/elsewhere.slice", set(), signal.SIGKILL) == 0
        time.sleep(0.2)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


# -- the shims: a signal they would forward goes to the job's processes only ----------

SHIM = ["/usr/bin/python3", "-I", "-S", PIDSHIM]


def test_257_the_init_is_the_main_process_and_not_signalled() -> None:
    table = {
        300: (1, [*SHIM, "--started-blocked", "--", "sh", "-c", "x"]),
        301: (300, ["sh", "-c", "x"]),
        302: (301, ["sleep", "9"]),
    }
    assert delivery.shims_of(table, 300) == {300}
    assert delivery.not_to_signal(table, 300) == {300}


def test_252_the_outer_shim_and_its_init_are_not_signalled() -> None:
    table = {
        200: (1, [*SHIM, "--unshare", "--started-blocked", "--", "job"]),
        201: (200, [*SHIM, "--unshare", "--started-blocked", "--", "job"]),
        202: (201, ["job"]),
    }
    assert delivery.not_to_signal(table, 200) == {200, 201}


def test_a_scope_shim_is_its_top_process() -> None:
    table = {
        500: (77, [*SHIM, "--unshare", "--", "job"]),
        501: (500, [*SHIM, "--unshare", "--", "job"]),
        502: (501, ["job"]),
    }
    assert delivery.not_to_signal(table, 0) == {500, 501}


def test_before_the_command_is_forked_the_innermost_shim_gets_it_to_forward() -> None:
    outer_and_init = {
        200: (1, [*SHIM, "--unshare", "--", "job"]),
        201: (200, [*SHIM, "--unshare", "--", "job"]),
    }
    assert delivery.not_to_signal(outer_and_init, 200) == {200}
    assert delivery.not_to_signal({300: (1, [*SHIM, "--", "job"])}, 300) == set()


def test_a_job_that_only_looks_like_a_shim_lower_down_is_signalled() -> None:
    """Only the top of the job (and a shim's shim child) is a shim: a command of
    the job named like the shim, but started by the job, is the job's."""
    table = {300: (1, [*SHIM, "--", "sh"]), 301: (300, ["sh"]), 302: (301, [*SHIM, "--", "x"])}
    assert delivery.not_to_signal(table, 300) == {300}


def test_without_private_pids_nothing_is_left_out() -> None:
    table = {400: (1, ["sleep", "9"]), 401: (400, ["sleep", "1"])}
    assert delivery.not_to_signal(table, 400) == set()


def test_parse_ppid_with_a_hostile_name() -> None:
    assert procs.parse_ppid("123 (a) 7 (b) S 45 123 123 0 -1") == 45
    assert procs.parent_pid(os.getpid()) == os.getppid()


CATATONIT = ["/usr/libexec/catatonit/catatonit", "--"]
JOB_ENV = ["/usr/bin/env", "--default-signal", "--", "A=1"]
UNSHARE = ["/usr/bin/unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--"]


def test_257_catatonit_is_left_out_and_its_job_signalled() -> None:
    table = {
        300: (1, [*CATATONIT, *JOB_ENV, "sh", "-c", "x"]),
        301: (300, ["sh", "-c", "x"]),
        302: (301, ["sleep", "9"]),
    }
    assert delivery.not_to_signal(table, 300) == {300}


def test_252_unshare_and_catatonit_are_left_out() -> None:
    outer = [*UNSHARE, *CATATONIT, *JOB_ENV, "job"]  # a root job's: no setpriv
    table = {200: (1, outer), 201: (200, [*CATATONIT, *JOB_ENV, "job"]), 202: (201, ["job"])}
    assert delivery.not_to_signal(table, 200) == {200, 201}
    # Before catatonit has forked the job, catatonit gets it (and forwards it).
    assert delivery.not_to_signal({200: (1, outer), 201: (200, outer[len(UNSHARE) :])}, 200) == {
        200
    }


def _always_fatal(_pid: int, _signum: int) -> bool:
    return True


def test_252_sigkill_spares_unshare_and_catatonit_until_the_main_process_gets_it() -> None:
    """252's unshare(1) exits 1 when the init it waits for dies of SIGKILL: the
    shims are left out, and the main process (unshare) is killed after the thaw."""
    outer = [*UNSHARE, *CATATONIT, *JOB_ENV, "job"]
    table = {
        200: (1, outer),
        201: (200, [*CATATONIT, *JOB_ENV, "job"]),
        202: (201, ["job"]),
        203: (202, ["job", "child"]),
    }
    left_out, later = delivery.delivery_plan(table, 200, signal.SIGKILL, _always_fatal)
    assert left_out == {200, 201} and later == 200
    # Before the command is forked, too: the main process alone ends it all.
    only_shims = {200: (1, outer), 201: (200, outer[len(UNSHARE) :])}
    assert delivery.delivery_plan(only_shims, 200, signal.SIGKILL, _always_fatal) == (
        {200, 201},
        200,
    )


def test_257_sigkill_to_a_frozen_job_kills_catatonit_only_after_the_thaw() -> None:
    table = {300: (1, [*CATATONIT, *JOB_ENV, "sh"]), 301: (300, ["sh"])}
    assert delivery.delivery_plan(table, 300, signal.SIGKILL, _always_fatal) == ({300}, 300)


def test_a_forwarded_signal_never_reaches_the_shims_nor_later_the_main_process() -> None:
    outer = [*UNSHARE, *CATATONIT, *JOB_ENV, "job"]
    table = {200: (1, outer), 201: (200, [*CATATONIT, *JOB_ENV, "job"]), 202: (201, ["job"])}
    assert delivery.delivery_plan(table, 200, signal.SIGTERM, _always_fatal) == ({200, 201}, 0)


def test_without_shims_the_main_process_gets_a_fatal_signal_after_the_thaw() -> None:
    table = {400: (1, ["sleep", "9"]), 401: (400, ["sleep", "1"])}
    assert delivery.delivery_plan(table, 400, signal.SIGTERM, _always_fatal) == ({400}, 400)
    harmless = delivery.delivery_plan(table, 400, signal.SIGTERM, lambda _p, _s: False)
    assert harmless == (set(), 0)


def test_no_control_group_names_no_process_of_the_node() -> None:
    """A unit that has just ended shows ControlGroup '': read as a cgroup path
    it would be the root, every process on the node."""
    from slotmgr.job.delivery import is_job_group, signal_all_but

    assert not is_job_group("") and not is_job_group("/") and not is_job_group("//")
    assert not is_job_group("slotmgr.slice/x.service")  # not a path from the root
    assert is_job_group("/slotmgr.slice/slotmgr-ab.service")
    # 0 sent, and this test's own process (in some cgroup of the node) still runs:
    assert signal_all_but("", set(), signal.SIGTERM) == 0
    assert signal_all_but("/", set(), signal.SIGTERM) == 0


class StuckSystemd:
    """Stands for systemd 257 when a job's main process ends in its frozen
    cgroup: PID 1 hangs starting the stop hook there and answers nothing
    until the cgroup is thawed (thawing it is all that helps)."""

    def __init__(self, *, hangs_on_freeze: bool) -> None:
        self.hangs_on_freeze = hangs_on_freeze
        self.cgroup_frozen = False
        self.window: float | None = None  # answers_within's, while inside
        self.calls: list[tuple[str, float | None]] = []
        self.features = SimpleNamespace(cgroup_kill=True)

    @property
    def hung(self) -> bool:
        return self.cgroup_frozen

    def answers_within(self, seconds: float) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def window() -> Iterator[None]:
            self.window = seconds
            try:
                yield
            finally:
                self.window = None

        return window()

    def _call(self, name: str, timeout: float | None = None) -> None:
        waited = timeout if timeout is not None else self.window
        self.calls.append((name, waited))
        if self.hung:
            assert waited is not None, f"{name} would wait systemd's 90 s out"
            raise BusTimeout(f"systemd did not answer {name} in time")

    def freeze(self, _unit: str) -> None:
        self.cgroup_frozen = True  # the main process ends meanwhile: PID 1 hangs
        if self.hangs_on_freeze:
            self._call("FreezeUnit")

    def thaw(self, _unit: str, *, timeout: float | None = None) -> None:
        self._call("ThawUnit", timeout)

    def state(self) -> UnitState:
        self._call("Get ActiveState")
        return UnitState("active", "running")


@pytest.mark.parametrize("hangs_on_freeze", [True, False], ids=["at-freeze", "after-freeze"])
def test_systemd_hung_by_a_frozen_job_is_unstuck_and_the_signal_still_sent(
    monkeypatch: pytest.MonkeyPatch, hangs_on_freeze: bool
) -> None:
    systemd = StuckSystemd(hangs_on_freeze=hangs_on_freeze)
    group = "/slotmgr.slice/slotmgr-j.service"
    thawed: list[str] = []
    delivered: list[bool] = []

    def thaw_cgroup(path: str) -> None:
        thawed.append(path)
        systemd.cgroup_frozen = False

    def deliver(_manager: object, _unit: str, _group: str, _signum: int) -> int:
        delivered.append(systemd.cgroup_frozen)
        return 0

    monkeypatch.setattr(delivery, "_control_group", lambda _m, _u: group)
    monkeypatch.setattr(delivery, "_thaw_cgroup", thaw_cgroup)
    monkeypatch.setattr(delivery, "_deliver", deliver)
    outcome = delivery.kill_job(
        systemd,  # type: ignore[arg-type]
        "slotmgr-j.service",
        signal.SIGKILL,
        only_if=lambda state: state is not None and state.active == "active",
        state=systemd.state,
    )
    assert thawed and thawed[0] == group
    assert not systemd.cgroup_frozen
    # Sent once, to the thawed job, after systemd answered again.
    assert outcome.sent and outcome.how.startswith("unfrozen: systemd")
    assert delivered == [False]
    # No call waited for long while systemd could not answer.
    assert all(waited is not None and waited <= 5 for _name, waited in systemd.calls[:2])
