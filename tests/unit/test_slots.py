"""slots.conf: parsing, every mistake as one line naming file, line and key."""

from __future__ import annotations

import os
import re
import stat
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest

from slotmgr.errors import ExitCode, Interrupted, SlotmgrError, UsageError
from slotmgr.job.spec import DEFAULT_SLICE
from slotmgr.node import admission as slot_admission
from slotmgr.node import slots
from slotmgr.node.slots import SlotConfigError, parse
from slotmgr.systemd import values
from slotmgr.systemd.manager import Manager
from slotmgr.systemd.values import UINT64_MAX

PATH = "/etc/slotmgr/slots.conf"

GOOD = """\
# two slots on a 16-CPU node
[node]
exclusive_cpus = yes

[slot1]
MemoryMax=32G
AllowedCPUs=0-7
IOWeight=100
TasksMax=4096

[slot2]
MemoryMax = 16G
AllowedCPUs = 8-15
IOWeight = 50
TasksMax = 2048
MemoryHigh = 12G
CPUQuota = 400%
CPUWeight = 200
MemorySwapMax = 0
"""


def conf(text: str, cpu_count: int | None = 16) -> slots.SlotConfig:
    return parse(textwrap.dedent(text), PATH, cpu_count=cpu_count)


def error_of(text: str, cpu_count: int | None = 16) -> str:
    with pytest.raises(SlotConfigError) as info:
        conf(text, cpu_count)
    assert info.value.exit_code == ExitCode.USAGE
    message = info.value.one_line()
    assert "\n" not in message
    return message


def test_good_file_parses_in_order_with_values_as_written() -> None:
    config = conf(GOOD)
    assert config.exclusive_cpus is True
    assert [s.number for s in config.slots] == [1, 2]
    one, two = config.slots
    assert one.limits == (
        ("MemoryMax", "32G"),
        ("AllowedCPUs", "0-7"),
        ("IOWeight", "100"),
        ("TasksMax", "4096"),
    )
    assert one.cpus == frozenset(range(8)) and two.cpus == frozenset(range(8, 16))
    assert (one.line, two.line) == (5, 11)
    assert two.limit("CPUQuota") == "400%" and two.limit("Nope") is None
    assert one.slice == "slotmgr-slot1.slice" and one.name == "1"


def test_the_slot_slice_is_a_child_of_slotmgr_slice() -> None:
    # systemd makes a dashed slice name a child: slotmgr-slot1 under slotmgr.
    assert slots.slice_name(3).startswith(DEFAULT_SLICE[: -len(".slice")] + "-")
    assert slots.slot_of_slice("slotmgr-slot3.slice") == "3"
    assert slots.slot_of_slice("slotmgr.slice") is None
    assert slots.slot_of_slice("slotmgr-slot03.slice") is None


def test_properties_set_every_key_and_reset_the_ones_not_configured() -> None:
    one = conf(GOOD).slots[0]
    props = {p.name: (p.signature, p.value) for p in one.properties(None)}
    assert props["MemoryMax"] == ("t", 32 * 1024**3)
    assert props["AllowedCPUs"] == ("ay", b"\xff")
    assert props["IOWeight"] == ("t", 100) and props["TasksMax"] == ("t", 4096)
    # Not in [slot1]: sent as "no limit", so a key deleted from the file is lifted.
    assert props["MemoryHigh"] == ("t", UINT64_MAX)
    assert props["CPUQuotaPerSecUSec"] == ("t", UINT64_MAX)
    assert props["AllowedCPUs"] != ("ay", b"")
    assert len(props) == len(slots.SLOT_KEYS)
    two = {p.name: p.value for p in conf(GOOD).slots[1].properties(None)}
    assert two["CPUQuotaPerSecUSec"] == 4_000_000 and two["MemorySwapMax"] == 0


