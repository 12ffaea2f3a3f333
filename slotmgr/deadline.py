"""Deadlines, computed in one place: a moment on the monotonic clock, or never.

Every wait in slotmgr (a bus reply, a unit's end, a place in a slot, a lock)
takes a `Deadline` rather than doing its own clock arithmetic, so "how long is
left" and "wake at least this often" mean the same everywhere.
"""

from __future__ import annotations

import fcntl
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    at: float | None  # time.monotonic() at which time is up; None: never

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """`seconds` from now; None waits forever."""
        return cls(None if seconds is None else time.monotonic() + seconds)

    def remaining(self) -> float | None:
        """Seconds left (0.0 once passed), None for never."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def wake(self, every: float) -> float:
        """How long to sleep: `every`, or less if the deadline comes sooner."""
        remaining = self.remaining()
        return every if remaining is None else min(every, remaining)


def flock_within(fd: int, seconds: float, *, poll: float = 0.02) -> bool:
    """An exclusive flock on `fd`, tried without blocking until `seconds`
    have passed (a blocking flock could wait forever); False if it did not come."""
    deadline = Deadline.after(seconds)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if deadline.expired():
                return False
            time.sleep(deadline.wake(poll))
