"""Root's launcher on the system bus believes only systemd: anyone on the bus
may send anyone a signal, so another user forging "your job has ended" to a
launcher must change nothing."""

from __future__ import annotations

import pwd
import signal
import subprocess
import sys
import textwrap
import time

from slotmgr.systemd import messages

from .conftest import start_cli, unit_active, wait_until

FORGER = textwrap.dedent("""
    import sys
    from jeepney import DBusAddress, HeaderFields, new_signal
    from jeepney.io.blocking import open_dbus_connection

    destination, path, job_path, unit = sys.argv[1:5]
    conn = open_dbus_connection(bus="SYSTEM")
    props = DBusAddress(path, interface="org.freedesktop.DBus.Properties")
    changed = {"ActiveState": ("s", "inactive"), "SubState": ("s", "dead")}
    forged = new_signal(props, "PropertiesChanged", "sa{sv}as",
                        ("org.freedesktop.systemd1.Unit", changed, []))
    manager = DBusAddress("/org/freedesktop/systemd1",
                          interface="org.freedesktop.systemd1.Manager")
    removed = new_signal(manager, "UnitRemoved", "so", (unit, path))
    for msg in (forged, removed):
        msg.header.fields[HeaderFields.destination] = destination  # to this launcher alone
        conn.send(msg)
    conn.close()
    print("sent")
""")


def unique_name_of(pid: int) -> str:
    out = subprocess.run(
        ["busctl", "--system", "list", "--unique", "--no-legend"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[1] == str(pid):
            return fields[0]
    return ""


def test_a_forged_end_of_job_from_another_user_changes_nothing(unique: str) -> None:
    unit = f"slotmgr-{unique}.service"
    job = start_cli("run", "--job-id", unique, "--", "sleep", "600")
    try:
        wait_until(lambda: unit_active(unit), what=unit)
        name = unique_name_of(job.pid)
        assert name.startswith(":"), "the launcher is on the system bus"
        nobody = pwd.getpwnam("nobody")
        forged = subprocess.run(
            [
                sys.executable,
                "-c",
                FORGER,
                name,
                messages.unit_object_path(unit),
                "/org/freedesktop/systemd1/job/1",
                unit,
            ],
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert forged.stdout.strip() == "sent", forged.stderr
        time.sleep(5)
        assert job.poll() is None, job.communicate(timeout=5)
        assert unit_active(unit)
    finally:
        job.send_signal(signal.SIGTERM)
        _out, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
    assert "no accounting record" not in err
