"""Batch slots: /etc/slotmgr/slots.conf, and the slice that carries each slot's limits.

A slot N is the slice `slotmgr-slotN.slice`; the dash makes it a child of
`slotmgr.slice`, so the kernel enforces the slot's limits on everything below
it, whatever a job asks for on its own unit: a job's MemoryMax=1G under a
slot's MemoryMax=64M still gets at most 64M (cgroup v2 limits nest).

The file is INI (configparser), one `[slotN]` section per slot with keys of
systemd.resource-control(5) and `jobs`, and an optional `[node]` section:

    [node]
    exclusive_cpus = yes     # no two slots may share a CPU

    [slot1]
    jobs = 2                 # jobs at a time (default 1): a batch slot
    MemoryMax = 32G
    AllowedCPUs = 0-7

Any mistake is one line naming the file, the line and the key (exit 64);
parsing is pure so it is unit-tested on any host.

Only the node's admin says which limits apply: as root the file is always
/etc/slotmgr/slots.conf (SLOTMGR_SLOTS_CONF is honoured for a non-root,
--user caller only), and it must be root's and writable by root alone.

A slot holds at most `jobs` jobs: slotmgr.node.admission counts them.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from slotmgr.errors import (
    ExitCode,
    RemoteError,
    SlotmgrError,
    UsageError,
)
from slotmgr.kernel import cgroup
from slotmgr.naming import UNIT_PREFIX, UNIT_SUFFIXES
from slotmgr.systemd import values
from slotmgr.systemd.features import Features
from slotmgr.systemd.manager import UNIT_EXISTS, Manager
from slotmgr.systemd.messages import SLICE_IFACE, UNIT_IFACE
from slotmgr.systemd.properties import PropertyError, build_property, unset_property
from slotmgr.systemd.wire import Property

DEFAULT_CONF = "/etc/slotmgr/slots.conf"
CONF_ENV = "SLOTMGR_SLOTS_CONF"
MAX_SLOT = 9999

# The limits a slot's slice may carry (a slice has no run time). Every key
# is sent each time the slice is prepared, configured or not (unset: the
# value that lifts it), so a key removed from the file is lifted at the next
# job instead of lingering.
SLOT_KEYS = (
    "MemoryMax",
    "MemoryHigh",
    "MemorySwapMax",
    "AllowedCPUs",
    "CPUQuota",
    "CPUWeight",
    "IOWeight",
    "TasksMax",
)
_UNSET: dict[str, Property] = {key: unset_property(key) for key in SLOT_KEYS}
# slotmgr's own settings of a slot, lower case beside systemd's keys.
JOBS_KEY = "jobs"
SLOT_SETTINGS = (JOBS_KEY,)
MAX_JOBS = 10000
NODE_KEYS = ("exclusive_cpus",)
_SECTION_SLOT = re.compile(r"slot([1-9][0-9]*)")
_SLICE_SLOT = re.compile(rf"^{re.escape(UNIT_PREFIX)}slot([1-9][0-9]*)\.slice$")


class SlotConfigError(UsageError):
    """A mistake in slots.conf, or a slot that is not in it (exit 64)."""


@dataclass(frozen=True)
class Slot:
    number: int
    limits: tuple[tuple[str, str], ...]  # (key, value as written), in file order
    cpus: frozenset[int] | None  # AllowedCPUs as a set, None when not limited
    line: int  # of the [slotN] header
    jobs: int = 1  # jobs the slot holds at a time (`jobs = N`)

    @property
    def name(self) -> str:
        return str(self.number)

    @property
    def slice(self) -> str:
        return slice_name(self.number)

    def limit(self, key: str) -> str | None:
        return dict(self.limits).get(key)

    def properties(self, features: Features | None) -> list[Property]:
        """Every slot key for SetUnitProperties/StartTransientUnit: the
        configured ones, and the rest reset to 'no limit'."""
        props: list[Property] = []
        configured = dict(self.limits)
        for key, unset in _UNSET.items():
            if key == "AllowedCPUs" and self.cpus is not None:
                # Checked against the node's CPUs when the file was read.
                props.append(Property(key, "ay", values.mask_of_cpus(sorted(self.cpus))))
            elif key in configured:
                props += build_property(key, configured[key], features)
            else:
                props.append(unset)
        return props


@dataclass(frozen=True)
class SlotConfig:
    path: str
    slots: tuple[Slot, ...]
    exclusive_cpus: bool = False

    def get(self, name: str) -> Slot:
        """The slot `name` ('3' or 'slot3'), or a one-line error."""
        text = name[4:] if name.startswith("slot") else name
        if not (text.isascii() and text.isdigit()) or text.startswith("0"):
            raise SlotConfigError(f"invalid slot {name!r}: use a slot number such as 1")
        for slot in self.slots:
            if slot.number == int(text):
                return slot
        have = ", ".join(s.name for s in self.slots) or "none"
        raise SlotConfigError(f"no slot {text} in {self.path} (slots: {have})")


def slice_name(number: int) -> str:
    return f"{UNIT_PREFIX}slot{number}.slice"


def slot_of_slice(slice_: str) -> str | None:
    """'slotmgr-slot3.slice' -> '3'; any other slice -> None."""
    match = _SLICE_SLOT.match(slice_)
    return match.group(1) if match else None


def config_path() -> str:
    """The slots file: the admin's, as root; a --user caller may point elsewhere."""
    if os.geteuid() == 0:
        return DEFAULT_CONF
    return os.environ.get(CONF_ENV) or DEFAULT_CONF


