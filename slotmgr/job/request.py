"""What `slotmgr run` was asked, checked before any bus is opened: the job's
user and group, the slot wait, the init and its Landlock scope, the scratch base.
"""

from __future__ import annotations

import grp
import os
import pwd

from slotmgr.errors import UsageError
from slotmgr.job.init import InitChoice


def is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def check_user(uid: str | None, gid: str | None) -> tuple[str | None, str | None]:
    if (uid or gid) and os.geteuid() != 0:
        raise UsageError("--uid/--gid need slotmgr to run as root")
    if uid is not None:
        try:
            entry = pwd.getpwuid(int(uid)) if is_number(uid) else pwd.getpwnam(uid)
        except KeyError:
            raise UsageError(f"invalid --uid {uid!r}: no such user on this node") from None
        uid = entry.pw_name
    if gid is not None:
        try:
            group = grp.getgrgid(int(gid)) if is_number(gid) else grp.getgrnam(gid)
        except KeyError:
            raise UsageError(f"invalid --gid {gid!r}: no such group on this node") from None
        gid = group.gr_name
    return uid, gid


def check_wait(value: str | None) -> int | None:
    """--wait-for-slot DURATION in microseconds (None: do not wait)."""
    if value is None:
        return None
    from slotmgr.systemd.values import parse_timespan_usec

    try:
        usec = parse_timespan_usec(value)
    except ValueError as exc:
        raise UsageError(f"invalid --wait-for-slot: {exc}") from None
    return usec


def landlock_choice(no_landlock: bool, no_private_pids: bool) -> tuple[bool, str]:
    """Whether the job's init scopes abstract sockets and signals, and if not, why."""
    if no_landlock:
        return False, "Landlock scoping turned off (--no-landlock); use --private-network"
    if no_private_pids:
        return False, "no init to scope them (--no-private-pids); use --private-network"
    from slotmgr.pidshim import LANDLOCK_SCOPE_ABI, landlock_abi

    abi = landlock_abi()
    if abi < LANDLOCK_SCOPE_ABI:
        return False, (
            f"kernel lacks Landlock ABI {LANDLOCK_SCOPE_ABI} (has {abi or 'none'}); "
            "use --private-network"
        )
    return True, ""


def init_choice(
    command: tuple[str, ...], *, no_private_pids: bool, scope: bool, landlock: tuple[bool, str]
) -> InitChoice:
    """The job's init (slotmgr.job.init): the node's setting, what is installed."""
    from slotmgr.job.init import InitSetting, choose_init, find_catatonit
    from slotmgr.node.config import load_node_config

    setting = InitSetting(load_node_config().init) if not no_private_pids else InitSetting.AUTO
    return choose_init(
        setting,
        find_catatonit() if not no_private_pids else None,
        command=command,
        private_pids=not no_private_pids,
        scope=scope,
        landlock_scope=landlock[0],
        landlock_missing=landlock[1],
    )


def scratch_base(*, scope: bool, user_mode: bool) -> str | None:
    """Where the job's scratch directory goes: the node's choice (slotmgr.node.config).
    None for a scope (systemd mounts nothing for it and runs no hook to remove
    it) and for a job of a user manager or a non-root caller (root makes it)."""
    if scope or user_mode or os.geteuid() != 0:
        return None
    from slotmgr.node.config import load_node_config

    return load_node_config().scratch_base
