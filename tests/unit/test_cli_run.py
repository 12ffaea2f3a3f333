"""`slotmgr run`'s refusals that come before any bus is opened, in-process."""

from __future__ import annotations

import os

import pytest

from slotmgr.cli import main as cli


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(list(args))
    return int(info.value.code or 0), capsys.readouterr().err


def test_a_non_root_caller_on_the_system_manager_gets_77_and_what_to_do(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, err = run_main(capsys, "run", "--", "true")
    assert code == 77
    assert err.count("\n") == 1 and err.startswith("slotmgr: error: only root may run jobs")
    assert "slotmgr --user run" in err and "admin" in err


def test_scope_with_another_user_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(capsys, "run", "--scope", "--uid", "nobody", "--", "true")
    assert code == 64 and "--scope runs the job as the caller" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--unit", "ux.timer"), "invalid --unit 'ux.timer': a service job's unit name must"),
        (("--scope", "--unit", "ux.service"), "invalid --unit 'ux.service': a scope job's unit"),
        (("--output", "out-%x"), "unknown escape %x"),
        (("--append",), "--append needs --output or --error"),
    ],
)
def test_bad_output_and_unit_options_are_one_line_usage_errors(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    code, err = run_main(capsys, "run", *args, "--", "true")
    assert code == 64 and expected in err and err.count("\n") == 1, err


def test_help_names_the_output_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    code = 0
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--help"])
    code = int(info.value.code or 0)
    out = capsys.readouterr().out
    assert code == 0 and "%j" in out and "--verbose" in out and "--append" in out
