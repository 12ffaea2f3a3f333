"""The guests: which Debian release gives which systemd version."""

from __future__ import annotations

from dataclasses import dataclass

# Installed in every root image. minbase has no init, no bus and no Python;
# the rest is what slotmgr's tests and its RPM packaging checks call.
PACKAGES = (
    "systemd-sysv",
    "dbus",
    "procps",
    "python3",
    "python3-jeepney",
    "python3-click",
    "python3-pytest",
    "util-linux",
    "e2fsprogs",
    "passwd",
    "rpm2cpio",
    "cpio",
    "psmisc",
    "iproute2",
    "kmod",
    "catatonit",  # the jobs' compiled PID-namespace init (pidshim is the fallback)
)


@dataclass(frozen=True)
class Guest:
    name: str  # what users type: the systemd major version
    suite: str  # Debian release the root image is built from


GUESTS = {
    "252": Guest("252", "bookworm"),
    "257": Guest("257", "trixie"),
}


def get_guest(name: str) -> Guest:
    try:
        return GUESTS[name]
    except KeyError:
        raise ValueError(f"unknown guest {name!r} (choose from {', '.join(GUESTS)})") from None
