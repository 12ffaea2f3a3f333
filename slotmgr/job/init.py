"""Which PID-namespace init a job gets: catatonit where it is installed,
else slotmgr's own pidshim.

catatonit (a small static C program; RHEL 9/10 AppStream, Debian 12/13)
costs the job about a millisecond and no interpreter's memory. pidshim stays
where catatonit cannot serve: a scope (the launcher forks the job, and the
shim makes its namespaces itself), a Landlock scope for abstract sockets and
signals (no shipped tool applies one: util-linux 2.41's setpriv handles file
access only), a node without catatonit, or a node whose admin chose it in
/etc/slotmgr/slotmgr.conf (`[node] init = auto|catatonit|pidshim`). The
choice is the node's (that root-owned file) and the job's own options, never
anything from the caller's environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

from slotmgr.job.spec import CATATONIT_PATHS, INIT_WHY_LANDLOCK, INIT_WHY_SCOPE
from slotmgr.node.config import DEFAULT_CONF, ConfigError


class InitSetting(Enum):
    AUTO = "auto"  # catatonit where installed and nothing needs pidshim
    CATATONIT = "catatonit"  # always (a Landlock scope is then given up)
    PIDSHIM = "pidshim"  # always


@dataclass(frozen=True)
class InitChoice:
    catatonit: str | None  # its path, when it is the job's init
    init_why: str  # why pidshim, for the summary ("" when derived or catatonit)
    landlock_scope: bool
    landlock_missing: str


def find_catatonit() -> str | None:
    """The installed catatonit, if any: RHEL's and Debian 13's path, then
    Debian 12's. Asked once per launch."""
    for path in CATATONIT_PATHS:
        if os.access(path, os.X_OK):
            return path
    return None


def choose_init(
    setting: InitSetting,
    catatonit: str | None,
    *,
    command: tuple[str, ...],
    private_pids: bool,
    scope: bool,
    landlock_scope: bool,
    landlock_missing: str,
) -> InitChoice:
    """Pure: the init for a job, from the node's setting, the catatonit found,
    and whether the job gets a PID namespace, is a scope, and would get a
    Landlock scope (cli._landlock_choice). Raises ConfigError (78) when the
    node asks for catatonit and none is installed."""
    pidshim = InitChoice(None, "", landlock_scope, landlock_missing)
    if not private_pids:
        return pidshim  # no init at all
    if setting is InitSetting.CATATONIT and catatonit is None:
        raise ConfigError(
            f"init = catatonit in {DEFAULT_CONF}, but catatonit is not installed "
            f"(looked for {' and '.join(CATATONIT_PATHS)})",
            hint="dnf install catatonit (RHEL AppStream), or set init = auto",
        )
    if scope:
        return InitChoice(None, INIT_WHY_SCOPE, landlock_scope, landlock_missing)
    if setting is InitSetting.PIDSHIM:
        return InitChoice(
            None, f"[node] init = pidshim in {DEFAULT_CONF}", landlock_scope, landlock_missing
        )
    if command and "=" in command[0]:
        # env(1), which sets the job's variables under catatonit, would take
        # such a name for one.
        return InitChoice(None, "a command name with '='", landlock_scope, landlock_missing)
    if setting is InitSetting.CATATONIT:
        missing = landlock_missing
        if landlock_scope:
            missing = (
                f"the node's init is catatonit ([node] init in {DEFAULT_CONF}), "
                "which applies no Landlock scope; use --private-network"
            )
        return InitChoice(catatonit, "", False, missing)
    if landlock_scope:
        return InitChoice(None, INIT_WHY_LANDLOCK, True, "")
    if catatonit is None:
        return InitChoice(None, "no catatonit installed", False, landlock_missing)
    return InitChoice(catatonit, "", False, landlock_missing)
