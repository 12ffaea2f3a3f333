"""Parsers for systemd's value syntax: sizes, percentages, time spans, CPU sets.

Each parser takes the user's text and returns what goes on the wire, or
raises ValueError with a message that says what is allowed. They follow
systemd's own rules (parse_size, parse_sec, parse_permyriad, parse_cpu_set)
so a value means the same to slotmgr as to systemd-run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1
USEC_INFINITY = UINT64_MAX


def counter(value: Any) -> int | None:
    """A number systemd reports, None where it says "not available" or
    "unset" (UINT64_MAX), or the value is missing or no number."""
    if value is None or value == UINT64_MAX or isinstance(value, bool):
        return None
    return int(value)


_SIZE_SUFFIXES_1024 = {
    "": 1,
    "B": 1,
    "K": 1024,
    "M": 1024**2,
    "G": 1024**3,
    "T": 1024**4,
    "P": 1024**5,
    "E": 1024**6,
}
_SIZE_SUFFIXES_1000 = {
    "": 1,
    "B": 1,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "E": 1000**6,
}
# ASCII digits only: \d would also take other scripts' digits, which systemd refuses.
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
# Longer numbers are refused before any arithmetic: nothing slotmgr sends needs
# more digits than a uint64 has, and Python's int() refuses 4300+ digits anyway.
_MOST_DIGITS = 30
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# parse_sec's units, in microseconds.
_TIME_UNITS = {
    "us": 1,
    "usec": 1,
    "μs": 1,
    "ms": 1000,
    "msec": 1000,
    "s": 10**6,
    "sec": 10**6,
    "second": 10**6,
    "seconds": 10**6,
    "": 10**6,
    "m": 60 * 10**6,
    "min": 60 * 10**6,
    "minute": 60 * 10**6,
    "minutes": 60 * 10**6,
    "h": 3600 * 10**6,
    "hr": 3600 * 10**6,
    "hour": 3600 * 10**6,
    "hours": 3600 * 10**6,
    "d": 86400 * 10**6,
    "day": 86400 * 10**6,
    "days": 86400 * 10**6,
    "w": 7 * 86400 * 10**6,
    "week": 7 * 86400 * 10**6,
    "weeks": 7 * 86400 * 10**6,
}


def _exact(number: str, text: str) -> Fraction:
    """A matched decimal number, exactly (a float would round 2^64-1 up, and
    turn a long enough number into inf)."""
    if len(number.partition(".")[0].lstrip("0")) > _MOST_DIGITS:
        raise ValueError(f"{text!r} is too large")
    return Fraction(number)


def parse_bytes(text: str, *, base: int = 1024) -> int:
    """'512M' -> 536870912; 'infinity' -> UINT64_MAX. K/M/G/T/P/E suffixes."""
    value = text.strip()
    if value == "infinity":
        return UINT64_MAX
    table = _SIZE_SUFFIXES_1024 if base == 1024 else _SIZE_SUFFIXES_1000
    match = re.fullmatch(_NUMBER + r"\s*([KMGTPE]?B?)", value, flags=re.IGNORECASE | re.ASCII)
    if not match:
        raise ValueError(
            f"{text!r} is not a size: use bytes with an optional K, M, G, T suffix "
            "(e.g. 512M, 2G) or 'infinity'"
        )
    suffix = match.group(2).upper()
    if suffix.endswith("B") and len(suffix) == 2:
        suffix = suffix[0]
    result = int(_exact(match.group(1), text) * table[suffix])
    if result > UINT64_MAX:
        raise ValueError(f"{text!r} is too large: at most 16E (2^64-1 bytes) or 'infinity'")
    return result


def parse_percent(text: str) -> Fraction | None:
    """'50%' -> 1/2; anything else -> None. Allows two decimal places, as
    systemd's parse_permyriad does (e.g. '12.5%', '0.01%')."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]{1,2})?)%", text.strip())
    if not match:
        return None
    return _exact(match.group(1), text) / 100


def percent_to_scale(fraction: Fraction | float) -> int:
    """systemd's *Scale properties: a fraction of UINT32_MAX."""
    return min(UINT32_MAX, round(fraction * UINT32_MAX))


def parse_timespan_usec(text: str) -> int:
    """'90s', '5min', '1h 30min', '2.5h', 'infinity' -> microseconds, below
    USEC_INFINITY (which only 'infinity' means, as in systemd's parse_sec)."""
    value = text.strip()
    if value == "infinity":
        return USEC_INFINITY
    if not value:
        raise ValueError("empty time span")
    total = Fraction(0)
    pos = 0
    pattern = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zμ]*)")
    while pos < len(value):
        match = pattern.match(value, pos)
        if not match or match.end() == pos or match.group(2) not in _TIME_UNITS:
            raise ValueError(
                f"{text!r} is not a time span: use e.g. 90s, 5min, 1h 30min, 2d or 'infinity'"
            )
        total += _exact(match.group(1), text) * _TIME_UNITS[match.group(2)]
        pos = match.end()
    if total >= USEC_INFINITY:
        raise ValueError(f"{text!r} is too long: use at most 584000 years, or 'infinity'")
    return int(total)


