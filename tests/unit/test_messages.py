"""Message builders: what goes on the wire, checked without a bus."""

from __future__ import annotations

import pytest
from jeepney import HeaderFields, Message, Parser

from slotmgr.systemd import messages
from slotmgr.systemd.wire import Property


def roundtrip(msg: Message) -> Message:
    """Serialise and parse back, as systemd would read it."""
    parser = Parser()
    parser.add_data(msg.serialise(serial=1))
    return parser.get_next_message()


def test_start_transient_unit_serialises_property_list() -> None:
    props = [
        Property("Description", "s", "job"),
        Property("MemoryMax", "t", 2**30),
        Property("ExecStartEx", "a(sasas)", [("/bin/true", ["/bin/true"], ["no-env-expand"])]),
    ]
    msg = roundtrip(messages.start_transient_unit("slotmgr-ab.service", props))
    assert msg.header.fields[HeaderFields.member] == "StartTransientUnit"
    assert msg.header.fields[HeaderFields.signature] == "ssa(sv)a(sa(sv))"
    name, mode, plist, aux = msg.body
    assert (name, mode, aux) == ("slotmgr-ab.service", "fail", [])
    assert plist[1] == ("MemoryMax", ("t", 2**30))
    assert plist[2][1][1][0][2] == ["no-env-expand"]


@pytest.mark.parametrize(
    "name", ["", "foo", "a b.service", "x.service/..", "é.service", "a" * 260 + ".service"]
)
def test_bad_unit_names_are_refused_in_the_builder(name: str) -> None:
    with pytest.raises(ValueError, match="invalid unit name"):
        messages.get_unit(name)


def test_kill_unit_validates_signal_and_target() -> None:
    msg = roundtrip(messages.kill_unit("slotmgr-x.service", 15))
    assert msg.body == ("slotmgr-x.service", "all", 15)
    with pytest.raises(ValueError):
        messages.kill_unit("slotmgr-x.service", 0)
    with pytest.raises(ValueError):
        messages.kill_unit("slotmgr-x.service", 9, whom="everyone")


@pytest.mark.parametrize(
    ("unit", "path"),
    [
        ("slotmgr-ab12.service", "/org/freedesktop/systemd1/unit/slotmgr_2dab12_2eservice"),
        ("-.slice", "/org/freedesktop/systemd1/unit/_2d_2eslice"),
        ("1x.service", "/org/freedesktop/systemd1/unit/_31x_2eservice"),
        ("a@b.service", "/org/freedesktop/systemd1/unit/a_40b_2eservice"),
    ],
)
def test_unit_object_path_matches_systemds_escaping(unit: str, path: str) -> None:
    assert messages.unit_object_path(unit) == path


def test_attach_refuses_pid_1() -> None:
    with pytest.raises(ValueError):
        messages.attach_processes_to_unit("slotmgr-x.service", [1])


def test_property_names_are_validated() -> None:
    with pytest.raises(ValueError):
        Property("memory max", "t", 1)


def test_match_rule_names_sender_interface_member_and_path() -> None:
    rule = messages.signal_match(messages.MANAGER_IFACE, "JobRemoved").rule
    assert rule == (
        "type='signal',sender='org.freedesktop.systemd1',"
        "interface='org.freedesktop.systemd1.Manager',member='JobRemoved'"
    )
    assert messages.signal_match("i", "m", "/p").rule.endswith(",path='/p'")


def test_a_match_accepts_what_its_rule_names_and_nothing_else() -> None:
    anywhere = messages.signal_match(messages.MANAGER_IFACE, "JobRemoved")
    assert anywhere.accepts(messages.MANAGER_IFACE, "JobRemoved", "/org/freedesktop/systemd1")
    assert not anywhere.accepts(messages.MANAGER_IFACE, "JobNew", "/org/freedesktop/systemd1")
    assert not anywhere.accepts(messages.UNIT_IFACE, "JobRemoved", "/org/freedesktop/systemd1")
    ours = messages.signal_match(messages.PROPERTIES_IFACE, "PropertiesChanged", "/u/a")
    assert ours.accepts(messages.PROPERTIES_IFACE, "PropertiesChanged", "/u/a")
    assert not ours.accepts(messages.PROPERTIES_IFACE, "PropertiesChanged", "/u/ab")
