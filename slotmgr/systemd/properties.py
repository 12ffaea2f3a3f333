"""Unit properties slotmgr can set, declared once.

`UNIT_PROPERTIES` maps each unit-file key a user may give with `-p KEY=VALUE`
to how its value is parsed, which D-Bus property it becomes, and the systemd
release that added it. `LIMIT_OPTIONS` names the keys that also have their
own `slotmgr run` option; the CLI builds those options, and their help, from
this table.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass

from slotmgr.systemd import values
from slotmgr.systemd.features import Features
from slotmgr.systemd.wire import Property


class Kind(enum.Enum):
    BOOL = "yes|no"
    MEMORY = "SIZE|N%|infinity"  # bytes, or a share of RAM (the *Scale property)
    TASKS = "N|N%|infinity"
    TIMESPAN = "TIMESPAN"  # e.g. 90s, 5min; the D-Bus name ends in USec
    WEIGHT = "1-10000"
    CPU_QUOTA = "N%"
    CPU_SET = "CPULIST"
    STRING = "STRING"
    STRING_LIST = "STRING..."
    BANDWIDTH = "DEVICE RATE"  # rate in bytes/s, K/M/G base 1000 as systemd
    YES_NO_STRING = "yes|no (sent as text)"
    INTEGER = "INTEGER"


class Setter(enum.Enum):
    """Who chooses a key's value. The job's owner is assumed hostile, and a
    root batch system passes their -p values on: only JOB keys come from them."""

    JOB = "the job's owner"  # -p KEY=VALUE, or the key's own `slotmgr run` option
    SLOTMGR = "slotmgr"  # slotmgr sets it the same way for every job
    ADMIN = "the node's admin"  # grants a privilege: never through slotmgr


@dataclass(frozen=True)
class PropertySpec:
    key: str  # the unit-file key, as the user writes it
    kind: Kind
    since: int = 252  # the systemd release that added the key
    dbus_name: str = ""  # when it differs from the key on the wire
    choices: tuple[str, ...] = ()
    setter: Setter = Setter.JOB
    why: str = ""  # why a key that is not the job's, or a value out of bounds, is refused
    bounds: tuple[int, int] | None = None  # an INTEGER's allowed range, both ends included

    @property
    def wire_name(self) -> str:
        return self.dbus_name or self.key


def _specs(*specs: PropertySpec) -> dict[str, PropertySpec]:
    return {s.key: s for s in specs}


def _slotmgr(key: str, kind: Kind, why: str) -> PropertySpec:
    return PropertySpec(key, kind, setter=Setter.SLOTMGR, why=why)


_ACCOUNTED = "every job is accounted: its record needs the counters"
_PATHS_HIDE = (
    "a path rule (or a symlink on its path) can cover slotmgr's state and package "
    "directories, which the root record hook needs inside the job's mount namespace on "
    "systemd 252"
)

# Keys slotmgr itself owns (ExecStart, Type, Slice, User, Environment, the
# standard streams...) are absent on purpose: they have their own options, or
# setting them would break the job's contract. Environment= in particular is
# never set on the unit, because root's ExecStopPost= stop hook would inherit it.
# Present but not Setter.JOB: keys a caller may plausibly try, refused with why.
UNIT_PROPERTIES: dict[str, PropertySpec] = _specs(
    _slotmgr("CPUAccounting", Kind.BOOL, _ACCOUNTED),
    _slotmgr("MemoryAccounting", Kind.BOOL, _ACCOUNTED),
    _slotmgr("IOAccounting", Kind.BOOL, _ACCOUNTED),
    _slotmgr("TasksAccounting", Kind.BOOL, _ACCOUNTED),
    _slotmgr("IPAccounting", Kind.BOOL, _ACCOUNTED),
    PropertySpec("CPUWeight", Kind.WEIGHT),
    PropertySpec("StartupCPUWeight", Kind.WEIGHT),
    PropertySpec("CPUQuota", Kind.CPU_QUOTA, dbus_name="CPUQuotaPerSecUSec"),
    PropertySpec("AllowedCPUs", Kind.CPU_SET),
    PropertySpec("AllowedMemoryNodes", Kind.CPU_SET),
    PropertySpec("MemoryMin", Kind.MEMORY),
    PropertySpec("MemoryLow", Kind.MEMORY),
    PropertySpec("MemoryHigh", Kind.MEMORY),
    PropertySpec("MemoryMax", Kind.MEMORY),
    PropertySpec("MemorySwapMax", Kind.MEMORY),
    PropertySpec("MemoryZSwapMax", Kind.MEMORY, since=253),
    PropertySpec("MemoryZSwapWriteback", Kind.BOOL, since=256),
    PropertySpec("StartupMemoryMax", Kind.MEMORY),
    PropertySpec("IOWeight", Kind.WEIGHT),
    PropertySpec("StartupIOWeight", Kind.WEIGHT),
    PropertySpec("IOReadBandwidthMax", Kind.BANDWIDTH),
    PropertySpec("IOWriteBandwidthMax", Kind.BANDWIDTH),
    PropertySpec("IOReadIOPSMax", Kind.BANDWIDTH),
    PropertySpec("IOWriteIOPSMax", Kind.BANDWIDTH),
    PropertySpec("TasksMax", Kind.TASKS),
    PropertySpec("RuntimeMaxSec", Kind.TIMESPAN, dbus_name="RuntimeMaxUSec"),
    PropertySpec(
        "TimeoutStopSec",
        Kind.TIMESPAN,
        dbus_name="TimeoutStopUSec",
        setter=Setter.SLOTMGR,
        why="the stop phase runs the record hook, which slotmgr gives its own time",
    ),
    PropertySpec("OOMPolicy", Kind.STRING, choices=("continue", "stop", "kill")),
    # Only the job's own share of the OOM killer's and the scheduler's favour:
    # a job may make itself a likelier victim or nicer, never the reverse.
    PropertySpec(
        "OOMScoreAdjust",
        Kind.INTEGER,
        bounds=(0, 1000),
        why="below 0 would make other jobs the OOM killer's victims first",
    ),
    PropertySpec(
        "Nice", Kind.INTEGER, bounds=(0, 19), why="below 0 would take CPU time from other jobs"
    ),
    _slotmgr("KillMode", Kind.STRING, "it is chosen to match the job's PID-namespace init"),
    PropertySpec(
        "Delegate",
        Kind.BOOL,
        setter=Setter.ADMIN,
        why="it hands the unit's cgroup to the job's user, who could then freeze it and hang "
        "systemd",
    ),
    PropertySpec("SendSIGHUP", Kind.BOOL),
    _slotmgr("PrivateTmp", Kind.BOOL, "it is on for every job; turn it off with --no-private-tmp"),
    PropertySpec("PrivateDevices", Kind.BOOL),
    _slotmgr("PrivateNetwork", Kind.BOOL, "turn it on with --private-network"),
    _slotmgr("PrivateIPC", Kind.BOOL, "it is on for every job; turn it off with --no-private-ipc"),
    PropertySpec(
        "PrivatePIDs",
        Kind.YES_NO_STRING,
        since=257,
        setter=Setter.SLOTMGR,
        why="the job's PID namespace is on for every job; turn it off with --no-private-pids",
    ),
    # 'strict' makes /var read-only, and so the history database to the root
    # record hook, which stays in the job's mount namespace on 252.
    PropertySpec("ProtectSystem", Kind.STRING, choices=("yes", "no", "full")),
    # 'yes' and 'tmpfs' hide /home and /root, and so the interpreter and package
    # of a slotmgr installed there, from the record hook on 252.
    PropertySpec("ProtectHome", Kind.STRING, choices=("no", "read-only")),
    PropertySpec("ProtectKernelTunables", Kind.BOOL),
    PropertySpec("ProtectKernelModules", Kind.BOOL),
    PropertySpec("ProtectControlGroups", Kind.BOOL),
    PropertySpec("NoNewPrivileges", Kind.BOOL),
    _slotmgr("ReadOnlyPaths", Kind.STRING_LIST, _PATHS_HIDE),
    _slotmgr("ReadWritePaths", Kind.STRING_LIST, _PATHS_HIDE),
    _slotmgr("InaccessiblePaths", Kind.STRING_LIST, _PATHS_HIDE),
    PropertySpec(
        "SupplementaryGroups",
        Kind.STRING_LIST,
        setter=Setter.ADMIN,
        why="it would put the job's user in other groups (root, disk, shadow...); group "
        "membership is set in the node's group database",
    ),
    # The marker that makes a unit a job (slotmgr.naming): a job must not choose
    # its own, nor another job's.
    _slotmgr(
        "Description",
        Kind.STRING,
        "it names the job's id and command, and marks a scope as slotmgr's job",
    ),
    _slotmgr(
        "LogExtraFields", Kind.STRING_LIST, "it marks a service as slotmgr's job (SLOTMGR_JOB=<id>)"
    ),
    PropertySpec(
        "CoredumpReceive",
        Kind.BOOL,
        since=255,
        setter=Setter.ADMIN,
        why="it is for container managers with a delegated cgroup",
    ),
    PropertySpec(
        "MemoryPressureWatch", Kind.STRING, since=254, choices=("auto", "on", "off", "skip")
    ),
)

# What every job's record needs counted: slotmgr turns them on for every job.
ACCOUNTING_KEYS: tuple[str, ...] = tuple(
    k for k, s in UNIT_PROPERTIES.items() if s.why == _ACCOUNTED and s.kind is Kind.BOOL
)
JOB_SAFE: tuple[str, ...] = tuple(k for k, s in UNIT_PROPERTIES.items() if s.setter is Setter.JOB)


@dataclass(frozen=True)
class LimitOption:
    """A `slotmgr run` option that sets one unit property."""

    flag: str
    key: str
    help: str

    @property
    def spec(self) -> PropertySpec:
        return UNIT_PROPERTIES[self.key]

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def nargs(self) -> int:
        return 2 if self.spec.kind is Kind.BANDWIDTH else 1


LIMIT_OPTIONS: tuple[LimitOption, ...] = (
    LimitOption(
        "--memory-max", "MemoryMax", "Hard memory limit; past it the OOM killer ends the job."
    ),
    LimitOption("--memory-high", "MemoryHigh", "Memory throttling threshold."),
    LimitOption("--memory-swap-max", "MemorySwapMax", "Swap limit."),
    LimitOption("--cpu-quota", "CPUQuota", "CPU time per wall second, e.g. 200% for two CPUs."),
    LimitOption("--cpu-weight", "CPUWeight", "Relative CPU share (default 100)."),
    LimitOption("--cpus", "AllowedCPUs", "CPUs the job may run on, e.g. 0-3,6."),
    LimitOption("--io-weight", "IOWeight", "Relative I/O share (default 100)."),
    LimitOption(
        "--io-read-bandwidth-max",
        "IOReadBandwidthMax",
        "Read bandwidth cap on a device (path of the device or of a file on it).",
    ),
    LimitOption(
        "--io-write-bandwidth-max", "IOWriteBandwidthMax", "Write bandwidth cap on a device."
    ),
    LimitOption("--tasks-max", "TasksMax", "Most processes and threads the job may have."),
    LimitOption(
        "--runtime-max", "RuntimeMaxSec", "Wall-time limit; then the job ends as 'timeout'."
    ),
)


# What lifts a limit of each kind again, on the wire (systemd's "infinity",
# or an empty CPU set): a slot's slice drops a key removed from slots.conf.
_UNSET_BY_KIND: dict[Kind, tuple[str, object]] = {
    Kind.MEMORY: ("t", values.UINT64_MAX),
    Kind.TASKS: ("t", values.UINT64_MAX),
    Kind.WEIGHT: ("t", values.UINT64_MAX),
    Kind.CPU_QUOTA: ("t", values.USEC_INFINITY),
    Kind.TIMESPAN: ("t", values.USEC_INFINITY),
    Kind.CPU_SET: ("ay", b""),
}


def unset_property(key: str) -> Property:
    """The property that lifts the limit `key` (a limit of one of the kinds above)."""
    spec = UNIT_PROPERTIES[key]
    signature, value = _UNSET_BY_KIND[spec.kind]
    return Property(spec.wire_name, signature, value)


def shown_value(key: str, value: object) -> str | None:
    """A unit's value of `key` (as GetAll gives it, under the wire name) in
    the words a user writes it with; None when it is unset or not a limit."""
    kind = UNIT_PROPERTIES[key].kind
    if kind is Kind.CPU_SET:
        return (
            values.cpu_set_to_text(bytes(value))
            if isinstance(value, (bytes, list)) and value
            else None
        )
    if kind not in _UNSET_BY_KIND:
        return None
    number = values.counter(value)
    if number is None:
        return None
    if kind is Kind.MEMORY:
        return values.format_bytes(number)
    if kind is Kind.CPU_QUOTA:
        return f"{number / 10_000:g}%"
    if kind is Kind.TIMESPAN:
        return values.format_usec(number)
    return str(number)


class PropertyError(ValueError):
    """A property value slotmgr refuses before calling systemd."""


def shown(text: str) -> str:
    """`text` for a one-line message: control characters, undecodable bytes
    and other unprintables escaped as Python would."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def parse_assignment(text: str) -> tuple[str, str]:
    """'MemoryMax=2G' -> ('MemoryMax', '2G')."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise PropertyError(f"{text!r} is not KEY=VALUE (e.g. -p MemoryHigh=1G)")
    return key.strip(), value.strip()


@dataclass(frozen=True)
class Given:
    """One property as the caller gave it, and where: for messages."""

    key: str
    raw: str | tuple[str, ...]
    source: str  # e.g. "-p MemoryMax=8G" or "--memory-max 4G"


def check_job_may_set(key: str) -> None:
    """Refuse a key the job's owner may not choose, saying who does and why."""
    spec = UNIT_PROPERTIES.get(key)
    if spec is None or spec.setter is Setter.JOB:
        return  # unknown keys are refused by build_property, with the job-safe list
    if spec.setter is Setter.ADMIN:
        raise PropertyError(f"{key}= is reserved for the node's admin, not a job: {spec.why}")
    raise PropertyError(f"{key}= is set by slotmgr for every job, not by a job: {spec.why}")


