"""`--inherit-limits`: the limits of the launcher's own cgroup, applied to its job.

A batch system limits its job's cgroup (Slurm's `--mem`, HTCondor's
`request_memory`); the job's unit cannot live there (no unit can be placed in
another's cgroup), so the batch system's limits would not hold for the
processes that slotmgr starts. With --inherit-limits the unit gets them:
what holds for the launcher, the tightest value on its way up to the root:

    memory.max -> MemoryMax      memory.high -> MemoryHigh
    memory.swap.max -> MemorySwapMax      pids.max -> TasksMax
    cpu.max -> CPUQuota          cpuset.cpus.effective -> AllowedCPUs

A limit also given on the command line keeps the tighter of the two (CPU
lists: their intersection). A group below a delegated one may be the job's
user's, who may write its files: taking the tightest value over every
ancestor means they can only ever make their own job tighter. Values that do
not parse are refused in one line naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from slotmgr.errors import UsageError
from slotmgr.systemd import values
from slotmgr.systemd.properties import PropertyError, build_property

# A file of a group ("/a/b", "memory.max") -> its text, None if absent.
Reader = Callable[[str, str], "str | None"]

_ONE_NUMBER = {
    "memory.max": "MemoryMax",
    "memory.high": "MemoryHigh",
    "memory.swap.max": "MemorySwapMax",
    "pids.max": "TasksMax",
}


@dataclass(frozen=True)
class Inherited:
    key: str  # the unit property
    raw: str  # its value, in systemd's syntax
    source: str  # "memory.max of /system.slice/x.scope"


def _ancestry(group: str) -> list[str]:
    """'/a/b/c' -> ['/a/b/c', '/a/b', '/a'] (the root, "", holds no limits)."""
    found = []
    while group not in ("", "/"):
        found.append(group)
        group = group.rsplit("/", 1)[0]
    return found


def _number(text: str, name: str, group: str) -> int | None:
    """A limit file's number; None for 'max'."""
    if text == "max":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise UsageError(f"--inherit-limits: {name} of {group} reads {text[:40]!r}, not a limit")
    return int(text)


def _quota(text: str, group: str) -> Fraction | None:
    """cpu.max 'QUOTA PERIOD' as CPUs' worth (a fraction); None for 'max'."""
    parts = text.split()
    if len(parts) == 2 and parts[0] == "max":
        return None
    if (
        len(parts) != 2
        or not all(p.isascii() and p.isdigit() and len(p) <= 20 for p in parts)
        or int(parts[1]) == 0
    ):
        raise UsageError(f"--inherit-limits: cpu.max of {group} reads {text[:40]!r}, not a limit")
    return Fraction(int(parts[0]), int(parts[1]))


def limits_of(group: str, read: Reader) -> list[Inherited]:
    """What holds for a process in `group`: the tightest of each limit on
    the way up to the root."""
    found: list[Inherited] = []
    chain = _ancestry(group)
    for name, key in _ONE_NUMBER.items():
        best: tuple[int, str] | None = None
        for level in chain:
            text = read(level, name)
            number = None if text is None else _number(text, name, level)
            if number is not None and (best is None or number < best[0]):
                best = (number, level)
        if best is not None:
            found.append(Inherited(key, str(best[0]), f"{name} of {best[1]}"))
    quota: tuple[Fraction, str] | None = None
    for level in chain:
        text = read(level, "cpu.max")
        share = None if text is None else _quota(text, level)
        if share is not None and (quota is None or share < quota[0]):
            quota = (share, level)
    if quota is not None:
        # systemd takes hundredths of a percent: rounded down, never looser.
        permyriad = max(1, int(quota[0] * 10000))
        raw = f"{permyriad // 100}.{permyriad % 100:02d}%"
        found.append(Inherited("CPUQuota", raw, f"cpu.max of {quota[1]}"))
    everywhere = read("", "cpuset.cpus.effective")  # the root's: no limit
    for level in chain:  # the kernel's effective set already narrows the parent's
        text = read(level, "cpuset.cpus.effective")
        if text and text == everywhere:
            break
        if text:
            try:
                values.parse_cpu_set(text)
            except ValueError:
                raise UsageError(
                    f"--inherit-limits: cpuset.cpus.effective of {level} reads {text[:40]!r}"
                ) from None
            found.append(Inherited("AllowedCPUs", text, f"cpuset.cpus.effective of {level}"))
            break
    return found


def _wire(key: str, raw: str | tuple[str, ...]) -> tuple[str, object]:
    (prop,) = build_property(key, raw, None)
    return prop.name, prop.value


def merged(
    given: Sequence[tuple[str, str | tuple[str, ...]]], inherited: Sequence[Inherited]
) -> tuple[tuple[str, str | tuple[str, ...]], ...]:
    """The job's limits with the inherited ones: the tighter where both set a key."""
    result = dict(given)
    for item in inherited:
        if item.key not in result:
            result[item.key] = item.raw
            continue
        try:
            mine_name, mine = _wire(item.key, result[item.key])
            theirs_name, theirs = _wire(item.key, item.raw)
        except (PropertyError, ValueError) as exc:
            raise UsageError(f"--inherit-limits: {exc}") from None
        if mine_name != theirs_name:  # e.g. MemoryMax=50% (a scale) against bytes
            raise UsageError(
                f"{item.key}={result[item.key]} cannot be compared with the inherited "
                f"{item.raw} ({item.source}): give it in bytes, or leave it to --inherit-limits"
            )
        if isinstance(mine, bytes) and isinstance(theirs, bytes):
            both = bytes(a & b for a, b in zip(mine, theirs))
            if not any(both):
                raise UsageError(
                    f"AllowedCPUs={result[item.key]} and the inherited {item.raw} "
                    f"({item.source}) share no CPU"
                )
            result[item.key] = values.cpu_set_to_text(both)
        elif isinstance(mine, int) and isinstance(theirs, int) and theirs < mine:
            result[item.key] = item.raw
    return tuple(result.items())


def own_group() -> str:
    """This process's cgroup (v2), as /proc/self/cgroup says."""
    from slotmgr.kernel.procs import parse_cgroup

    with open("/proc/self/cgroup") as f:
        return parse_cgroup(f.read())


def read_cgroup_file(group: str, name: str) -> str | None:
    """A cgroup file, never through a symlink (cgroupfs has none; a path
    elsewhere might), None if absent."""
    from slotmgr.kernel.cgroup import directory

    try:
        fd = os.open(f"{directory(group)}/{name}", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode("ascii", "replace").strip()
    finally:
        os.close(fd)


def inherited_limits() -> list[Inherited]:
    return limits_of(own_group(), read_cgroup_file)
