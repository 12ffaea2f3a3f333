"""A stopped job is recorded as stopped: the notes slotmgr's stoppers leave,
and how the recorder reads them with what systemd says."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import cast

import pytest

from slotmgr.history import stopnote
from slotmgr.history.accounting import SYSTEMD_STOP_JOB, stopped_result
from slotmgr.history.record import summary_lines, validate
from slotmgr.history.stopnote import StopNote

from .test_record import make

RUN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "run" / "stops"
    monkeypatch.setattr(stopnote, "SYSTEM_DIR", str(directory))
    return directory


def test_a_note_is_left_once_private_and_taken_once(notes: Path) -> None:
    assert stopnote.leave(RUN, StopNote(by="slotmgr stop by uid 0"), user_manager=False)
    assert stat.S_IMODE(os.stat(notes).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(notes / RUN).st_mode) == 0o600
    assert stopnote.take(RUN, user_manager=False) == StopNote(by="slotmgr stop by uid 0")
    assert stopnote.take(RUN, user_manager=False) is None  # taken: a requeue finds none
    assert not stopnote.leave("../escape", StopNote(by="x"), user_manager=False)


def test_a_later_note_replaces_an_earlier_one(notes: Path) -> None:
    stopnote.leave(RUN, StopNote(by="slotmgr kill -s USR1 by uid 0", signal=10), user_manager=False)
    stopnote.leave(RUN, StopNote(by="slotmgr stop by uid 0"), user_manager=False)
    assert cast(StopNote, stopnote.take(RUN, user_manager=False)).by == "slotmgr stop by uid 0"


def test_a_directory_of_someone_else_is_not_trusted(notes: Path) -> None:
    notes.mkdir(parents=True)
    os.chmod(notes, 0o777)
    assert not stopnote.leave(RUN, StopNote(by="x"), user_manager=False)


def test_invocation_id_as_systemd_shows_it() -> None:
    assert stopnote.invocation_id(bytes(range(16))) == "000102030405060708090a0b0c0d0e0f"
    assert stopnote.invocation_id([0xAB, 0xCD]) == "abcd"
    assert stopnote.invocation_id(None) == ""


@pytest.mark.parametrize(
    ("result", "status", "note", "job", "expected"),
    [
        # Ended by itself: as systemd says, even with status 143.
        ("exit-code", 143, None, None, ("exit-code", None)),
        ("success", 0, None, None, ("success", None)),
        # systemctl stop / a batch system's StopUnit: a stop job is pending.
        ("success", 143, None, "stop", ("cancelled", SYSTEMD_STOP_JOB)),
        # slotmgr's own stoppers: their note says who.
        (
            "success",
            143,
            StopNote(by="slotmgr stop by uid 0"),
            None,
            ("cancelled", "slotmgr stop by uid 0"),
        ),
        (
            "signal",
            137,
            StopNote(by="slotmgr stop by uid 0"),
            None,
            ("cancelled", "slotmgr stop by uid 0"),
        ),
        # The launcher's StopUnit leaves both: the note is the more precise.
        (
            "success",
            143,
            stopnote.launcher_signalled(signal.SIGTERM),
            "stop",
            ("cancelled", "signal SIGTERM to slotmgr run"),
        ),
        # A kill counts only when the job died of that signal.
        (
            "signal",
            138,
            StopNote(by="slotmgr kill -s USR1 by uid 0", signal=10),
            None,
            ("cancelled", "slotmgr kill -s USR1 by uid 0"),
        ),
        (
            "success",
            0,
            StopNote(by="slotmgr kill -s USR1 by uid 0", signal=10),
            None,
            ("success", None),
        ),
        # The OOM killer says more than "stopped".
        ("oom-kill", 137, StopNote(by="slotmgr stop by uid 0"), "stop", ("oom-kill", None)),
    ],
)
def test_stopped_result(
    result: str,
    status: int,
    note: StopNote | None,
    job: str | None,
    expected: tuple[str, str | None],
) -> None:
    assert stopped_result(result, status, note, job) == expected


def test_a_cancelled_record_validates_and_its_summary_says_who() -> None:
    rec = make(result="cancelled", exit_status=143, stopped_by="slotmgr stop by uid 0")
    assert validate(json.loads(rec.to_json())) == []
    assert "finished: cancelled (slotmgr stop by uid 0), exit status 143" in summary_lines(rec)[0]