def job_limits(given: Sequence[Given]) -> tuple[tuple[str, str | tuple[str, ...]], ...]:
    """The job's own properties, each checked: a key the job may set, given
    once, with a value systemd takes. `features` are not known yet (no bus):
    versions are checked again when the unit is made."""
    seen: dict[str, Given] = {}
    for item in given:
        check_job_may_set(item.key)
        first = seen.get(item.key)
        if first is not None:
            raise PropertyError(
                f"{item.key}= given twice ({shown(first.source)} and {shown(item.source)}): "
                "give it once"
            )
        seen[item.key] = item
        build_property(item.key, item.raw, None)
    return tuple((item.key, item.raw) for item in given)


def build_property(key: str, raw: str | Sequence[str], features: Features | None) -> list[Property]:
    """Turn one property into what StartTransientUnit takes, whoever sets it
    (a job's values pass job_limits first).

    `features` None skips the version check (used before a bus is open).
    """
    spec = UNIT_PROPERTIES.get(key)
    if spec is None:
        raise PropertyError(
            f"unknown or unsupported property {key!r}: a job may set " + ", ".join(JOB_SAFE)
        )
    if features is not None and features.version < spec.since:
        raise PropertyError(
            f"{key}= needs systemd {spec.since} or newer; this host runs systemd {features.version}"
        )
    try:
        return _convert(spec, raw)
    except ValueError as exc:
        why = f" ({spec.why})" if spec.bounds and spec.why else ""
        raise PropertyError(f"{key}={shown(_show(raw))}: {exc}{why}") from None