def test_empty_file_and_slot_without_limits() -> None:
    assert conf("").slots == ()
    empty = conf("[slot4]\n").slots[0]
    assert empty.limits == () and empty.cpus is None
    assert all(p.value in (UINT64_MAX, b"") for p in empty.properties(None))


def test_percentages_are_not_interpolation() -> None:
    assert conf("[slot1]\nMemoryMax=50%\nTasksMax=10%\n").slots[0].limit("MemoryMax") == "50%"


def test_slots_are_sorted_and_looked_up_by_number() -> None:
    config = conf("[slot10]\n[slot2]\n")
    assert [s.number for s in config.slots] == [2, 10]
    assert config.get("10").number == 10 and config.get("slot2").number == 2
    with pytest.raises(
        SlotConfigError,
        match=r"no slot 3 in /etc/slotmgr/slots.conf "
        r"\(slots: 2, 10\)",
    ):
        config.get("3")
    with pytest.raises(SlotConfigError, match="invalid slot 'x'"):
        config.get("x")
    with pytest.raises(SlotConfigError, match="invalid slot '02'"):
        config.get("02")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[slot1]\nMemoryMax=lots\n", f"{PATH}:2: [slot1] MemoryMax=lots: 'lots' is not a size"),
        ("[slot1]\nMemoryMax=\n", f"{PATH}:2: [slot1] MemoryMax=: '' is not a size"),
        ("[slot1]\nMemoryMax=150%\n", f"{PATH}:2: [slot1] MemoryMax=150%: "),
        (
            "[slot1]\n\n# note\nTasksMax=0\n",
            f"{PATH}:4: [slot1] TasksMax=0: '0' is not a task count",
        ),
        ("[slot1]\nIOWeight=0\n", f"{PATH}:2: [slot1] IOWeight=0: '0' is not a valid IOWeight"),
        ("[slot1]\nIOWeight=10001\n", "use an integer from 1 to 10000"),
        ("[slot1]\nCPUWeight=heavy\n", f"{PATH}:2: [slot1] CPUWeight=heavy"),
        ("[slot1]\nCPUQuota=2\n", f"{PATH}:2: [slot1] CPUQuota=2: '2' is not a CPU quota"),
        (
            "[slot1]\nAllowedCPUs=0-x\n",
            f"{PATH}:2: [slot1] AllowedCPUs=0-x: '0-x' is not a CPU list",
        ),
        ("[slot1]\nAllowedCPUs=3-1\n", "CPU range '3-1' runs backwards"),
        (
            "[slot1]\nAllowedCPUs=12-17\n",
            f"{PATH}:2: [slot1] AllowedCPUs=12-17: CPU 16 does not exist: this node has CPUs 0-15",
        ),
        ("[slot1]\nAllowedCPUs=\n", "names no CPU"),
        ("[slot1]\nMemoryMax=1G # one gig\n", f"{PATH}:2: [slot1] MemoryMax=1G # one gig"),
    ],
)
def test_bad_values_name_file_line_and_key(text: str, expected: str) -> None:
    assert expected in error_of(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[slot1]\nMemMax=1G\n",
            f"{PATH}:2: [slot1] unknown key 'MemMax': allowed are jobs, MemoryMax, MemoryHigh",
        ),
        (
            "[slot1]\nmemorymax=1G\n",
            f"{PATH}:2: [slot1] unknown key 'memorymax' (did you mean MemoryMax?)",
        ),
        ("[slot1]\nExecStart=/bin/sh\n", "unknown key 'ExecStart'"),
        (
            "[node]\nexclusive=yes\n",
            f"{PATH}:2: [node] unknown key 'exclusive': allowed is exclusive_cpus",
        ),
        (
            "[node]\nexclusive_cpus=perhaps\n",
            f"{PATH}:2: [node] exclusive_cpus: 'perhaps' is not a boolean",
        ),
        ("\n[slots]\n", f"{PATH}:2: unknown section [slots]: use [node] or [slotN]"),
        ("[slot0]\n", f"{PATH}:1: unknown section [slot0]"),
        ("[slot01]\n", "unknown section [slot01]"),
        ("[slot10000]\n", "N from 1 to 9999"),
        ("[DEFAULT]\nMemoryMax=1G\n", f"{PATH}:1: unknown section [DEFAULT]"),
        ("[Slot1]\n", "unknown section [Slot1]"),
    ],
)
def test_unknown_keys_and_sections(text: str, expected: str) -> None:
    assert expected in error_of(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MemoryMax=1G\n[slot1]\n", f"{PATH}:1: a key before any section"),
        ("[slot1]\nMemoryMax=1G\n[slot1]\n", f"{PATH}:3: section [slot1] given twice"),
        (
            "[slot1]\nMemoryMax=1G\nTasksMax=5\nMemoryMax=2G\n",
            f"{PATH}:4: [slot1] MemoryMax given twice",
        ),
        ("[slot1]\njust some words\n", f"{PATH}:2: cannot parse 'just some words'"),
        (
            "[slot1]\nMemoryMax=1G\n  2G\n",
            f"{PATH}:2: [slot1] MemoryMax: the value goes on over several lines",
        ),
    ],
)
def test_syntax_errors_carry_the_line(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_overlapping_cpus_are_refused_when_exclusive() -> None:
    text = """\
        [node]
        exclusive_cpus = yes
        [slot1]
        AllowedCPUs = 0-3
        [slot2]
        MemoryMax = 1G
        AllowedCPUs = 4,2-3
        """
    assert error_of(text) == (
        f"{PATH}:7: [slot2] AllowedCPUs=4,2-3: CPUs 2-3 are also slot1's, and [node] "
        "exclusive_cpus = yes"
    )
    # Without exclusive_cpus, sharing CPUs is allowed.
    assert len(conf(text.replace("yes", "no")).slots) == 2


def test_exclusive_needs_every_slot_to_name_its_cpus() -> None:
    text = "[node]\nexclusive_cpus=1\n[slot1]\nAllowedCPUs=0\n[slot2]\nMemoryMax=1G\n"
    assert error_of(text) == (
        f"{PATH}:5: [slot2] AllowedCPUs missing: [node] exclusive_cpus = "
        "yes needs every slot to name its own CPUs"
    )


def test_exclusive_order_of_sections_does_not_matter() -> None:
    text = "[slot2]\nAllowedCPUs=1\n[node]\nexclusive_cpus=yes\n[slot1]\nAllowedCPUs=0-1\n"
    assert "CPUs 1 are also slot1's" in error_of(text)


def test_memory_high_above_memory_max_is_contradictory() -> None:
    assert error_of("[slot1]\nMemoryMax=1G\nMemoryHigh=2G\n") == (
        f"{PATH}:3: [slot1] MemoryHigh=2G is above MemoryMax=1G: the throttling threshold "
        "must not exceed the hard limit"
    )
    assert conf("[slot1]\nMemoryMax=2G\nMemoryHigh=1G\n").slots[0].limit("MemoryHigh") == "1G"
    assert conf("[slot1]\nMemoryMax=infinity\nMemoryHigh=1G\n").slots


def test_cpu_count_none_skips_the_existence_check() -> None:
    assert conf("[slot1]\nAllowedCPUs=100\n", cpu_count=None).slots[0].cpus == frozenset({100})


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """slotmgr run by a non-root caller (a --user job): the only case the
    environment may point at another slots file."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


def test_load_reads_the_env_path_and_a_missing_file_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_user: None
) -> None:
    path = tmp_path / "slots.conf"
    monkeypatch.setenv(slots.CONF_ENV, str(path))
    assert slots.config_path() == str(path)
    assert slots.load() is None
    with pytest.raises(SlotConfigError, match=rf"no slot 1: no slots are configured \({path} "):
        slots.require_slot("1")
    path.write_text("[slot1]\nMemoryMax=64M\n")
    assert slots.require_slot("1").limit("MemoryMax") == "64M"
    path.write_bytes(b"[slot1]\nMemoryMax=\xff\n")
    with pytest.raises(SlotConfigError, match="not UTF-8 text"):
        slots.load()
    path.write_text("[slot1]\nAllowedCPUs=0\n")
    monkeypatch.setattr(slots, "open", _raise_permission, raising=False)
    with pytest.raises(SlotConfigError, match=r"cannot read .*Permission denied"):
        slots.load()


def test_as_root_the_environment_cannot_move_the_slots_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which limits apply is the node admin's choice, never the caller's environment."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv(slots.CONF_ENV, str(tmp_path / "mine.conf"))
    assert slots.config_path() == "/etc/slotmgr/slots.conf"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert slot_admission.lock_dir(user_manager=False) == "/run/slotmgr"
    assert slot_admission.lock_dir(user_manager=True) == "/run/user/0/slotmgr"


def test_a_user_locks_in_their_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_user: None
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert slot_admission.lock_dir(user_manager=True) == f"{tmp_path}/slotmgr"
    assert slot_admission.lock_dir(user_manager=False) == "/run/slotmgr"


def _stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, 0, 10, 0, 0, 0))


@pytest.mark.parametrize(
    ("mode", "uid", "refused"),
    [
        (0o100644, 0, False),
        (0o100600, 0, False),
        (0o100664, 0, True),
        (0o100646, 0, True),
        (0o100644, 1000, True),
    ],
)
def test_as_root_the_slots_file_must_be_roots_alone(mode: int, uid: int, refused: bool) -> None:
    if not refused:
        slots._check_admin_owned(PATH, _stat(mode, uid))
        return
    with pytest.raises(SlotmgrError) as info:
        slots._check_admin_owned(PATH, _stat(mode, uid))
    assert info.value.exit_code == ExitCode.CONFIG
    assert info.value.one_line().startswith(
        f"{PATH} is not root's alone (owner uid {uid}, mode "
        f"{mode & 0o7777:04o}): refusing its slot limits"
    )


def test_a_group_writable_file_is_refused_when_loaded_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "slots.conf"
    path.write_text("[slot1]\n")
    path.chmod(0o666)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(SlotmgrError, match="is not root's alone") as info:
        slots.load(str(path))
    assert info.value.exit_code == ExitCode.CONFIG


def _raise_permission(*_args: object, **_kw: object) -> None:
    raise PermissionError(13, "Permission denied")


EXAMPLE = Path(__file__).resolve().parents[2] / "packaging" / "slots.conf.example"


def _example_settings() -> str:
    """The example's commented-out sections and KEY = VALUE lines, uncommented."""
    return "\n".join(
        line[1:] for line in EXAMPLE.read_text().splitlines() if re.match(r"#(\[|\w+\s*=)", line)
    )


def test_example_file_in_packaging_parses() -> None:
    config = parse(_example_settings(), str(EXAMPLE), cpu_count=16)
    assert [s.number for s in config.slots] == [1, 2] and config.exclusive_cpus
    assert config.slots[0].jobs == 2
    assert config.slots[1].limit("AllowedCPUs") == "8-15"


def test_example_documents_every_key_the_parser_takes_and_no_other() -> None:
    text = EXAMPLE.read_text()
    # The key tables: "#   KEY   what it does".
    documented = set(re.findall(r"^#   (\w+)\s", text, flags=re.M))
    assert documented == {*slots.SLOT_SETTINGS, *slots.SLOT_KEYS, *slots.NODE_KEYS}
    # Every key is also shown in use, in the sections of the example.
    used = {line.split("=")[0].strip() for line in _example_settings().splitlines() if "=" in line}
    assert used == documented
    # And it says where the limits go: on the slot's slice, for all its jobs together.
    assert "The limits are set on that slice, so they bound ALL the slot's jobs" in text


# -- jobs = N ------------------------------------------------------------------------


def test_a_slot_holds_one_job_unless_it_says_how_many() -> None:
    one, three = conf("[slot1]\nMemoryMax=1G\n[slot2]\njobs = 3\nTasksMax=9\n").slots
    assert (one.jobs, three.jobs) == (1, 3)
    # jobs is slotmgr's, not a property of the slice.
    assert three.limits == (("TasksMax", "9"),)
    assert "jobs" not in {p.name for p in three.properties(None)}


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "10001", ""])
def test_bad_jobs_values(value: str) -> None:
    assert error_of(f"[slot1]\njobs = {value}\n") == (
        f"{PATH}:2: [slot1] jobs = {value}: use the number of jobs the slot holds at a time, "
        "from 1 to 10000"
    )


