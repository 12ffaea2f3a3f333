"""slots.conf: parsing, every mistake as one line naming file, line and key."""

from __future__ import annotations

import textwrap

import pytest

from slotmgr import slots
from slotmgr.errors import ExitCode
from slotmgr.jobspec import DEFAULT_SLICE
from slotmgr.slots import SlotConfigError, parse
from slotmgr.values import UINT64_MAX

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


def test_good_file_parses_in_order_with_values_as_written():
    config = conf(GOOD)
    assert config.exclusive_cpus is True
    assert [s.number for s in config.slots] == [1, 2]
    one, two = config.slots
    assert one.limits == (("MemoryMax", "32G"), ("AllowedCPUs", "0-7"), ("IOWeight", "100"),
                          ("TasksMax", "4096"))
    assert one.cpus == frozenset(range(8)) and two.cpus == frozenset(range(8, 16))
    assert (one.line, two.line) == (5, 11)
    assert two.limit("CPUQuota") == "400%" and two.limit("Nope") is None
    assert one.slice == "slotmgr-slot1.slice" and one.name == "1"


def test_the_slot_slice_is_a_child_of_slotmgr_slice():
    # systemd makes a dashed slice name a child: slotmgr-slot1 under slotmgr.
    assert slots.slice_name(3).startswith(DEFAULT_SLICE[: -len(".slice")] + "-")
    assert slots.slot_of_slice("slotmgr-slot3.slice") == "3"
    assert slots.slot_of_slice("slotmgr.slice") is None
    assert slots.slot_of_slice("slotmgr-slot03.slice") is None


def test_properties_set_every_key_and_reset_the_ones_not_configured():
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


def test_empty_file_and_slot_without_limits():
    assert conf("").slots == ()
    empty = conf("[slot4]\n").slots[0]
    assert empty.limits == () and empty.cpus is None
    assert all(p.value in (UINT64_MAX, b"") for p in empty.properties(None))


def test_percentages_are_not_interpolation():
    assert conf("[slot1]\nMemoryMax=50%\nTasksMax=10%\n").slots[0].limit("MemoryMax") == "50%"


def test_slots_are_sorted_and_looked_up_by_number():
    config = conf("[slot10]\n[slot2]\n")
    assert [s.number for s in config.slots] == [2, 10]
    assert config.get("10").number == 10 and config.get("slot2").number == 2
    with pytest.raises(SlotConfigError, match=r"no slot 3 in /etc/slotmgr/slots.conf "
                                              r"\(slots: 2, 10\)"):
        config.get("3")
    with pytest.raises(SlotConfigError, match="invalid slot 'x'"):
        config.get("x")
    with pytest.raises(SlotConfigError, match="invalid slot '02'"):
        config.get("02")


@pytest.mark.parametrize(("text", "expected"), [
    ("[slot1]\nMemoryMax=lots\n",
     f"{PATH}:2: [slot1] MemoryMax=lots: 'lots' is not a size"),
    ("[slot1]\nMemoryMax=\n", f"{PATH}:2: [slot1] MemoryMax=: '' is not a size"),
    ("[slot1]\nMemoryMax=150%\n", f"{PATH}:2: [slot1] MemoryMax=150%: "),
    ("[slot1]\n\n# note\nTasksMax=0\n", f"{PATH}:4: [slot1] TasksMax=0: '0' is not a task count"),
    ("[slot1]\nIOWeight=0\n", f"{PATH}:2: [slot1] IOWeight=0: '0' is not a valid IOWeight"),
    ("[slot1]\nIOWeight=10001\n", "use an integer from 1 to 10000"),
    ("[slot1]\nCPUWeight=heavy\n", f"{PATH}:2: [slot1] CPUWeight=heavy"),
    ("[slot1]\nCPUQuota=2\n", f"{PATH}:2: [slot1] CPUQuota=2: '2' is not a CPU quota"),
    ("[slot1]\nAllowedCPUs=0-x\n", f"{PATH}:2: [slot1] AllowedCPUs=0-x: '0-x' is not a CPU list"),
    ("[slot1]\nAllowedCPUs=3-1\n", "CPU range '3-1' runs backwards"),
    ("[slot1]\nAllowedCPUs=12-17\n",
     f"{PATH}:2: [slot1] AllowedCPUs=12-17: CPU 16 does not exist: this node has CPUs 0-15"),
    ("[slot1]\nAllowedCPUs=\n", "names no CPU"),
    ("[slot1]\nMemoryMax=1G # one gig\n", f"{PATH}:2: [slot1] MemoryMax=1G # one gig"),
])
def test_bad_values_name_file_line_and_key(text, expected):
    assert expected in error_of(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("[slot1]\nMemMax=1G\n",
     f"{PATH}:2: [slot1] unknown key 'MemMax': allowed are MemoryMax, MemoryHigh"),
    ("[slot1]\nmemorymax=1G\n",
     f"{PATH}:2: [slot1] unknown key 'memorymax' (did you mean MemoryMax?)"),
    ("[slot1]\nExecStart=/bin/sh\n", "unknown key 'ExecStart'"),
    ("[node]\nexclusive=yes\n", f"{PATH}:2: [node] unknown key 'exclusive': allowed is "
                                "exclusive_cpus"),
    ("[node]\nexclusive_cpus=perhaps\n",
     f"{PATH}:2: [node] exclusive_cpus: 'perhaps' is not a boolean"),
    ("\n[slots]\n", f"{PATH}:2: unknown section [slots]: use [node] or [slotN]"),
    ("[slot0]\n", f"{PATH}:1: unknown section [slot0]"),
    ("[slot01]\n", "unknown section [slot01]"),
    ("[slot10000]\n", "N from 1 to 9999"),
    ("[DEFAULT]\nMemoryMax=1G\n", f"{PATH}:1: unknown section [DEFAULT]"),
    ("[Slot1]\n", "unknown section [Slot1]"),
])
def test_unknown_keys_and_sections(text, expected):
    assert expected in error_of(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("MemoryMax=1G\n[slot1]\n", f"{PATH}:1: a key before any section"),
    ("[slot1]\nMemoryMax=1G\n[slot1]\n", f"{PATH}:3: section [slot1] given twice"),
    ("[slot1]\nMemoryMax=1G\nTasksMax=5\nMemoryMax=2G\n",
     f"{PATH}:4: [slot1] MemoryMax given twice"),
    ("[slot1]\njust some words\n", f"{PATH}:2: cannot parse 'just some words'"),
    ("[slot1]\nMemoryMax=1G\n  2G\n", f"{PATH}:2: [slot1] MemoryMax: the value goes on over "
                                     "several lines"),
])
def test_syntax_errors_carry_the_line(text, expected):
    assert expected in error_of(text)


