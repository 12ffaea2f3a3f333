"""The launcher's start of a unit, without a bus: what a refusal and what a
start that systemd did not answer in time leave behind (a stand-in Manager
answers as the real one would; the real one is in tests/systemd)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import cast

import pytest

from slotmgr.errors import BusTimeout, ExitCode, RemoteError, SlotmgrError
from slotmgr.history import store as history
from slotmgr.job import runner
from slotmgr.job.spec import JobSpec
from slotmgr.systemd.features import features_from_version
from slotmgr.systemd.manager import Manager


class StandInManager:
    def __init__(self, start_error: SlotmgrError) -> None:
        self.features = features_from_version("252")
        self.start_error = start_error

    def start_transient_unit(self, name: str, props: object, aux_units: object = ()) -> None:
        raise self.start_error


def spec_in(tmp_path: Path, scratch: str | None) -> JobSpec:
    return JobSpec(
        command=("true",),
        job_id="ab12",
        unit="slotmgr-ab12.service",
        history_db=str(tmp_path / "history.db"),
        python="/usr/bin/python3",
        run_id="run-ab12",
        scratch_dir=scratch,
    )


def start(tmp_path: Path, error: SlotmgrError, scratch: str) -> tuple[SlotmgrError, list[str]]:
    spec = spec_in(tmp_path, scratch)
    with pytest.raises(SlotmgrError) as raised:
        runner._start_and_wait(
            cast(Manager, StandInManager(error)),
            spec,
            [],
            contextlib.nullcontext((0, 1, 2)),
            0,  # the watcher's stdin: unused, the spec is not bound
            on_start=None,
        )
    return raised.value, os.listdir(history.spool_dir(spec.history_db))


def test_a_refused_start_leaves_no_launch_file_and_no_scratch(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    error, spooled = start(
        tmp_path, RemoteError("org.freedesktop.DBus.Error.Failed", "no"), str(scratch)
    )
    assert error.exit_code == ExitCode.SYSTEMD_REFUSED
    assert spooled == [] and not scratch.exists()


def test_an_unanswered_start_keeps_what_the_units_hook_needs(tmp_path: Path) -> None:
    """The unit may still be made: its hook completes the record from the
    launch file and removes the scratch itself, so the launcher keeps both."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    error, spooled = start(
        tmp_path, BusTimeout("systemd did not answer StartTransientUnit in time"), str(scratch)
    )
    assert error.exit_code == ExitCode.UNAVAILABLE
    assert error.one_line() == (
        "systemd did not answer StartTransientUnit in time; the job may "
        "still start (see: systemctl status slotmgr-ab12.service)"
    )
    assert spooled == ["run-ab12.start"] and scratch.exists()