def test_unknown_key_lists_jobs_too() -> None:
    assert "(did you mean jobs?)" in error_of("[slot1]\nJobs = 2\n")
    assert "allowed are jobs, MemoryMax" in error_of("[slot1]\nMaxJobs = 2\n")


# -- a job's own limits against its slot's --------------------------------------------

SLOT = """\
[slot1]
MemoryMax = 1G
MemoryHigh = 900M
MemorySwapMax = 0
AllowedCPUs = 2-5
TasksMax = 100
CPUQuota = 200%
IOWeight = 50
"""


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("MemoryMax", "4G", "the job's MemoryMax=4G is above slot 1's MemoryMax=1G"),
        ("MemoryMax", "infinity", "the job's MemoryMax=infinity is above slot 1's MemoryMax=1G"),
        ("MemoryMax", "100%", "the job's MemoryMax=100% is above slot 1's MemoryMax=1G"),
        ("MemoryHigh", "901M", "the job's MemoryHigh=901M is above slot 1's MemoryHigh=900M"),
        ("MemorySwapMax", "1M", "the job's MemorySwapMax=1M is above slot 1's MemorySwapMax=0"),
        ("TasksMax", "101", "the job's TasksMax=101 is above slot 1's TasksMax=100"),
        ("TasksMax", "infinity", "the job's TasksMax=infinity is above slot 1's TasksMax=100"),
        ("CPUQuota", "250%", "the job's CPUQuota=250% is above slot 1's CPUQuota=200%"),
        (
            "AllowedCPUs",
            "0-3",
            "the job's AllowedCPUs=0-3 is outside slot 1's AllowedCPUs=2-5 (CPUs 0-1)",
        ),
        (
            "AllowedCPUs",
            "5,7",
            "the job's AllowedCPUs=5,7 is outside slot 1's AllowedCPUs=2-5 (CPUs 7)",
        ),
    ],
)
def test_a_job_asking_more_than_its_slot_is_refused_naming_both(
    key: str, value: str, expected: str
) -> None:
    slot = conf(SLOT).slots[0]
    with pytest.raises(UsageError) as info:
        slots.check_job_fits(slot, [("RuntimeMaxSec", "1h"), (key, value)])
    assert info.value.exit_code == ExitCode.USAGE
    assert info.value.one_line().startswith(expected), info.value.one_line()
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MemoryMax", "1G"),
        ("MemoryMax", "512M"),
        ("MemoryHigh", "900M"),
        ("MemorySwapMax", "0"),
        ("TasksMax", "100"),
        ("CPUQuota", "150%"),
        ("AllowedCPUs", "2-5"),
        ("AllowedCPUs", "3"),
        ("IOWeight", "500"),  # a weight is a share among siblings, not a limit
        ("CPUWeight", "900"),
        ("RuntimeMaxSec", "infinity"),
        ("IOReadBandwidthMax", ("/dev/null", "1M")),
    ],
)
def test_a_job_within_its_slot_passes(key: str, value: str | tuple[str, str]) -> None:
    slots.check_job_fits(conf(SLOT).slots[0], [(key, value)])


