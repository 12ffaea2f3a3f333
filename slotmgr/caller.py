"""Who asks, and the one rule of what they may see and act on.

Root, and anyone on their own user manager, sees and acts on every job
there; anyone else on the system manager sees only their own jobs and
records (and acts on none: there only root controls units)."""

from __future__ import annotations

import os
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
