"""The README's commands in CI: .ci/run runs scripts/check, whose stages
start with the README's main command, scripts/demo, and whose last line
counts a failed demo as a failure."""

from __future__ import annotations

from pathlib import Path

from tests import check

REPO = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_commands_as_written() -> None:
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    commands = [
        line.strip()
        for line in ci
        if line.strip() and not line.lstrip().startswith(("#", "echo", "set ", "cd "))
    ]
    assert commands == ["scripts/setup", "exec scripts/check"]
    readme = (REPO / "README.md").read_text()
    assert "scripts/demo     #" in readme and "scripts/check    #" in readme


def test_check_starts_with_the_demo_as_written() -> None:
    stages = check.stages([])
    assert stages[0].name == "demo"
    assert stages[0].argv == [str(REPO / "scripts" / "demo")]
    assert [s.name for s in stages] == [
        "demo",
        "lint",
        "unit",
        "unit-3.9",
        "rpm",
        "guest-252",
        "guest-257",
        "batch-252",
        "batch-257",
    ]
    # The batch tier runs in both batch guests, with the same pytest command.
    batch = {s.name: s.argv for s in stages if s.name.startswith("batch-")}
    assert batch["batch-257"][batch["batch-257"].index("--guest") + 1] == "257-batch"
    assert batch["batch-257"][-1] == batch["batch-252"][-1] == check.BATCH_PYTEST
    # make rpm as the README says it, with no PATH of the check's own.
    assert next(s for s in stages if s.name == "rpm").argv == ["make", "rpm"]


def _stage(name: str, returncode: int, **counts: int) -> check.Stage:
    return check.Stage(name, [], counts=dict(counts), returncode=returncode)


def test_a_failed_demo_fails_the_total() -> None:
    line, ok = check.total_line([_stage("demo", 1), _stage("unit", 0, passed=10)])
    assert (line, ok) == ("10 passed, 1 failed", False)


def test_every_failed_stage_counts() -> None:
    line, ok = check.total_line(
        [_stage("demo", 1), _stage("lint", 1), _stage("guest-252", 1, passed=5, failed=2)]
    )
    assert (line, ok) == ("5 passed, 4 failed", False)


def test_all_passed() -> None:
    line, ok = check.total_line([_stage("demo", 0), _stage("unit", 0, passed=3, skipped=1)])
    assert (line, ok) == ("3 passed, 0 failed, 1 skipped", True)
    line, ok = check.total_line([_stage("guest-257", 0, passed=3, xfailed=1)])
    assert (line, ok) == ("3 passed, 0 failed, 1 xfailed", True)


def test_no_test_ran_is_not_a_pass() -> None:
    assert check.total_line([_stage("lint", 0)]) == ("0 passed, 1 failed", False)
