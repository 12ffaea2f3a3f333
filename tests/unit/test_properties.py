"""The property table: parsing, D-Bus shape, version gates."""

from __future__ import annotations

import pytest

from slotmgr.systemd.features import features_from_version
from slotmgr.systemd.properties import (
    LIMIT_OPTIONS,
    UNIT_PROPERTIES,
    PropertyError,
    build_property,
    parse_assignment,
)
from slotmgr.systemd.wire import Property

V252 = features_from_version("252.38-1~deb12u1")
V257 = features_from_version("257.13-1")


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("MemoryMax", "2G", [Property("MemoryMax", "t", 2 * 1024**3)]),
        ("MemoryMax", "infinity", [Property("MemoryMax", "t", 2**64 - 1)]),
        ("MemoryHigh", "50%", [Property("MemoryHighScale", "u", round(0.5 * (2**32 - 1)))]),
        ("TasksMax", "64", [Property("TasksMax", "t", 64)]),
        ("TasksMax", "10%", [Property("TasksMaxScale", "u", round(0.1 * (2**32 - 1)))]),
        ("CPUQuota", "200%", [Property("CPUQuotaPerSecUSec", "t", 2_000_000)]),
        ("RuntimeMaxSec", "5min", [Property("RuntimeMaxUSec", "t", 300_000_000)]),
        ("IOWeight", "500", [Property("IOWeight", "t", 500)]),
        ("PrivateTmp", "yes", [Property("PrivateTmp", "b", True)]),
        ("ReadOnlyPaths", "/a /b", [Property("ReadOnlyPaths", "as", ["/a", "/b"])]),
        ("Nice", "5", [Property("Nice", "i", 5)]),
        (
            "IOReadBandwidthMax",
            ("/", "10M"),
            [Property("IOReadBandwidthMax", "a(st)", [("/", 10_000_000)])],
        ),
    ],
)
def test_values_become_dbus_properties(
    key: str, raw: str | tuple[str, str], expected: list[Property]
) -> None:
    assert build_property(key, raw, V252) == expected


def test_private_pids_is_sent_as_text_and_gated_on_257() -> None:
    # systemd refuses a boolean for PrivatePIDs over D-Bus (seen in the guests).
    assert build_property("PrivatePIDs", "yes", V257) == [Property("PrivatePIDs", "s", "yes")]
    with pytest.raises(PropertyError) as info:
        build_property("PrivatePIDs", "yes", V252)
    assert str(info.value) == "PrivatePIDs= needs systemd 257 or newer; this host runs systemd 252"


def test_unknown_property_names_the_supported_ones() -> None:
    with pytest.raises(PropertyError, match=r"unknown or unsupported property 'Bogus'.*MemoryMax"):
        build_property("Bogus", "1", None)


@pytest.mark.parametrize("key", ["ExecStart", "User", "Environment", "Slice", "Type"])
def test_keys_slotmgr_owns_cannot_be_overridden(key: str) -> None:
    with pytest.raises(PropertyError, match="unknown or unsupported"):
        build_property(key, "x", None)


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("MemoryMax", "0%", "above 0%"),
        ("MemoryMax", "101%", "at most 100%"),
        ("TasksMax", "0", "task count"),
        ("RuntimeMaxSec", "0", "above 0"),
        ("OOMPolicy", "explode", "one of continue, stop, kill"),
        ("IOReadBandwidthMax", ("relative", "1M"), "absolute path"),
        ("IOReadBandwidthMax", ("/nonexistent-device", "1M"), "does not exist"),
    ],
)
def test_bad_values_name_key_value_and_rule(
    key: str, raw: str | tuple[str, str], message: str
) -> None:
    with pytest.raises(PropertyError, match=message) as info:
        build_property(key, raw, V257)
    assert str(info.value).startswith(f"{key}=")


def test_assignment_parsing() -> None:
    assert parse_assignment("MemoryLow=1G") == ("MemoryLow", "1G")
    for bad in ("MemoryLow", "=1G"):
        with pytest.raises(PropertyError, match="KEY=VALUE"):
            parse_assignment(bad)


def test_every_limit_option_maps_to_a_known_key() -> None:
    flags = [o.flag for o in LIMIT_OPTIONS]
    assert len(flags) == len(set(flags))
    for opt in LIMIT_OPTIONS:
        assert opt.key in UNIT_PROPERTIES
    assert {o.dest for o in LIMIT_OPTIONS} >= {"memory_max", "cpus", "runtime_max", "tasks_max"}


def test_each_limit_reads_back_as_written_and_lifts_with_its_unset_value() -> None:
    """One table serves the options, a slot's reset and `status`: for every
    limit option, what `status` shows of the wire value is a value the
    option takes back to the same wire value, and the unset value shows as
    no limit at all."""
    from slotmgr.systemd.properties import (
        LIMIT_OPTIONS,
        UNIT_PROPERTIES,
        Kind,
        build_property,
        shown_value,
        unset_property,
    )

    written = {
        "MemoryMax": "2G",
        "MemoryHigh": "512M",
        "MemorySwapMax": "0B",
        "CPUQuota": "150%",
        "CPUWeight": "50",
        "AllowedCPUs": "0",
        "IOWeight": "200",
        "TasksMax": "64",
        "RuntimeMaxSec": "1h 30min",
    }
    for option in LIMIT_OPTIONS:
        if UNIT_PROPERTIES[option.key].kind is Kind.BANDWIDTH:
            continue  # a device's rate: no single value to show
        (prop,) = build_property(option.key, written[option.key], None)
        shown = shown_value(option.key, prop.value)
        assert shown is not None, option.key
        assert build_property(option.key, shown, None) == [prop], (option.key, shown)
        unset = unset_property(option.key)
        assert unset.name == prop.name == option.spec.wire_name
        assert unset.signature == prop.signature
        assert shown_value(option.key, unset.value) is None, option.key
