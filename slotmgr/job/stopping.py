"""`slotmgr stop`: SIGTERM, a grace period, SIGKILL, and the wait until
nothing of the job is left, its record included."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Callable

from slotmgr.deadline import Deadline
from slotmgr.job.delivery import kill_job
from slotmgr.systemd.manager import Manager, UnitState

# A service's SubStates once its own processes are gone: the ExecStopPost=
# stop hook runs ('stop-post') or the unit is being cleaned up. Past these no
# escalation may happen, or it would kill the stop hook and lose the record.
_AFTER_MAIN = frozenset(
    (
        "stop-post",
        "final-sigterm",
        "final-sigkill",
        "final-watchdog",
        "dead",
        "failed",
        "auto-restart",
        "cleaning",
    )
)
_WAKE_S = 1.0  # re-read the state at least this often, in case a signal is missed


# -- waiting on a unit ------------------------------------------------------------


def is_finished(state: UnitState | None) -> bool:
    return state is None or state.active in ("inactive", "failed")


def processes_gone(state: UnitState | None) -> bool:
    """The job's own processes are gone (what runs now is systemd's clean-up
    or the stop hook)."""
    return is_finished(state) or (state is not None and state.sub in _AFTER_MAIN)


def wait_for(
    manager: Manager,
    unit: str,
    done: Callable[[UnitState | None], bool],
    *,
    timeout: float | None,
) -> UnitState | None:
    """Wait until `done(state)`; raise TimeoutError at the timeout. Call
    manager.watch_unit() first. The state is re-read on every change signal of
    the unit and at least every second, so a missed signal costs a second, no more."""
    deadline = Deadline.after(timeout)
    state = manager.unit_state(unit)
    while not done(state):
        if deadline.expired():
            raise TimeoutError(unit)
        manager.wait_for_unit_change(unit, timeout=deadline.wake(_WAKE_S))
        state = manager.unit_state(unit)
    return state


@dataclass(frozen=True)
class StopOutcome:
    escalated: bool  # SIGKILL was needed after the grace period
    already_stopped: bool


def stop_job(
    manager: Manager,
    unit: str,
    *,
    grace: float | None,
    timeout: float | None = None,
    before_signal: Callable[[], object] | None = None,
) -> StopOutcome:
    """SIGTERM to every process of the job; after `grace` seconds SIGKILL to
    whatever is left of the job's own processes; then wait until the unit is
    inactive or gone, its ExecStopPost= stop hook included. `before_signal`
    runs just before the SIGTERM, once the job is known to be still running
    (it leaves a note of who stopped it, slotmgr.history.stopnote).

    Not StopUnit: its SIGKILL comes after the unit's TimeoutStopSec=, which is
    fixed when the unit starts, and the same timeout bounds the stop hook, so a
    short grace would cut the record short too.
    """
    manager.watch_unit(unit)
    state = manager.unit_state(unit)
    if processes_gone(state):
        wait_for(manager, unit, is_finished, timeout=timeout)
        return StopOutcome(escalated=False, already_stopped=True)
    if before_signal is not None:
        before_signal()
    # To every process of the job, once each (kill_job leaves out the shims
    # that would forward it again), on every systemd alike.
    kill_job(manager, unit, signal.SIGTERM)
    escalated = False
    try:
        wait_for(manager, unit, processes_gone, timeout=grace)
    except TimeoutError:
        outcome = kill_job(
            manager,
            unit,
            signal.SIGKILL,
            only_if=lambda s: not processes_gone(s),
            state=lambda: manager.unit_state(unit),
        )
        escalated = outcome.sent
    wait_for(manager, unit, is_finished, timeout=timeout)
    return StopOutcome(escalated=escalated, already_stopped=False)
