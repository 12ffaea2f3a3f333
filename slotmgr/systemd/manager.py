"""systemd's manager as slotmgr uses it: a thin layer over `slotmgr.systemd.bus`.

Each method is one or two calls; the logic of jobs lives elsewhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from slotmgr.deadline import Deadline
from slotmgr.errors import BusUnavailable, RemoteError
from slotmgr.systemd import bus, messages
from slotmgr.systemd.features import MINIMUM_VERSION, Features, features_from_version
from slotmgr.systemd.wire import Property

_RECHECK_S = 20.0  # a unit that sends no signal for this long is asked for its state

NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
UNIT_EXISTS = "org.freedesktop.systemd1.UnitExists"
NO_UNIT_FOR_PID = "org.freedesktop.systemd1.NoUnitForPID"
_GONE = (NO_UNIT_FOR_PID, NO_SUCH_UNIT, "org.freedesktop.DBus.Error.UnknownObject")


class UnitState(NamedTuple):
    active: str  # ActiveState
    sub: str  # SubState


class Manager:
    def __init__(self, conn: bus.Connection) -> None:
        self.conn = conn
        self._features: Features | None = None
        self._subscribed = False

    @classmethod
    def connect(
        cls, *, user: bool = False, want_bus: bool = False, prefer_bus: bool = False
    ) -> Manager:
        return cls(bus.connect(user=user, want_bus=want_bus, prefer_bus=prefer_bus))

    def close(self) -> None:
        self.conn.close()

    @property
    def address(self) -> str:
        """Where it is reached: the bus's or the private socket's path."""
        return self.conn.path

    @property
    def interrupt_fd(self) -> int | None:
        """A pipe whose data ends any wait on the bus with Interrupted (the
        launcher routes its signals there); None: waits end only by time."""
        return self.conn.interrupt_fd

    @interrupt_fd.setter
    def interrupt_fd(self, fd: int | None) -> None:
        self.conn.interrupt_fd = fd

    @property
    def features(self) -> Features:
        if self._features is None:
            (variant,) = self.conn.call(messages.get_version())
            features = features_from_version(str(variant[1]))
            if features.version < MINIMUM_VERSION:
                raise BusUnavailable(
                    f"systemd {features.version} is too old: "
                    f"slotmgr needs {MINIMUM_VERSION} or newer"
                )
            self._features = features
        return self._features

    def subscribe(self, *matches: messages.SignalMatch) -> None:
        """Ask for signals before acting, so none is missed. Only the signals
        asked for are kept, on the bus and on the private socket alike."""
        self.conn.keep_signals(matches)
        if not self.conn.is_direct:
            for match in matches:
                self.conn.call(messages.add_match(match.rule))
        if not self._subscribed:
            self.conn.call(messages.subscribe())
            self._subscribed = True

    def start_transient_unit(
        self,
        name: str,
        properties: Sequence[Property],
        *,
        aux_units: Sequence[tuple[str, Sequence[Property]]] = (),
    ) -> str:
        """Start the unit; return the job's object path.

        A failed unit of the same name left from an earlier run blocks the
        name ("Unit ... already exists"): reset it and try once more.
        """
        msg = messages.start_transient_unit(name, properties, aux_units=aux_units)
        try:
            (job,) = self.conn.call(msg)
        except RemoteError as exc:
            if exc.name != UNIT_EXISTS or not self.unit_is_failed(name):
                raise
            self.reset_failed(name)
            (job,) = self.conn.call(msg)
        return str(job)

    def wait_for_job(self, job_path: str, *, timeout: float | None = None) -> str:
        """Wait for Manager.JobRemoved of `job_path`; return its result
        ("done", "failed", "timeout", "canceled", "dependency", "skipped")."""
        sig = self.conn.wait_for_signal(
            lambda s: s.member == "JobRemoved" and s.body[1] == job_path, timeout=timeout
        )
        if sig is None:
            raise TimeoutError(job_path)
        return str(sig.body[3])

    def unit_properties(self, name: str, interface: str = "") -> dict[str, Any]:
        """All properties of a loaded unit; NoSuchUnit if it is gone."""
        path = messages.unit_object_path(name)
        (props,) = self.conn.call(messages.get_all_properties(path, interface))
        return {key: value for key, (_sig, value) in props.items()}

    def unit_property(self, name: str, interface: str, prop: str) -> Any:
        (variant,) = self.conn.call(
            messages.get_property(messages.unit_object_path(name), interface, prop)
        )
        return variant[1]

    def unit_of_pid(self, pid: int) -> tuple[str, dict[str, Any]] | None:
        """The name and properties of the unit process `pid` is in (GetUnitByPID);
        None if it is in none, or is gone."""
        try:
            (path,) = self.conn.call(messages.get_unit_by_pid(pid))
            (props,) = self.conn.call(messages.get_all_properties(str(path)))
        except RemoteError as exc:
            if exc.name in _GONE:
                return None
            raise
        values = {key: value for key, (_sig, value) in props.items()}
        return str(values.get("Id", "")), values

    def unit_path(self, name: str) -> str | None:
        """The unit's object path if it is loaded, else None (GetUnit, which,
        unlike a property read, does not load a unit that is not there)."""
        try:
            (path,) = self.conn.call(messages.get_unit(name))
        except RemoteError as exc:
            if exc.name == NO_SUCH_UNIT:
                return None
            raise
        return str(path)

    def set_unit_properties(
        self, name: str, properties: Sequence[Property], *, runtime: bool = True
    ) -> None:
        self.conn.call(messages.set_unit_properties(name, properties, runtime=runtime))

    def unit_is_failed(self, name: str) -> bool:
        try:
            return bool(self.unit_property(name, messages.UNIT_IFACE, "ActiveState") == "failed")
        except RemoteError:
            return False

    def unit_active_state(self, name: str) -> str | None:
        """ActiveState, or None if the unit is not loaded (gone)."""
        path = self.unit_path(name)
        if path is None:
            return None
        (variant,) = self.conn.call(messages.get_property(path, messages.UNIT_IFACE, "ActiveState"))
        return str(variant[1])

    def unit_state(self, name: str) -> UnitState | None:
        """(ActiveState, SubState), or None once the unit is unloaded."""
        path = self.unit_path(name)
        if path is None:
            return None
        try:
            (active,) = self.conn.call(
                messages.get_property(path, messages.UNIT_IFACE, "ActiveState")
            )
            (sub,) = self.conn.call(messages.get_property(path, messages.UNIT_IFACE, "SubState"))
        except RemoteError:
            return None
        return UnitState(str(active[1]), str(sub[1]))

    def watch_unit(self, name: str, *, jobs: bool = False) -> None:
        """Subscribe to what `wait_for_unit_change` waits for (and, with
        `jobs`, to the JobRemoved that `wait_for_job` waits for)."""
        matches = [
            messages.signal_match(
                messages.PROPERTIES_IFACE, "PropertiesChanged", messages.unit_object_path(name)
            ),
            messages.signal_match(messages.MANAGER_IFACE, "UnitRemoved"),
        ]
        if jobs:
            matches.insert(0, messages.signal_match(messages.MANAGER_IFACE, "JobRemoved"))
        self.subscribe(*matches)

    def wait_for_unit_change(self, name: str, *, timeout: float | None) -> bus.Signal | None:
        """The next change of the unit's properties or its removal (call
        `watch_unit` first); None at the timeout."""
        path = messages.unit_object_path(name)
        return self.conn.wait_for_signal(
            lambda s: (
                (s.path == path and s.member == "PropertiesChanged")
                or (s.member == "UnitRemoved" and bool(s.body) and s.body[0] == name)
            ),
            timeout=timeout,
        )

    def wait_for_units_to_change(self, *, timeout: float | None) -> bool:
        """Until any unit goes or any job ends (call `subscribe` for
        UnitRemoved and JobRemoved first); False at the timeout."""
        return (
            self.conn.wait_for_signal(
                lambda s: s.member in ("UnitRemoved", "JobRemoved"), timeout=timeout
            )
            is not None
        )

    def wait_until_inactive(self, name: str, *, timeout: float | None = None) -> str | None:
        """Block until the unit is inactive, failed or gone; return the last
        ActiveState seen (None when the unit was already unloaded)."""
        deadline = Deadline.after(timeout)
        state = self.unit_active_state(name)
        while state not in (None, "inactive", "failed"):
            sig = self.wait_for_unit_change(name, timeout=deadline.wake(_RECHECK_S))
            if sig is None:
                if deadline.expired():
                    raise TimeoutError(name)
                # Quiet for a while: ask. This also learns systemd's new bus
                # name after a re-exec, whose signals were not believed yet.
                state = self.unit_active_state(name)
                continue
            if sig.member == "UnitRemoved":
                return None
            if sig.body[0] != messages.UNIT_IFACE:
                # The Service interface's change (ExecMain*) comes first, on
                # 252 and 257; the Unit's, with ActiveState, follows it.
                continue
            changed = sig.body[1]
            if "ActiveState" in changed:
                state = str(changed["ActiveState"][1])
            else:
                state = self.unit_active_state(name)
        return state

    def stop(self, name: str) -> str:
        (job,) = self.conn.call(messages.stop_unit(name))
        return str(job)

    def kill(self, name: str, signal: int, *, whom: str = "all") -> None:
        self.conn.call(messages.kill_unit(name, signal, whom=whom))

    def answers_within(self, seconds: float) -> contextlib.AbstractContextManager[None]:
        """Calls inside wait at most `seconds` for systemd's answer."""
        return self.conn.answers_within(seconds)

    def freeze(self, name: str) -> None:
        self.conn.call(messages.freeze_unit(name))

    def thaw(self, name: str, *, timeout: float | None = None) -> None:
        self.conn.call(messages.thaw_unit(name), timeout=timeout)

    def reset_failed(self, name: str) -> None:
        self.conn.call(messages.reset_failed_unit(name))

    def attach_processes(self, name: str, pids: Sequence[int]) -> None:
        self.conn.call(messages.attach_processes_to_unit(name, pids))

    def units_by_names(self, names: Sequence[str]) -> list[tuple[Any, ...]]:
        """ListUnitsByNames: (name, description, load, active, sub, following,
        path, job id, job type, job path) of each."""
        (units,) = self.conn.call(messages.list_units_by_names(names))
        return [tuple(u) for u in units]

    def list_units(
        self, patterns: Sequence[str], states: Sequence[str] = ()
    ) -> list[tuple[Any, ...]]:
        (units,) = self.conn.call(messages.list_units_by_patterns(states, patterns))
        return [tuple(u) for u in units]