def test_a_slot_without_a_limit_bounds_nothing() -> None:
    slots.check_job_fits(
        conf("[slot1]\n").slots[0], [("MemoryMax", "infinity"), ("AllowedCPUs", "0-15")]
    )


def test_percentages_are_compared_as_amounts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots, "_physical_memory", lambda: 8 * 1024**3)
    monkeypatch.setattr(slots, "_system_tasks_max", lambda: 1000)
    slot = conf("[slot1]\nMemoryMax=50%\nTasksMax=10%\n").slots[0]
    slots.check_job_fits(slot, [("MemoryMax", "4G"), ("TasksMax", "100")])
    with pytest.raises(UsageError, match=r"MemoryMax=4097M is above slot 1's MemoryMax=50%"):
        slots.check_job_fits(slot, [("MemoryMax", "4097M")])
    with pytest.raises(UsageError, match=r"TasksMax=11% is above slot 1's TasksMax=10%"):
        slots.check_job_fits(slot, [("TasksMax", "11%")])


# -- the lock and the count --------------------------------------------------------------


def test_the_lock_file_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    os.close(slot_admission._open_lock(str(directory), "slot1.lock"))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "slot1.lock").stat().st_mode) == 0o600
    # A lock file someone made readable to others is narrowed again.
    (directory / "slot1.lock").chmod(0o644)
    os.close(slot_admission._open_lock(str(directory), "slot1.lock"))
    assert stat.S_IMODE((directory / "slot1.lock").stat().st_mode) == 0o600


