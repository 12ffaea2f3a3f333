"""Pure builders of the D-Bus messages slotmgr sends to systemd.

Nothing here does I/O: each function returns a jeepney Message, so the whole
vocabulary slotmgr speaks to systemd can be unit-tested without a bus.
`slotmgr.systemd.bus` is the only module that sends them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jeepney import DBusAddress, Message, new_method_call

from slotmgr.systemd.wire import Property

SYSTEMD_BUS_NAME = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE = "org.freedesktop.systemd1.Service"
SCOPE_IFACE = "org.freedesktop.systemd1.Scope"
SLICE_IFACE = "org.freedesktop.systemd1.Slice"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"

MANAGER = DBusAddress(MANAGER_PATH, bus_name=SYSTEMD_BUS_NAME, interface=MANAGER_IFACE)
DBUS_DAEMON = DBusAddress(
    "/org/freedesktop/DBus", bus_name="org.freedesktop.DBus", interface="org.freedesktop.DBus"
)

# systemd's unit name grammar (unit-name.c): a prefix of [A-Za-z0-9:_.\\-@],
# then a known type suffix; at most 255 bytes.
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.(service|scope|slice|socket|target|timer)$")
_JOB_MODES = ("replace", "fail", "isolate", "ignore-dependencies", "ignore-requirements")
_KILL_WHOM = ("main", "control", "all")


def check_unit_name(name: str) -> str:
    """Return `name` if systemd would accept it as a unit name, else raise."""
    if len(name.encode("utf-8", "replace")) > 255 or not _UNIT_NAME.fullmatch(name):
        raise ValueError(
            f"invalid unit name {name!r}: use letters, digits and ':_.-@\\', "
            "ending in .service, .scope or .slice"
        )
    return name


def unit_object_path(name: str) -> str:
    """The object path systemd gives a unit (sd_bus_path_encode's escaping).

    Computing it saves a GetUnit round trip, and works for a unit that has
    not been loaded yet (for instance to watch it before it starts).
    """
    escaped = "".join(
        ch if ch.isascii() and ch.isalnum() else "".join(f"_{b:02x}" for b in ch.encode())
        for ch in name
    )
    if name and name[0].isdigit():
        escaped = f"_{ord(name[0]):02x}{escaped[1:]}"
    return f"{MANAGER_PATH}/unit/{escaped or '_'}"


def _manager_call(method: str, signature: str | None = None, body: tuple[Any, ...] = ()) -> Message:
    return new_method_call(MANAGER, method, signature, body)


def start_transient_unit(
    name: str,
    properties: Sequence[Property],
    *,
    mode: str = "fail",
    aux_units: Sequence[tuple[str, Sequence[Property]]] = (),
) -> Message:
    """Manager.StartTransientUnit(name, mode, properties, aux)."""
    check_unit_name(name)
    if mode not in _JOB_MODES:
        raise ValueError(f"invalid job mode {mode!r}")
    props = [p.as_variant() for p in properties]
    aux = [(aux_name, [p.as_variant() for p in aux_props]) for aux_name, aux_props in aux_units]
    return _manager_call("StartTransientUnit", "ssa(sv)a(sa(sv))", (name, mode, props, aux))


def set_unit_properties(
    name: str, properties: Sequence[Property], *, runtime: bool = True
) -> Message:
    """Manager.SetUnitProperties(name, runtime, properties): runtime=True
    changes only the running unit, not any unit file or drop-in."""
    props = [p.as_variant() for p in properties]
    return _manager_call("SetUnitProperties", "sba(sv)", (check_unit_name(name), runtime, props))


def get_unit(name: str) -> Message:
    return _manager_call("GetUnit", "s", (check_unit_name(name),))


def get_unit_by_pid(pid: int) -> Message:
    return _manager_call("GetUnitByPID", "u", (pid,))


def list_units_by_patterns(states: Sequence[str], patterns: Sequence[str]) -> Message:
    return _manager_call("ListUnitsByPatterns", "asas", (list(states), list(patterns)))


def list_units_by_names(names: Sequence[str]) -> Message:
    return _manager_call("ListUnitsByNames", "as", ([check_unit_name(n) for n in names],))


def kill_unit(name: str, signal: int, *, whom: str = "all") -> Message:
    if whom not in _KILL_WHOM:
        raise ValueError(f"invalid kill target {whom!r}")
    if not 1 <= signal <= 64:
        raise ValueError(f"invalid signal number {signal}")
    return _manager_call("KillUnit", "ssi", (check_unit_name(name), whom, signal))


def freeze_unit(name: str) -> Message:
    return _manager_call("FreezeUnit", "s", (check_unit_name(name),))


def thaw_unit(name: str) -> Message:
    return _manager_call("ThawUnit", "s", (check_unit_name(name),))


def stop_unit(name: str, *, mode: str = "replace") -> Message:
    if mode not in _JOB_MODES:
        raise ValueError(f"invalid job mode {mode!r}")
    return _manager_call("StopUnit", "ss", (check_unit_name(name), mode))


def reset_failed_unit(name: str) -> Message:
    return _manager_call("ResetFailedUnit", "s", (check_unit_name(name),))


def attach_processes_to_unit(name: str, pids: Sequence[int], *, subcgroup: str = "") -> Message:
    if any(p <= 1 for p in pids):
        raise ValueError("PIDs to attach must be greater than 1")
    return _manager_call(
        "AttachProcessesToUnit", "ssau", (check_unit_name(name), subcgroup, list(pids))
    )


def subscribe() -> Message:
    """Manager.Subscribe: ask systemd to emit unit and job signals to us."""
    return _manager_call("Subscribe")


def get_property(path: str, interface: str, name: str) -> Message:
    addr = DBusAddress(path, bus_name=SYSTEMD_BUS_NAME, interface=PROPERTIES_IFACE)
    return new_method_call(addr, "Get", "ss", (interface, name))


def get_all_properties(path: str, interface: str = "") -> Message:
    """Properties.GetAll; an empty interface asks for every interface's."""
    addr = DBusAddress(path, bus_name=SYSTEMD_BUS_NAME, interface=PROPERTIES_IFACE)
    return new_method_call(addr, "GetAll", "s", (interface,))


def get_version() -> Message:
    return get_property(MANAGER_PATH, MANAGER_IFACE, "Version")


def hello() -> Message:
    return new_method_call(DBUS_DAEMON, "Hello")


def add_match(rule: str) -> Message:
    """org.freedesktop.DBus.AddMatch, needed only on the shared system bus."""
    return new_method_call(DBUS_DAEMON, "AddMatch", "s", (rule,))


@dataclass(frozen=True)
class SignalMatch:
    """Signals of systemd a client asks for. On the system bus the broker
    filters by `rule`; on systemd's private socket, where systemd sends every
    signal of every unit to every client, slotmgr.systemd.bus drops the others by the
    same fields as soon as their header is read (see `accepts`)."""

    interface: str
    member: str
    path: str | None = None

    @property
    def rule(self) -> str:
        rule = (
            f"type='signal',sender='{SYSTEMD_BUS_NAME}',interface='{self.interface}',"
            f"member='{self.member}'"
        )
        if self.path is not None:
            rule += f",path='{self.path}'"
        return rule

    def accepts(self, interface: str, member: str, path: str) -> bool:
        return (
            interface == self.interface
            and member == self.member
            and (self.path is None or path == self.path)
        )


def signal_match(interface: str, member: str, path: str | None = None) -> SignalMatch:
    return SignalMatch(interface, member, path)