def test_overlapping_cpus_are_refused_when_exclusive():
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
        "exclusive_cpus = yes")
    # Without exclusive_cpus, sharing CPUs is allowed.
    assert len(conf(text.replace("yes", "no")).slots) == 2


def test_exclusive_needs_every_slot_to_name_its_cpus():
    text = "[node]\nexclusive_cpus=1\n[slot1]\nAllowedCPUs=0\n[slot2]\nMemoryMax=1G\n"
    assert error_of(text) == (f"{PATH}:5: [slot2] AllowedCPUs missing: [node] exclusive_cpus = "
                              "yes needs every slot to name its own CPUs")


def test_exclusive_order_of_sections_does_not_matter():
    text = "[slot2]\nAllowedCPUs=1\n[node]\nexclusive_cpus=yes\n[slot1]\nAllowedCPUs=0-1\n"
    assert "CPUs 1 are also slot1's" in error_of(text)


def test_memory_high_above_memory_max_is_contradictory():
    assert error_of("[slot1]\nMemoryMax=1G\nMemoryHigh=2G\n") == (
        f"{PATH}:3: [slot1] MemoryHigh=2G is above MemoryMax=1G: the throttling threshold "
        "must not exceed the hard limit")
    assert conf("[slot1]\nMemoryMax=2G\nMemoryHigh=1G\n").slots[0].limit("MemoryHigh") == "1G"
    assert conf("[slot1]\nMemoryMax=infinity\nMemoryHigh=1G\n").slots


def test_cpu_count_none_skips_the_existence_check():
    assert conf("[slot1]\nAllowedCPUs=100\n", cpu_count=None).slots[0].cpus == {100}


def test_load_reads_the_env_path_and_a_missing_file_is_none(tmp_path, monkeypatch):
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


def _raise_permission(*_args, **_kw):
    raise PermissionError(13, "Permission denied")


def test_example_file_in_packaging_parses():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "packaging" / "slots.conf.example"
    uncommented = "\n".join(line[1:] if line.startswith("#[") or line.startswith("#M")
                            or line.startswith("#A") or line.startswith("#I")
                            or line.startswith("#T") else line
                            for line in example.read_text().splitlines())
    config = parse(uncommented, str(example), cpu_count=16)
    assert [s.number for s in config.slots] == [1, 2]
    assert config.slots[1].limit("AllowedCPUs") == "8-15"


def test_a_kill_by_the_slots_limit_is_recorded_as_oom_kill():
    """systemd may miss an OOM kill caused by the slot's slice, above the job's
    unit; the recorder reads the kernel's count in the job's cgroup."""
    from slotmgr.accounting import build_record

    def result(counters, reported):
        return build_record(job_id="a", unit="slotmgr-a.service", slot="1", props={},
                            counters=counters, result=reported, exit_status=137,
                            end_time=1.0, systemd_version="252").result

    assert result({"oom_kill": 1}, "exit-code") == "oom-kill"
    assert result({"oom_kill": 2}, "signal") == "oom-kill"
    assert result({"oom_kill": 0}, "exit-code") == "exit-code"
    assert result({}, "signal") == "signal"
    assert result({"oom_kill": 1}, "success") == "success"  # the job coped with it
    assert result({"oom_kill": 1}, "timeout") == "timeout"


def test_read_counters_reads_oom_kills(tmp_path, monkeypatch):
    from slotmgr import cgroup

    group = tmp_path / "slotmgr.slice" / "slotmgr-a.service"
    group.mkdir(parents=True)
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    monkeypatch.setattr(cgroup, "CGROUP_ROOT", str(tmp_path))
    assert cgroup.read_counters("/slotmgr.slice/slotmgr-a.service")["oom_kill"] == 1