def test_the_lock_never_follows_a_symlink(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    directory.mkdir(mode=0o700)
    target = tmp_path / "victim"
    target.write_text("keep")
    (directory / "slot1.lock").symlink_to(target)
    with pytest.raises(SlotmgrError, match="cannot open the slot lock") as info:
        slot_admission._open_lock(str(directory), "slot1.lock")
    assert info.value.exit_code == ExitCode.CONFIG
    linked = tmp_path / "linked"
    linked.symlink_to(directory)
    with pytest.raises(SlotmgrError, match=r"cannot use .* for the slot locks"):
        slot_admission._open_lock(str(linked), "slot1.lock")
    assert target.read_text() == "keep"


def test_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(SlotmgrError, match=r"is not uid \d+'s alone .*mode 0777") as info:
        slot_admission._open_lock(str(directory), "slot1.lock")
    assert info.value.exit_code == ExitCode.CONFIG


def test_every_lock_wait_has_a_deadline(tmp_path: Path) -> None:
    slot = conf("[slot7]\n").slots[0]
    with slot_admission._locked(str(tmp_path / "locks"), slot):
        started = time.monotonic()
        with (
            pytest.raises(
                slot_admission.SlotBusy,
                match=r"slot 7: another launcher held its lock for "
                r"over 0\.2s",
            ) as info,
            slot_admission._locked(str(tmp_path / "locks"), slot, timeout=0.2),
        ):
            pass
        assert 0.2 <= time.monotonic() - started < 5
    assert info.value.exit_code == ExitCode.SLOT_BUSY
    with slot_admission._locked(str(tmp_path / "locks"), slot, timeout=0.2):
        pass  # released with its holder


class FakeManager:
    """What Admission.hold asks of systemd: the slot slice's units and their state."""

    def __init__(self, units: dict[str, tuple[str, int]], frees_after: int = -1) -> None:
        self.units = units  # name -> (ActiveState, job id)
        self.frees_after = frees_after  # the first unit goes at this wait
        self.waits = 0
        self.prepared = 0
        self.features = None

    # Manager
    def unit_path(self, name: str) -> str:
        return "/x"

    def unit_property(self, name: str, interface: str, prop: str) -> list[str]:
        assert prop == "SliceOf"
        return [*self.units, "slotmgr-slot1-sub.slice"]

    def start_transient_unit(self, name: str, props: object) -> str:
        self.prepared += 1
        return "/job"

    def units_by_names(self, names: Sequence[str]) -> list[tuple[object, ...]]:
        return [(n, "", "loaded", *self._state(n)) for n in names]

    def _state(self, name: str) -> tuple[str, str, str, str, int, str, str]:
        active, job = self.units[name]
        return (active, "", "", "/u", job, "", "/")

    def wait_for_units_to_change(self, *, timeout: float | None) -> bool:
        assert timeout is not None
        self.waits += 1
        if self.waits == self.frees_after:
            self.units.pop(sorted(self.units)[0])
        time.sleep(min(timeout, 0.01))
        return self.waits == self.frees_after


@pytest.fixture
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slot_admission, "ROOT_LOCK_DIR", str(tmp_path / "run-slotmgr"))