def node_cpu_count() -> int | None:
    return os.cpu_count()


# -- parsing -------------------------------------------------------------------


@dataclass(frozen=True)
class _Locator:
    """'FILE:LINE' of a key, or of its section when the key has no line."""

    path: str
    lines: dict[tuple[str, str], int] = field(default_factory=dict)

    def line(self, section: str, key: str = "") -> int:
        return self.lines.get((section, key), self.lines.get((section, ""), 0))

    def __call__(self, section: str, key: str = "") -> str:
        return f"{self.path}:{self.line(section, key)}"


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """(section, key) -> line number, for messages (configparser has none).

    Keys start a line; indented lines continue a value, as in configparser.
    """
    lines: dict[tuple[str, str], int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip()[0] in "#;" or line[0].isspace():
            continue
        header = re.match(r"\[([^\]]*)\]", line)
        if header:
            section = header.group(1)
            lines[(section, "")] = number
            continue
        key = re.split(r"[=:]", line, maxsplit=1)[0].strip()
        lines.setdefault((section, key), number)
    return lines


def _suggest(key: str, allowed: tuple[str, ...]) -> str:
    for name in allowed:
        if name.lower() == key.lower():
            return f" (did you mean {name}?)"
    return ""


def parse(text: str, path: str, *, cpu_count: int | None) -> SlotConfig:
    """Parse slots.conf text; `cpu_count` is the node's (None: do not check)."""
    parser = configparser.ConfigParser(
        interpolation=None,  # '%' is systemd's percentage, not a reference
        default_section="\0",  # no [DEFAULT] magic: it is reported as unknown
        strict=True,  # a section or key given twice is an error, with its line
        empty_lines_in_values=False,
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    try:
        parser.read_string(text, source=path)
    except configparser.MissingSectionHeaderError as exc:
        raise SlotConfigError(
            f"{path}:{exc.lineno}: a key before any section: start with [slot1] or [node]"
        ) from None
    except configparser.DuplicateSectionError as exc:
        raise SlotConfigError(f"{path}:{exc.lineno}: section [{exc.section}] given twice") from None
    except configparser.DuplicateOptionError as exc:
        raise SlotConfigError(
            f"{path}:{exc.lineno}: [{exc.section}] {exc.option} given twice"
        ) from None
    except configparser.ParsingError as exc:
        lineno = exc.errors[0][0]
        line = text.splitlines()[lineno - 1].strip() if 0 < lineno <= len(text.splitlines()) else ""
        raise SlotConfigError(
            f"{path}:{lineno}: cannot parse {line!r}: use KEY = VALUE under a [section]"
        ) from None
    except configparser.Error as exc:
        raise SlotConfigError(f"{path}: {exc.message}") from None

    where = _Locator(path, _key_lines(text))

    exclusive = False
    slots: list[Slot] = []
    for section in parser.sections():
        items = parser.items(section)
        if section == "node":
            for key, value in items:
                if key not in NODE_KEYS:
                    raise SlotConfigError(
                        f"{where(section, key)}: [node] unknown key {key!r}"
                        f"{_suggest(key, NODE_KEYS)}: allowed is {', '.join(NODE_KEYS)}"
                    )
                try:
                    exclusive = values.parse_bool(value)
                except ValueError as exc:
                    raise SlotConfigError(f"{where(section, key)}: [node] {key}: {exc}") from None
            continue
        match = _SECTION_SLOT.fullmatch(section)
        if not match or int(match.group(1)) > MAX_SLOT:
            raise SlotConfigError(
                f"{where(section)}: unknown section [{section}]: use [node] or [slotN] "
                f"with N from 1 to {MAX_SLOT} (no leading zeros)"
            )
        slots.append(_parse_slot(int(match.group(1)), items, section, where, cpu_count))

    slots.sort(key=lambda s: s.number)
    if exclusive:
        _check_exclusive(slots, where)
    return SlotConfig(path=path, slots=tuple(slots), exclusive_cpus=exclusive)


def _parse_slot(
    number: int, items: list[tuple[str, str]], section: str, where: _Locator, cpu_count: int | None
) -> Slot:
    limits: list[tuple[str, str]] = []
    cpus: frozenset[int] | None = None
    jobs = 1
    for key, value in items:
        if key not in SLOT_KEYS and key not in SLOT_SETTINGS:
            allowed = (*SLOT_SETTINGS, *SLOT_KEYS)
            raise SlotConfigError(
                f"{where(section, key)}: [{section}] unknown key {key!r}{_suggest(key, allowed)}"
                f": allowed are {', '.join(allowed)}"
            )
        value = value.strip()
        if "\n" in value:
            raise SlotConfigError(
                f"{where(section, key)}: [{section}] {key}: the value goes on over several "
                "lines (an indented line continues the one above): put it on one line"
            )
        if key == JOBS_KEY:
            if not re.fullmatch(r"[0-9]+", value) or not 1 <= int(value) <= MAX_JOBS:
                raise SlotConfigError(
                    f"{where(section, key)}: [{section}] jobs = {value}: use the number of jobs "
                    f"the slot holds at a time, from 1 to {MAX_JOBS}"
                )
            jobs = int(value)
            continue
        try:
            if key == "AllowedCPUs":
                mask = values.parse_cpu_set(value, cpu_count=cpu_count)
                cpus = frozenset(values.cpus_of_mask(mask))
            else:
                build_property(key, value, None)
        except (PropertyError, ValueError) as exc:
            problem = str(exc)
            if not problem.startswith(f"{key}="):
                problem = f"{key}={value}: {problem}"
            raise SlotConfigError(f"{where(section, key)}: [{section}] {problem}") from None
        limits.append((key, value))
    slot = Slot(number=number, limits=tuple(limits), cpus=cpus, line=where.line(section), jobs=jobs)
    _check_memory_order(slot, section, where)
    return slot


def _check_memory_order(slot: Slot, section: str, where: _Locator) -> None:
    """MemoryHigh above MemoryMax can never throttle: say so rather than ignore it."""
    high, most = slot.limit("MemoryHigh"), slot.limit("MemoryMax")
    if high is None or most is None or "%" in high + most:
        return
    if values.parse_bytes(high) > values.parse_bytes(most):
        raise SlotConfigError(
            f"{where(section, 'MemoryHigh')}: [{section}] MemoryHigh={high} is above "
            f"MemoryMax={most}: the throttling threshold must not exceed the hard limit"
        )


def _check_exclusive(slots: list[Slot], where: _Locator) -> None:
    owner: dict[int, Slot] = {}
    for slot in slots:
        section = f"slot{slot.number}"
        if slot.cpus is None:
            raise SlotConfigError(
                f"{where(section)}: [{section}] AllowedCPUs missing: [node] exclusive_cpus = yes "
                "needs every slot to name its own CPUs"
            )
        shared = sorted(c for c in slot.cpus if c in owner)
        if shared:
            other = owner[shared[0]]
            text = values.cpu_set_to_text(values.mask_of_cpus(shared))
            raise SlotConfigError(
                f"{where(section, 'AllowedCPUs')}: [{section}] "
                f"AllowedCPUs={slot.limit('AllowedCPUs')}: CPUs {text} are also "
                f"slot{other.number}'s, and [node] exclusive_cpus = yes"
            )
        owner.update(dict.fromkeys(slot.cpus, slot))


def load(path: str | None = None, *, cpu_count: int | None = -1) -> SlotConfig | None:
    """The node's slot configuration; None when the file does not exist."""
    path = path or config_path()
    try:
        with open(path, encoding="utf-8") as f:
            if os.geteuid() == 0:
                _check_admin_owned(path, os.fstat(f.fileno()))
            text = f.read()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise SlotConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise SlotConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse(text, path, cpu_count=node_cpu_count() if cpu_count == -1 else cpu_count)


def _check_admin_owned(path: str, st: os.stat_result) -> None:
    """As root, take limits only from a file that root alone may change."""
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise SlotmgrError(
            f"{path} is not root's alone (owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):04o}): refusing its slot limits",
            hint=f"chown root: {path} && chmod go-w {path}",
            exit_code=ExitCode.CONFIG,
        )


def require_slot(name: str, path: str | None = None) -> Slot:
    """The slot `slotmgr run --slot NAME` asks for, or a one-line error."""
    config = load(path)
    if config is None:
        raise SlotConfigError(
            f"no slot {name}: no slots are configured ({path or config_path()} does not exist)"
        )
    return config.get(name)


# -- the slot's slice ------------------------------------------------------------


def prepare_slice(manager: Manager, slot: Slot) -> None:
    """Make the slot's slice exist with the configured limits, before a job starts in it.

    A transient slice (StartTransientUnit), rather than unit files and a
    daemon-reload: it is one cheap call, a reload under load is slow and
    disruptive, and systemd keeps transient units across reloads. If the slice
    exists already (an earlier job, or an admin's unit file), its limits are
    set again at runtime (SetUnitProperties), so an edit of slots.conf takes
    effect at the next job in the slot. The job's own unit is ordered after
    its slice by systemd, so the limits are in place before the job runs.
    """
    features = manager.features
    try:
        props = slot.properties(features)
    except PropertyError as exc:
        raise SlotConfigError(f"{slot.slice}: {exc}") from None
    description = Property("Description", "s", f"slotmgr batch slot {slot.number}")
    try:
        manager.start_transient_unit(slot.slice, [description, *props])
        return
    except RemoteError as exc:
        if exc.name != UNIT_EXISTS:
            raise
    manager.set_unit_properties(slot.slice, props, runtime=True)


# -- current use -------------------------------------------------------------------

# What the kernel applies to the slot's cgroup now, by cgroup file.
APPLIED_FILES = (
    "memory.max",
    "memory.high",
    "memory.swap.max",
    "pids.max",
    "cpu.max",
    "cpu.weight",
    "io.weight",
    "cpuset.cpus",
)


_BUSY_STATES = ("active", "activating", "deactivating", "reloading", "refreshing")


def slot_jobs(manager: Manager, slot: Slot) -> list[str]:
    """The job units that hold a place in the slot now: every service or scope
    in its slice that is running, starting, stopping or has a job queued (a
    unit systemd has just accepted is still inactive, with its start job)."""
    if manager.unit_path(slot.slice) is None:
        return []
    try:
        members = manager.unit_property(slot.slice, UNIT_IFACE, "SliceOf")
    except RemoteError:
        return []
    names = sorted(str(n) for n in members if str(n).endswith(UNIT_SUFFIXES))
    if not names:
        return []
    units = manager.units_by_names(names)
    # ListUnitsByNames: (name, description, load, active, sub, following, path, job id, ...)
    return [str(u[0]) for u in units if str(u[3]) in _BUSY_STATES or int(u[7]) != 0]


@dataclass(frozen=True)
class SlotUsage:
    slot: Slot
    active: bool  # the slice exists: a job ran in the slot since boot
    jobs: int  # job units in the slot now
    memory_current_bytes: int | None
    memory_peak_bytes: int | None
    memory_swap_bytes: int | None  # memory.swap.current
    tasks_current: int | None
    cpu_usage_usec: int | None
    effective_cpus: str | None  # cpuset.cpus.effective
    applied: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "slot": self.slot.name,
            "slice": self.slot.slice,
            "configured": dict(self.slot.limits),
            "active": self.active,
            "jobs": self.jobs,
            "jobs_max": self.slot.jobs,
            "memory_current_bytes": self.memory_current_bytes,
            "memory_peak_bytes": self.memory_peak_bytes,
            "memory_swap_bytes": self.memory_swap_bytes,
            "tasks_current": self.tasks_current,
            "cpu_usage_usec": self.cpu_usage_usec,
            "effective_cpus": self.effective_cpus,
            "applied": dict(self.applied),
        }


def slot_usage(manager: Manager, slot: Slot) -> SlotUsage:
    """The slot's use now, read from its slice's cgroup (a slice that was never
    started, or is gone, is shown idle)."""
    group = ""
    if manager.unit_path(slot.slice) is not None:
        try:
            active = manager.unit_property(slot.slice, UNIT_IFACE, "ActiveState")
            if active == "active":
                group = str(manager.unit_property(slot.slice, SLICE_IFACE, "ControlGroup") or "")
        except RemoteError:
            group = ""
    if not group:
        return SlotUsage(
            slot=slot,
            active=False,
            jobs=0,
            memory_current_bytes=None,
            memory_peak_bytes=None,
            memory_swap_bytes=None,
            tasks_current=None,
            cpu_usage_usec=None,
            effective_cpus=None,
        )
    jobs = len(slot_jobs(manager, slot))
    cpu_usage = cgroup.cpu_stat(group).get("usage_usec")
    applied = {}
    for name in APPLIED_FILES:
        text = cgroup.read_file(group, name)
        if text is not None:
            applied[name] = text
    return SlotUsage(
        slot=slot,
        active=True,
        jobs=jobs,
        memory_current_bytes=cgroup.read_int(group, "memory.current"),
        memory_peak_bytes=cgroup.read_int(group, "memory.peak"),
        memory_swap_bytes=cgroup.read_int(group, "memory.swap.current"),
        tasks_current=cgroup.read_int(group, "pids.current"),
        cpu_usage_usec=cpu_usage,
        effective_cpus=cgroup.read_file(group, "cpuset.cpus.effective"),
        applied=applied,
    )


# -- a job's own limits against its slot's ----------------------------------------------

# The keys where a job asking for more than its slot is a mistake worth a
# refusal: the slot's slice would silently cut the job down to the slot's.
_BOUNDED = ("MemoryMax", "MemoryHigh", "MemorySwapMax", "TasksMax", "CPUQuota", "AllowedCPUs")


def _physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _system_tasks_max() -> int:
    """What systemd takes TasksMax=N% of: the kernel's pid_max and threads-max, the lower."""
    found = []
    for name in ("pid_max", "threads-max"):
        with contextlib.suppress(OSError, ValueError), open(f"/proc/sys/kernel/{name}") as f:
            found.append(int(f.read()))
    return min(found) if found else 4194304


def _amount(key: str, text: str) -> int:
    """A limit's value as a number to compare (already checked: it parses)."""
    fraction = values.parse_percent(text)
    if key == "CPUQuota":
        return values.parse_cpu_quota(text)
    if fraction is not None:
        whole = _system_tasks_max() if key == "TasksMax" else _physical_memory()
        return int(fraction * whole)
    if key == "TasksMax":
        return values.UINT64_MAX if text == "infinity" else int(text)
    return values.parse_bytes(text)


def check_job_fits(slot: Slot, limits: Sequence[tuple[str, object]]) -> None:
    """Refuse a job whose own limits exceed its slot's, naming both (exit 64).

    The slot's slice bounds the job anyway; a job asking for more is refused
    rather than quietly given less than it said it needs.
    """
    for key, raw in limits:
        theirs = slot.limit(key)
        if key not in _BOUNDED or theirs is None or not isinstance(raw, str):
            continue
        mine = raw.strip()
        if key == "AllowedCPUs":
            outside = sorted(
                set(values.cpus_of_mask(values.parse_cpu_set(mine))) - (slot.cpus or set())
            )
            if outside:
                shown = values.cpu_set_to_text(values.mask_of_cpus(outside))
                raise UsageError(
                    f"the job's AllowedCPUs={mine} is outside slot {slot.name}'s "
                    f"AllowedCPUs={theirs} (CPUs {shown})",
                    hint=f"ask for CPUs within {theirs}, or leave --cpus out",
                )
        elif _amount(key, mine) > _amount(key, theirs):
            raise UsageError(
                f"the job's {key}={mine} is above slot {slot.name}'s {key}={theirs}",
                hint=f"ask for at most {theirs}, or leave it out: the slot bounds every job in it",
            )
