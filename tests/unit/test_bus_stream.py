"""The bus's message stream without a socket: whole messages out of bytes cut
anywhere, and signals nobody asked for dropped on their header alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from jeepney import DBusAddress, HeaderFields, Message, MessageType, new_method_return, new_signal
from jeepney.low_level import Header

from slotmgr.systemd import bus, messages

UNIT = messages.unit_object_path("slotmgr-ab12.service")
OTHER = messages.unit_object_path("slotmgr-cd34.service")


def properties_changed(path: str, state: str) -> bytes:
    emitter = DBusAddress(path, interface=messages.PROPERTIES_IFACE)
    changed = {"ActiveState": ("s", state), "SubState": ("s", "running")}
    data: bytes = new_signal(
        emitter, "PropertiesChanged", "sa{sv}as", (messages.UNIT_IFACE, changed, [])
    ).serialise(serial=7)
    return data


def job_removed(unit: str) -> bytes:
    emitter = DBusAddress(messages.MANAGER_PATH, interface=messages.MANAGER_IFACE)
    data: bytes = new_signal(
        emitter, "JobRemoved", "uoss", (3, "/org/freedesktop/systemd1/job/3", unit, "done")
    ).serialise(serial=8)
    return data


def reply_to(serial: int) -> bytes:
    call = messages.get_unit("slotmgr-ab12.service")
    call.header.serial = serial
    data: bytes = new_method_return(call, "o", (UNIT,)).serialise(serial=9)
    return data


def kept_by(matches: list[messages.SignalMatch]) -> Callable[[Header], bool]:
    return lambda header: bus.is_wanted(header, matches)


def drain(stream: bus._MessageStream, wanted: Callable[[Header], bool]) -> list[Message]:
    return list(iter(lambda: stream.next_message(wanted), None))


@pytest.mark.parametrize("chunk", [1, 7, 16, 100, 1 << 20])
def test_messages_come_out_whole_whatever_the_reads_cut(chunk: int) -> None:
    data = properties_changed(UNIT, "active") + job_removed("x.service") + reply_to(5)
    stream = bus._MessageStream()
    got = []
    for start in range(0, len(data), chunk):
        stream.add_data(data[start : start + chunk])
        got += drain(stream, lambda _h: True)
    assert [m.header.message_type for m in got] == [
        MessageType.signal,
        MessageType.signal,
        MessageType.method_return,
    ]
    assert got[0].body[1]["ActiveState"] == ("s", "active")
    assert got[1].body[2] == "x.service"
    assert got[2].header.fields[HeaderFields.reply_serial] == 5


def test_only_the_signals_asked_for_are_kept_and_replies_always() -> None:
    asked = [
        messages.signal_match(messages.PROPERTIES_IFACE, "PropertiesChanged", UNIT),
        messages.signal_match(messages.MANAGER_IFACE, "JobRemoved"),
    ]
    stream = bus._MessageStream()
    stream.add_data(
        properties_changed(OTHER, "active")
        + properties_changed(UNIT, "active")
        + job_removed("y.service")
        + properties_changed(OTHER, "inactive")
        + reply_to(5)
    )
    got = drain(stream, kept_by(asked))
    assert [
        (m.header.fields.get(HeaderFields.path), m.header.fields.get(HeaderFields.member))
        for m in got
    ] == [(UNIT, "PropertiesChanged"), (messages.MANAGER_PATH, "JobRemoved"), (None, None)]


def test_with_nothing_asked_for_no_signal_is_kept() -> None:
    stream = bus._MessageStream()
    stream.add_data(properties_changed(UNIT, "active") + reply_to(4))
    got = drain(stream, kept_by([]))
    assert [m.header.message_type for m in got] == [MessageType.method_return]


def with_sender(data: bytes, sender: str) -> bytes:
    """The message as a broker relays it: with the sender it stamps on it."""
    stream = bus._MessageStream()
    stream.add_data(data)
    msg = stream.next_message(lambda _h: True)
    assert msg is not None
    msg.header.fields[HeaderFields.sender] = sender
    relayed: bytes = msg.serialise(serial=msg.header.serial)
    return relayed


def test_on_a_bus_only_systemds_own_signals_are_believed() -> None:
    """Anyone on the system bus may send anyone a signal: a job's user could
    otherwise tell a root launcher that its job had ended."""
    asked = [messages.signal_match(messages.PROPERTIES_IFACE, "PropertiesChanged", UNIT)]
    stream = bus._MessageStream()
    stream.add_data(
        with_sender(properties_changed(UNIT, "inactive"), ":1.66")
        + with_sender(properties_changed(UNIT, "active"), ":1.1")
    )

    def systemd_is(name: str) -> Callable[[Header], bool]:
        return lambda header: bus.is_wanted(header, asked, systemd_sender=name)

    got = drain(stream, systemd_is(":1.1"))
    assert [m.body[1]["ActiveState"] for m in got] == [("s", "active")]
    # Before systemd has answered a call its name is not known: nothing is believed.
    stream.add_data(with_sender(properties_changed(UNIT, "active"), ":1.1"))
    assert drain(stream, systemd_is("")) == []
    # On the private socket (no sender field) PID 1 is the only peer.
    stream.add_data(properties_changed(UNIT, "active"))
    assert len(drain(stream, lambda header: bus.is_wanted(header, asked))) == 1
