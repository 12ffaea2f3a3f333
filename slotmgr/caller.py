"""Who asks, and the one rule of what they may see and act on.

Root, and anyone on their own user manager, sees and acts on every job
there; anyone else on the system manager sees only their own jobs and
records (and acts on none: there only root controls units)."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    uid: int
    user_mode: bool  # talking to the caller's own user manager

    @classmethod
    def current(cls, user_mode: bool) -> Caller:
        return cls(uid=os.geteuid(), user_mode=user_mode)

    @property
    def controls_everything(self) -> bool:
        return self.uid == 0 or self.user_mode

    def owns(self, owner_uid: int) -> bool:
        """Whether a job or record of `owner_uid` is the caller's to see."""
        return self.controls_everything or owner_uid == self.uid


def user_of(user_prop: str, default_uid: int) -> tuple[str, int]:
    """(name, uid) of the user a unit's User= names (a name, a number, or
    empty: `default_uid`, whose the unit then is). An unknown name is
    nobody's (uid -1), so only root may act on its job."""
    if not user_prop or user_prop.isdigit():
        uid = int(user_prop) if user_prop else default_uid
        try:
            return pwd.getpwuid(uid).pw_name, uid
        except KeyError:
            return str(uid), uid
    try:
        return user_prop, pwd.getpwnam(user_prop).pw_uid
    except KeyError:
        return user_prop, -1
