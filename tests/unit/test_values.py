"""systemd value syntax, parsed as systemd parses it."""

from __future__ import annotations

import pytest

from slotmgr.systemd import values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("512", 512),
        ("1K", 1024),
        ("512M", 512 * 1024**2),
        ("2G", 2 * 1024**3),
        ("1.5G", int(1.5 * 1024**3)),
        ("3T", 3 * 1024**4),
        ("2g", 2 * 1024**3),
        ("10MB", 10 * 1024**2),
        ("infinity", values.UINT64_MAX),
    ],
)
def test_parse_bytes(text: str, expected: int) -> None:
    assert values.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "2X", "G", "1.2.3G", "infinite", "10 M B"])
def test_parse_bytes_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        values.parse_bytes(text)


def test_bandwidth_uses_base_1000_like_systemd() -> None:
    assert values.parse_bytes("10M", base=1000) == 10_000_000


@pytest.mark.parametrize(
    ("text", "usec"),
    [
        ("90s", 90_000_000),
        ("90", 90_000_000),
        ("5min", 300_000_000),
        ("1h 30min", 5_400_000_000),
        ("2.5h", 9_000_000_000),
        ("250ms", 250_000),
        ("1d", 86_400_000_000),
        ("infinity", values.USEC_INFINITY),
    ],
)
def test_parse_timespan(text: str, usec: int) -> None:
    assert values.parse_timespan_usec(text) == usec


@pytest.mark.parametrize("text", ["", "5 parsecs", "min", "1h30x", "-5s"])
def test_parse_timespan_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        values.parse_timespan_usec(text)


def test_cpu_quota_and_percent() -> None:
    assert values.parse_cpu_quota("150%") == 1_500_000
    assert values.parse_percent("12.5%") == 0.125
    assert values.parse_percent("12") is None
    with pytest.raises(ValueError):
        values.parse_cpu_quota("0%")
    with pytest.raises(ValueError):
        values.parse_cpu_quota("2")
    assert values.percent_to_scale(1.0) == values.UINT32_MAX


def test_cpu_set_round_trip_and_limits() -> None:
    mask = values.parse_cpu_set("0-3,6", cpu_count=8)
    assert mask == bytes([0b0100_1111])
    assert values.cpu_set_to_text(mask) == "0-3,6"
    assert values.cpu_set_to_text(values.parse_cpu_set("1,9-10")) == "1,9-10"
    with pytest.raises(ValueError, match="does not exist"):
        values.parse_cpu_set("0-8", cpu_count=8)
    with pytest.raises(ValueError, match="backwards"):
        values.parse_cpu_set("3-1")
    with pytest.raises(ValueError):
        values.parse_cpu_set("a-b")


def test_weight_signal_bool() -> None:
    assert values.parse_weight("10000") == 10000
    for bad in ("0", "10001", "x", "-1"):
        with pytest.raises(ValueError):
            values.parse_weight(bad)
    assert values.parse_signal("TERM") == 15
    assert values.parse_signal("SIGKILL") == 9
    assert values.parse_signal("10") == 10
    for bad in ("FOO", "0", "65", "SIG"):
        with pytest.raises(ValueError):
            values.parse_signal(bad)
    assert values.parse_bool("yes") is True and values.parse_bool("off") is False
    with pytest.raises(ValueError):
        values.parse_bool("maybe")


def test_formatting_for_people() -> None:
    assert values.format_bytes(None) == "n/a"
    assert values.format_bytes(1536) == "1.5K"
    assert values.format_usec(1_500_000) == "1.500s"
    assert values.format_usec(250_000) == "250ms"
    assert values.format_usec(3_723_000_000) == "1h 2min 3s"


def test_cpu_masks_round_trip() -> None:
    assert values.mask_of_cpus({0, 1, 2, 3, 6}) == b"\x4f"
    assert values.cpus_of_mask(b"\x4f") == [0, 1, 2, 3, 6]
    assert values.cpus_of_mask(values.parse_cpu_set("1,9-10")) == [1, 9, 10]
    assert values.mask_of_cpus([]) == b""