def admission(text: str, wait: int | None = None) -> slot_admission.Admission:
    return slot_admission.Admission(conf(text).slots[0], user_manager=False, wait_usec=wait)


def test_slot_jobs_counts_running_and_just_accepted_units_only() -> None:
    manager = FakeManager(
        {
            "a.service": ("active", 0),
            "b.scope": ("deactivating", 0),
            "c.service": ("inactive", 7),
            "d.service": ("inactive", 0),
            "e.service": ("failed", 0),
            "f.service": ("activating", 3),
        }
    )
    assert slots.slot_jobs(cast(Manager, manager), conf("[slot1]\n").slots[0]) == [
        "a.service",
        "b.scope",
        "c.service",
        "f.service",
    ]


def test_a_free_place_is_held_while_the_unit_starts(lock_dir: None) -> None:
    manager = FakeManager({"a.service": ("active", 0)})
    # Another launcher cannot count while this one starts its unit.
    with (
        admission("[slot1]\njobs = 2\n").hold(cast(Manager, manager)),
        pytest.raises(slot_admission.SlotBusy, match="held its lock"),
        slot_admission._locked(
            slot_admission.ROOT_LOCK_DIR, conf("[slot1]\n").slots[0], timeout=0.05
        ),
    ):
        pass
    assert manager.prepared == 1  # the slice, with the slot's limits


