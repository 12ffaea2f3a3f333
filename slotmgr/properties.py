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

from slotmgr import values
from slotmgr.features import Features
from slotmgr.wire import Property


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


@dataclass(frozen=True)
class PropertySpec:
    key: str  # the unit-file key, as the user writes it
    kind: Kind
    since: int = 252  # the systemd release that added the key
    dbus_name: str = ""  # when it differs from the key on the wire
    choices: tuple[str, ...] = ()

    @property
    def wire_name(self) -> str:
        return self.dbus_name or self.key


def _specs(*specs: PropertySpec) -> dict[str, PropertySpec]:
    return {s.key: s for s in specs}


# Keys slotmgr itself owns (ExecStart, Type, Slice, User, Environment, the
# standard streams...) are absent on purpose: they have their own options, or
# setting them would break the job's contract. Environment= in particular is
# never set on the unit, because root's ExecStopPost= recorder would inherit it.
UNIT_PROPERTIES: dict[str, PropertySpec] = _specs(
    PropertySpec("CPUAccounting", Kind.BOOL),
    PropertySpec("MemoryAccounting", Kind.BOOL),
    PropertySpec("IOAccounting", Kind.BOOL),
    PropertySpec("TasksAccounting", Kind.BOOL),
    PropertySpec("IPAccounting", Kind.BOOL),
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
    PropertySpec("TimeoutStopSec", Kind.TIMESPAN, dbus_name="TimeoutStopUSec"),
    PropertySpec("OOMPolicy", Kind.STRING, choices=("continue", "stop", "kill")),
    PropertySpec("OOMScoreAdjust", Kind.INTEGER),
    PropertySpec("Nice", Kind.INTEGER),
    PropertySpec("KillMode", Kind.STRING, choices=("control-group", "mixed")),
    PropertySpec("SendSIGHUP", Kind.BOOL),
    PropertySpec("PrivateTmp", Kind.BOOL),
    PropertySpec("PrivateDevices", Kind.BOOL),
    PropertySpec("PrivateNetwork", Kind.BOOL),
    PropertySpec("PrivateIPC", Kind.BOOL),
    PropertySpec("PrivatePIDs", Kind.YES_NO_STRING, since=257),
    PropertySpec("ProtectSystem", Kind.STRING, choices=("yes", "no", "full", "strict")),
    PropertySpec("ProtectHome", Kind.STRING, choices=("yes", "no", "read-only", "tmpfs")),
    PropertySpec("ProtectKernelTunables", Kind.BOOL),
    PropertySpec("ProtectKernelModules", Kind.BOOL),
    PropertySpec("ProtectControlGroups", Kind.BOOL),
    PropertySpec("NoNewPrivileges", Kind.BOOL),
    PropertySpec("ReadOnlyPaths", Kind.STRING_LIST),
    PropertySpec("ReadWritePaths", Kind.STRING_LIST),
    PropertySpec("InaccessiblePaths", Kind.STRING_LIST),
    PropertySpec("SupplementaryGroups", Kind.STRING_LIST),
    PropertySpec("Description", Kind.STRING),
    PropertySpec("CoredumpReceive", Kind.BOOL, since=255),
    PropertySpec(
        "MemoryPressureWatch", Kind.STRING, since=254, choices=("auto", "on", "off", "skip")
    ),
)


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


class PropertyError(ValueError):
    """A property value slotmgr refuses before calling systemd."""


def parse_assignment(text: str) -> tuple[str, str]:
    """'MemoryMax=2G' -> ('MemoryMax', '2G')."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise PropertyError(f"{text!r} is not KEY=VALUE (e.g. -p MemoryHigh=1G)")
    return key.strip(), value.strip()


def build_property(key: str, raw: str | Sequence[str], features: Features | None) -> list[Property]:
    """Turn one user-given property into what StartTransientUnit takes.

    `features` None skips the version check (used before a bus is open).
    """
    spec = UNIT_PROPERTIES.get(key)
    if spec is None:
        raise PropertyError(
            f"unknown or unsupported property {key!r}: supported are "
            + ", ".join(sorted(UNIT_PROPERTIES))
        )
    if features is not None and features.version < spec.since:
        raise PropertyError(
            f"{key}= needs systemd {spec.since} or newer; this host runs systemd {features.version}"
        )
    try:
        return _convert(spec, raw)
    except ValueError as exc:
        raise PropertyError(f"{key}={_show(raw)}: {exc}") from None


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
        if not device.startswith("/"):
            raise ValueError(f"{device!r} is not an absolute path of a device or file")
        if not os.path.exists(device):
            raise ValueError(f"{device!r} does not exist")
        return [Property(name, "a(st)", [(device, values.parse_bytes(rate, base=1000))])]
    assert isinstance(raw, str)
    text = raw
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
            if not text.isdigit() or int(text) < 1:
                raise ValueError(
                    f"{text!r} is not a task count: use a number above 0, N% or 'infinity'"
                )
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
        return [Property(name, "ay", values.parse_cpu_set(text, cpu_count=os.cpu_count()))]
    if kind is Kind.STRING_LIST:
        return [Property(name, "as", text.split())]
    if kind is Kind.INTEGER:
        try:
            return [Property(name, "i", int(text))]
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    return [Property(name, "s", text)]
