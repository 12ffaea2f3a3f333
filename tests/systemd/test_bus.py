"""The bus layer against the real systemd of the guest (issue: foundation)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from slotmgr.errors import BusUnavailable, RemoteError
from slotmgr.systemd import messages
from slotmgr.systemd.bus import Connection
from slotmgr.systemd.manager import NO_SUCH_UNIT, Manager
from slotmgr.systemd.wire import Property

from .conftest import systemctl_show, wait_until


def test_prints_systemd_version_and_features_match_it() -> None:
    first_line = subprocess.run(
        ["systemctl", "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    print(f"\nguest: {first_line}")
    manager = Manager.connect()
    try:
        features = manager.features
    finally:
        manager.close()
    assert first_line.split()[1] == str(features.version)
    assert features.private_pids == (features.version >= 257)


@pytest.mark.parametrize("want_bus", [False, True], ids=["private-socket", "system-bus"])
def test_transient_service_with_limits_round_trip(want_bus: bool, unique: str) -> None:
    unit = f"{unique}.service"
    manager = Manager.connect(want_bus=want_bus)
    assert manager.conn.is_direct is (not want_bus)
    try:
        manager.subscribe(messages.signal_match(messages.MANAGER_IFACE, "JobRemoved"))
        props = [
            Property("ExecStart", "a(sasb)", [("/bin/true", ["/bin/true"], False)]),
            Property("RemainAfterExit", "b", True),  # keep it active to read it back
            Property("MemoryMax", "t", 64 * 1024**2),
            Property("IOWeight", "t", 321),
            Property("CPUAccounting", "b", True),
            Property("PrivateTmp", "b", True),
        ]
        job = manager.start_transient_unit(unit, props)
        assert job.startswith("/org/freedesktop/systemd1/job/")
        assert manager.wait_for_job(job, timeout=60) == "done"
        service = manager.unit_properties(unit, messages.SERVICE_IFACE)
        assert service["Result"] == "success"
        assert service["ExecMainStatus"] == 0
        assert service["MemoryMax"] == 64 * 1024**2
        assert service["IOWeight"] == 321
        assert isinstance(service["CPUUsageNSec"], int) and service["CPUUsageNSec"] != 2**64 - 1
        shown = systemctl_show(
            unit, "MemoryMax", "IOWeight", "PrivateTmp", "CPUAccounting", "Transient"
        )
        assert shown == {
            "MemoryMax": str(64 * 1024**2),
            "IOWeight": "321",
            "PrivateTmp": "yes",
            "CPUAccounting": "yes",
            "Transient": "yes",
        }
    finally:
        subprocess.run(["systemctl", "stop", unit], check=False)
        manager.close()


def test_leftover_failed_unit_is_reset_and_retried(unique: str) -> None:
    unit = f"{unique}.service"
    subprocess.run(["systemd-run", "--quiet", f"--unit={unit}", "/bin/false"], check=True)
    wait_until(
        lambda: systemctl_show(unit, "ActiveState")["ActiveState"] == "failed",
        what=f"{unit} to fail",
    )
    manager = Manager.connect()
    try:
        manager.subscribe(messages.signal_match(messages.MANAGER_IFACE, "JobRemoved"))
        props = [Property("ExecStart", "a(sasb)", [("/bin/true", ["/bin/true"], False)])]
        # Without the reset the name is taken: systemd says so.
        with pytest.raises(RemoteError) as info:
            manager.conn.call(messages.start_transient_unit(unit, props))
        assert info.value.name == "org.freedesktop.systemd1.UnitExists"
        job = manager.start_transient_unit(unit, props)
        assert manager.wait_for_job(job, timeout=60) == "done"
    finally:
        manager.close()


def test_remote_errors_are_typed() -> None:
    manager = Manager.connect()
    try:
        with pytest.raises(RemoteError) as info:
            manager.conn.call(messages.get_unit("no-such-unit-here.service"))
        assert info.value.name == NO_SUCH_UNIT
        assert "no-such-unit-here.service" in str(info.value)
        assert manager.unit_active_state("no-such-unit-here.service") is None
    finally:
        manager.close()


def test_missing_socket_is_bus_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BusUnavailable, match="cannot connect"):
        Connection(str(tmp_path / "nothing"), say_hello=False)


def test_freeze_thaw_and_kill(unique: str) -> None:
    unit = f"{unique}.service"
    subprocess.run(["systemd-run", "--quiet", f"--unit={unit}", "sleep", "300"], check=True)
    manager = Manager.connect()
    try:
        manager.freeze(unit)
        assert systemctl_show(unit, "FreezerState")["FreezerState"] == "frozen"
        manager.thaw(unit)
        assert systemctl_show(unit, "FreezerState")["FreezerState"] == "running"
        manager.kill(unit, 9)
        wait_until(
            lambda: systemctl_show(unit, "ActiveState")["ActiveState"] != "active",
            what=f"{unit} to die",
        )
    finally:
        subprocess.run(["systemctl", "reset-failed", unit], check=False)
        manager.close()