MAX_CPU = 8191  # systemd's CPU_SET_MAX bits; also bounds CPUQuota=
MAX_CPU_QUOTA_PERCENT = (MAX_CPU + 1) * 100


def parse_cpu_quota(text: str) -> int:
    """'150%' -> CPUQuotaPerSecUSec 1500000 (1.5 CPUs' worth per second)."""
    fraction = parse_percent(text)
    if fraction is None or fraction <= 0:
        raise ValueError(
            f"{text!r} is not a CPU quota: use a percentage above 0, e.g. 50% or 200% for two CPUs"
        )
    if fraction * 100 > MAX_CPU_QUOTA_PERCENT:
        raise ValueError(f"{text!r} is too large: at most {MAX_CPU_QUOTA_PERCENT}%")
    return int(fraction * 10**6)


def parse_integer(text: str, low: int, high: int, *, what: str = "value") -> int:
    """A decimal integer from `low` to `high` (ASCII digits, an optional sign)."""
    value = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", value) or not low <= int(value) <= high:
        raise ValueError(f"{text!r} is not a valid {what}: use an integer from {low} to {high}")
    return int(value)


def parse_weight(text: str, *, name: str = "weight") -> int:
    """CPUWeight= and IOWeight=: an integer 1..10000."""
    if not re.fullmatch(r"[0-9]{1,30}", text.strip()) or not 1 <= int(text) <= 10000:
        raise ValueError(f"{text!r} is not a valid {name}: use an integer from 1 to 10000")
    return int(text)


def parse_cpu_set(text: str, *, cpu_count: int | None = None, what: str = "CPU") -> bytes:
    """'0-3,6' -> the bitmask systemd takes for AllowedCPUs= (ay), and for
    AllowedMemoryNodes= (`what` "memory node", `cpu_count` the node count)."""
    cpus: set[int] = set()
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        match = re.fullmatch(r"([0-9]{1,30})(?:-([0-9]{1,30}))?", part)
        if not match:
            raise ValueError(f"{text!r} is not a {what} list: use e.g. 0-3,6")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"CPU range {part!r} runs backwards")
        if last > MAX_CPU:
            raise ValueError(f"{what} {last} is out of range: at most {MAX_CPU}")
        cpus.update(range(first, last + 1))
    if not cpus:
        raise ValueError(f"{text!r} names no {what}: use e.g. 0-3,6")
    if cpu_count is not None:
        missing = sorted(c for c in cpus if c >= cpu_count)
        if missing:
            raise ValueError(
                f"{what} {missing[0]} does not exist: this node has {what}s 0-{cpu_count - 1}"
            )
    return mask_of_cpus(cpus)


def mask_of_cpus(cpus: Iterable[int]) -> bytes:
    """{0, 1, 2, 3, 6} -> b'\\x4f': the bitmask of a CPU set (ay on the wire)."""
    numbers = sorted(cpus)
    mask = bytearray((numbers[-1] // 8) + 1 if numbers else 0)
    for cpu in numbers:
        mask[cpu // 8] |= 1 << (cpu % 8)
    return bytes(mask)


def cpus_of_mask(mask: bytes) -> list[int]:
    """The inverse of mask_of_cpus: b'\\x0f' -> [0, 1, 2, 3]."""
    return [i * 8 + bit for i, byte in enumerate(mask) for bit in range(8) if byte >> bit & 1]


def check_text(text: str, *, what: str) -> str:
    """`text` if it can go on the bus as a D-Bus string that systemd keeps as
    given: valid UTF-8 (no surrogate escapes of undecodable bytes) and no
    control characters. Else a ValueError naming `what`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not valid UTF-8 text") from None
    if _CONTROL.search(text):
        raise ValueError(f"{what} {text!r} holds a control character")
    return text


def cpu_set_to_text(mask: bytes) -> str:
    """The inverse of parse_cpu_set, for display: b'\\x0f' -> '0-3'."""
    cpus = cpus_of_mask(mask)
    ranges: list[str] = []
    start = prev = None
    for cpu in [*cpus, None]:
        if cpu is not None and prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None:
            ranges.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(ranges)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "y", "true", "t", "on"):
        return True
    if value in ("0", "no", "n", "false", "f", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean: use yes or no")


def parse_signal(text: str) -> int:
    """'TERM', 'SIGTERM' or '15' -> 15."""
    import signal as _signal

    value = text.strip().upper()
    if re.fullmatch(r"[0-9]{1,30}", value):
        number = int(value)
        if 1 <= number <= 64:
            return number
    else:
        name = value if value.startswith("SIG") else "SIG" + value
        member = getattr(_signal.Signals, name, None) if name.isidentifier() else None
        if isinstance(member, _signal.Signals):
            return int(member)
    raise ValueError(f"{text!r} is not a signal: use a name like TERM or KILL, or a number 1-64")


def format_bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value}B"


def format_usec(value: int | None) -> str:
    if value is None:
        return "n/a"
    seconds = value / 1e6
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.3f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}min {sec}s" if hours else f"{minutes}min {sec}s"
