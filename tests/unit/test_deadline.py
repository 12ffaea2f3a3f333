from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from slotmgr.deadline import Deadline, flock_within


def test_never_has_no_remaining_and_wakes_at_the_given_interval() -> None:
    never = Deadline.after(None)
    assert never.remaining() is None
    assert not never.expired()
    assert never.wake(20.0) == 20.0


def test_a_deadline_counts_down_and_caps_the_wake(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    deadline = Deadline.after(5.0)
    assert deadline.remaining() == 5.0 and deadline.wake(20.0) == 5.0 and deadline.wake(1.0) == 1.0
    now[0] = 104.5
    assert deadline.remaining() == pytest.approx(0.5) and not deadline.expired()
    now[0] = 106.0
    assert deadline.remaining() == 0.0 and deadline.expired() and deadline.wake(20.0) == 0.0


def test_flock_within_takes_a_free_lock_and_gives_up_on_a_held_one(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    waiter = os.open(path, os.O_RDWR)  # a lock of its own: flock is per open file
    try:
        assert flock_within(holder, 0)
        started = time.monotonic()
        assert not flock_within(waiter, 0.2, poll=0.05)
        assert time.monotonic() - started >= 0.2
        os.close(holder)
        holder = -1
        assert flock_within(waiter, 0.2)
    finally:
        for fd in (holder, waiter):
            if fd >= 0:
                os.close(fd)