def test_a_full_slot_refuses_at_once_naming_what_runs_in_it(lock_dir: None) -> None:
    manager = FakeManager({"slotmgr-a.service": ("active", 0), "slotmgr-b.service": ("active", 0)})
    with (
        pytest.raises(slot_admission.SlotBusy) as info,
        admission("[slot1]\njobs = 2\n").hold(cast(Manager, manager)),
    ):
        raise AssertionError("must not start")
    assert info.value.exit_code == ExitCode.SLOT_BUSY
    assert info.value.one_line() == (
        "slot 1 is full: it holds 2 jobs at a time, and slotmgr-a.service, slotmgr-b.service "
        "run in it (hint: --wait-for-slot DURATION waits for a place)"
    )
    assert manager.waits == 0


def test_waiting_starts_once_a_place_is_free(lock_dir: None) -> None:
    manager = FakeManager({"slotmgr-a.service": ("active", 0)}, frees_after=3)
    started = False
    with admission("[slot1]\n", wait=values.USEC_INFINITY).hold(cast(Manager, manager)):
        started = True
    assert started and manager.waits == 3


def test_waiting_gives_up_at_its_timeout(lock_dir: None) -> None:
    manager = FakeManager({"slotmgr-a.service": ("active", 0)})
    begun = time.monotonic()
    with (
        pytest.raises(slot_admission.SlotBusy) as info,
        admission("[slot1]\n", wait=300_000).hold(cast(Manager, manager)),
    ):
        raise AssertionError("must not start")
    assert 0.3 <= time.monotonic() - begun < 5
    assert info.value.one_line() == (
        "slot 1 is full: it holds 1 job at a time, and "
        "slotmgr-a.service runs in it; waited 300ms for a place"
    )
    assert manager.prepared == 1