def _memory_nodes() -> int | None:
    """How many NUMA nodes this node has, None when the kernel does not say."""
    try:
        names = os.listdir("/sys/devices/system/node")
    except OSError:
        return None
    return sum(1 for n in names if n.startswith("node") and n[4:].isdecimal()) or None


def _show(raw: str | Sequence[str]) -> str:
    return raw if isinstance(raw, str) else " ".join(raw)


def _convert(spec: PropertySpec, raw: str | Sequence[str]) -> list[Property]:
    name = spec.wire_name
    kind = spec.kind
    if kind is Kind.BANDWIDTH:
        parts = raw.split() if isinstance(raw, str) else list(raw)
        if len(parts) != 2:
            raise ValueError("give a device and a rate, e.g. /dev/vda 10M")
        device, rate = parts
        values.check_text(device, what="device")
        values.check_text(rate, what="rate")
        if not device.startswith("/"):
            raise ValueError(f"{device!r} is not an absolute path of a device or file")
        if not os.path.exists(device):
            raise ValueError(f"{device!r} does not exist")
        return [Property(name, "a(st)", [(device, values.parse_bytes(rate, base=1000))])]
    assert isinstance(raw, str)
    text = values.check_text(raw, what="value")
    if spec.choices and text not in spec.choices:
        raise ValueError(f"{text!r} is not allowed: use one of {', '.join(spec.choices)}")
    if kind is Kind.BOOL:
        return [Property(name, "b", values.parse_bool(text))]
    if kind is Kind.YES_NO_STRING:
        return [Property(name, "s", "yes" if values.parse_bool(text) else "no")]
    if kind is Kind.MEMORY or kind is Kind.TASKS:
        fraction = values.parse_percent(text)
        if fraction is not None:
            if not 0 < fraction <= 1:
                raise ValueError(f"{text!r}: a percentage must be above 0% and at most 100%")
            return [Property(name + "Scale", "u", values.percent_to_scale(fraction))]
        if kind is Kind.TASKS:
            if text == "infinity":
                return [Property(name, "t", values.UINT64_MAX)]
            if not (text.isascii() and text.isdigit()) or not text.strip("0"):
                raise ValueError(
                    f"{text!r} is not a task count: use a number above 0, N% or 'infinity'"
                )
            # UINT64_MAX is 'infinity', as in systemd's parser.
            if len(text) > 20 or int(text) >= values.UINT64_MAX:
                raise ValueError(f"{text!r} is too large: at most 2^64-2, or 'infinity'")
            return [Property(name, "t", int(text))]
        return [Property(name, "t", values.parse_bytes(text))]
    if kind is Kind.TIMESPAN:
        usec = values.parse_timespan_usec(text)
        if usec == 0:
            raise ValueError("a time limit must be above 0")
        return [Property(name, "t", usec)]
    if kind is Kind.WEIGHT:
        return [Property(name, "t", values.parse_weight(text, name=spec.key))]
    if kind is Kind.CPU_QUOTA:
        return [Property(name, "t", values.parse_cpu_quota(text))]
    if kind is Kind.CPU_SET:
        if spec.key == "AllowedMemoryNodes":
            mask = values.parse_cpu_set(text, cpu_count=_memory_nodes(), what="memory node")
        else:
            mask = values.parse_cpu_set(text, cpu_count=os.cpu_count())
        return [Property(name, "ay", mask)]
    if kind is Kind.STRING_LIST:
        return [Property(name, "as", text.split())]
    if kind is Kind.INTEGER:
        low, high = spec.bounds or (-(2**31), 2**31 - 1)  # the wire's int32
        number = values.parse_integer(text, low, high, what=f"{spec.key}=")
        return [Property(name, "i", number)]
    return [Property(name, "s", text)]
