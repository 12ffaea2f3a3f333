"""What the running systemd can do, from its version.

Behaviour that changed between releases is decided here, in one table, so
the rest of slotmgr asks `features.private_pids` instead of comparing
version numbers. Properties a release added are listed in
`slotmgr.systemd.properties` with the version that added them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The oldest systemd slotmgr supports: RHEL 9's.
MINIMUM_VERSION = 252


@dataclass(frozen=True)
class Features:
    version: int
    version_string: str

    @property
    def private_pids(self) -> bool:
        """PrivatePIDs= (a PID namespace made by systemd) exists from 257."""
        return self.version >= 257

    @property
    def cgroup_kill(self) -> bool:
        """KillUnit writes cgroup.kill (atomic) instead of walking PIDs from 257."""
        return self.version >= 257

    @property
    def exec_ex_survives_reload(self) -> bool:
        """ExecStartEx=/ExecStopPostEx= of a transient unit survive a
        daemon-reload. 252 writes them to the unit's file under those names,
        which its own parser does not know: after a reload the unit has lost
        its commands, the stop hook included. Seen fixed in 257."""
        return self.version >= 257


def parse_version(text: str) -> int:
    """'252.38-1~deb12u1' -> 252; 'systemd 257 (257.13-1)' -> 257."""
    match = re.search(r"(\d{3,})", text)
    if not match:
        raise ValueError(f"cannot read a systemd version from {text!r}")
    return int(match.group(1))


def features_from_version(text: str) -> Features:
    return Features(version=parse_version(text), version_string=text)