def test_a_signal_while_waiting_starts_nothing(lock_dir: None) -> None:
    manager = FakeManager({"slotmgr-a.service": ("active", 0)})

    def interrupted(*, timeout: float | None) -> bool:
        raise Interrupted(15)

    manager.wait_for_units_to_change = interrupted  # type: ignore[method-assign]
    with (
        pytest.raises(
            slot_admission.SlotBusy,
            match="slot 1: signal 15 while waiting for a place; no job was started",
        ),
        admission("[slot1]\n", wait=values.USEC_INFINITY).hold(cast(Manager, manager)),
    ):
        raise AssertionError("must not start")


def test_a_kill_by_the_slots_limit_is_recorded_as_oom_kill() -> None:
    """systemd may miss an OOM kill caused by the slot's slice, above the job's
    unit; the recorder reads the kernel's count in the job's cgroup."""
    from slotmgr.history.accounting import build_record

    def result(counters: dict[str, int], reported: str) -> str:
        return build_record(
            job_id="a",
            unit="slotmgr-a.service",
            slot="1",
            props={},
            counters=counters,
            result=reported,
            exit_status=137,
            end_time=1.0,
            systemd_version="252",
            command=["stress"],
        ).result

    assert result({"oom_kill": 1}, "exit-code") == "oom-kill"
    assert result({"oom_kill": 2}, "signal") == "oom-kill"
    assert result({"oom_kill": 0}, "exit-code") == "exit-code"
    assert result({}, "signal") == "signal"
    assert result({"oom_kill": 1}, "success") == "success"  # the job coped with it
    assert result({"oom_kill": 1}, "timeout") == "timeout"


def test_read_counters_reads_oom_kills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slotmgr.kernel import cgroup

    group = tmp_path / "slotmgr.slice" / "slotmgr-a.service"
    group.mkdir(parents=True)
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    monkeypatch.setattr(cgroup, "CGROUP_ROOT", str(tmp_path))
    assert cgroup.read_counters("/slotmgr.slice/slotmgr-a.service")["oom_kill"] == 1


class DirManager(FakeManager):
    """Units are files in a directory shared by several processes."""

    def __init__(self, directory: Path) -> None:
        super().__init__({})
        self.directory = directory

    def unit_property(self, name: str, interface: str, prop: str) -> list[str]:
        return sorted(os.listdir(self.directory))

    def _state(self, name: str) -> tuple[str, str, str, str, int, str, str]:
        return ("active", "", "", "/u", 0, "", "/")


def test_launchers_racing_for_the_last_places_never_overfill_the_slot(
    tmp_path: Path, lock_dir: None
) -> None:
    units = tmp_path / "units"
    units.mkdir()
    slot = conf("[slot1]\njobs = 3\n").slots[0]
    go_read, go_write = os.pipe()
    children = []
    for i in range(8):
        pid = os.fork()
        if pid == 0:  # a launcher: counts, then takes its time to start its unit
            code = 1
            try:
                os.read(go_read, 1)
                with slot_admission.Admission(slot, user_manager=False).hold(
                    cast(Manager, DirManager(units))
                ):
                    time.sleep(0.05)
                    (units / f"job{i}.service").touch()
                code = 0
            except slot_admission.SlotBusy:
                code = ExitCode.SLOT_BUSY
            finally:
                os._exit(code)
        children.append(pid)
    os.write(go_write, b"g" * len(children))
    codes = sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children)
    assert codes == [0, 0, 0] + [ExitCode.SLOT_BUSY] * 5
    assert len(os.listdir(units)) == 3


def test_wait_for_slot_counts_from_when_the_job_was_asked_for(lock_dir: None) -> None:
    manager = FakeManager({"slotmgr-a.service": ("active", 0)})
    claim = slot_admission.Admission.for_job(
        conf("[slot1]\n").slots[0], user_manager=False, wait_usec=300_000
    )
    time.sleep(0.35)  # the launcher's own setup took that long
    with (
        pytest.raises(slot_admission.SlotBusy, match="waited 300ms for a place"),
        claim.hold(cast(Manager, manager)),
    ):
        raise AssertionError("must not start")
    assert manager.waits == 0
