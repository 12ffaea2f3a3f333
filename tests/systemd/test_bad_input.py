"""Bad input: one line naming the value and what is allowed, a distinct exit
code, never a traceback. Run against the real systemd, so that the checks
that need it (versions, units) are the real ones."""

from __future__ import annotations

import json
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from slotmgr.systemd.features import parse_version

from .conftest import run_cli, start_cli, systemctl_show, unit_active, wait_until

USAGE, NOT_EXECUTABLE, NOT_FOUND = 64, 126, 127


def systemd_version() -> int:
    out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, check=True)
    return parse_version(out.stdout.splitlines()[0])


CASES: list[tuple[list[str | bytes], int, str]] = [
    (["run", "--memory-max", "lots", "true"], USAGE, "'lots' is not a size"),
    (["run", "--memory-max", "-5M", "true"], USAGE, "is not a size"),
    (["run", "--memory-max", "150%", "true"], USAGE, "at most 100%"),
    (["run", "--memory-high", "2X", "true"], USAGE, "MemoryHigh=2X"),
    (["run", "--memory-swap-max", "", "true"], USAGE, "MemorySwapMax="),
    (["run", "--cpu-quota", "50", "true"], USAGE, "'50' is not a CPU quota"),
    (["run", "--cpu-quota", "0%", "true"], USAGE, "above 0"),
    (["run", "--cpu-weight", "0", "true"], USAGE, "from 1 to 10000"),
    (["run", "--cpu-weight", "10001", "true"], USAGE, "from 1 to 10000"),
    (["run", "--cpus", "0-99999", "true"], USAGE, "out of range"),
    (["run", "--cpus", "64", "true"], USAGE, "does not exist"),
    (["run", "--cpus", "a", "true"], USAGE, "not a CPU list"),
    (["run", "--cpus", "3-1", "true"], USAGE, "backwards"),
    (["run", "--io-weight", "abc", "true"], USAGE, "from 1 to 10000"),
    (["run", "--io-read-bandwidth-max", "/nonexistent", "1M", "true"], USAGE, "does not exist"),
    (["run", "--io-write-bandwidth-max", "dev", "1M", "true"], USAGE, "absolute path"),
    (["run", "--io-write-bandwidth-max", "/", "fast", "true"], USAGE, "'fast' is not a size"),
    (["run", "--tasks-max", "0", "true"], USAGE, "task count"),
    (["run", "--tasks-max", "many", "true"], USAGE, "task count"),
    (["run", "--runtime-max", "soon", "true"], USAGE, "not a time span"),
    (["run", "--runtime-max", "0", "true"], USAGE, "above 0"),
    (["run", "-p", "Bogus=1", "true"], USAGE, "unknown or unsupported property 'Bogus'"),
    (["run", "-p", "ExecStart=/bin/sh", "true"], USAGE, "unknown or unsupported property"),
    (["run", "-p", "MemoryLow", "true"], USAGE, "is not KEY=VALUE"),
    (["run", "-p", "OOMPolicy=explode", "true"], USAGE, "use one of continue, stop, kill"),
    (["run", "-p", "PrivateDevices=perhaps", "true"], USAGE, "not a boolean"),
    (["run", "-E", "1BAD=x", "true"], USAGE, "invalid --setenv '1BAD=x'"),
    (["run", "-E", "NO EQUALS", "true"], USAGE, "invalid --setenv 'NO EQUALS'"),
    (["run", "--uid", "no-such-user-xyz", "true"], USAGE, "no such user"),
    (["run", "--gid", "no-such-group-xyz", "true"], USAGE, "no such group"),
    (["run", "--unit", "bad name", "true"], USAGE, "invalid unit name"),
    (["run", "--unit", "job.timer", "true"], USAGE, "must end in .service"),
    (["run", "--slice", "batch", "true"], USAGE, "ends in .slice"),
    (["run", "--job-id", "a/b", "true"], USAGE, "invalid --job-id"),
    (["run", "--working-directory", "/nonexistent-dir", "true"], USAGE, "is not a directory"),
    (["run", "--json", "/nonexistent-dir/x.json", "true"], USAGE, "cannot write --json"),
    (["run"], USAGE, "Missing argument"),
    (["run", "--no-such-option", "true"], USAGE, "No such option"),
    (["frobnicate"], USAGE, "No such command"),
    # What the job's owner may not choose (issue 9, finding 5), and values past what the
    # wire takes (finding 11): refused before any unit is made, in one line.
    (
        ["run", "-p", "SupplementaryGroups=root", "true"],
        USAGE,
        "SupplementaryGroups= is reserved for the node's admin",
    ),
    (["run", "-p", "Delegate=yes", "true"], USAGE, "Delegate= is reserved for the node's admin"),
    (["run", "-p", "TimeoutStopSec=1us", "true"], USAGE, "TimeoutStopSec= is set by slotmgr"),
    (["run", "-p", "CPUAccounting=no", "true"], USAGE, "CPUAccounting= is set by slotmgr"),
    (
        ["run", "-p", "InaccessiblePaths=/var/lib/slotmgr", "true"],
        USAGE,
        "InaccessiblePaths= is set by slotmgr",
    ),
    (["run", "-p", "ProtectSystem=strict", "true"], USAGE, "use one of yes, no, full"),
    (
        ["run", "-p", "Nice=-5", "true"],
        USAGE,
        "Nice=-5: '-5' is not a valid Nice=: use an integer from 0 to 19",
    ),
    (["run", "-p", "OOMScoreAdjust=-1000", "true"], USAGE, "use an integer from 0 to 1000"),
    (
        ["run", "--runtime-max", "12h", "-p", "RuntimeMaxSec=infinity", "true"],
        USAGE,
        "RuntimeMaxSec= given twice (--runtime-max 12h and -p RuntimeMaxSec=infinity)",
    ),
    (
        ["run", "-p", "MemoryMax=1G", "-p", "MemoryMax=2G", "true"],
        USAGE,
        "MemoryMax= given twice (-p MemoryMax=1G and -p MemoryMax=2G)",
    ),
    (["run", "-p", "Nice=99999999999", "true"], USAGE, "from 0 to 19"),
    (["run", "-p", "CPUQuota=1e23%", "true"], USAGE, "'1e23%' is not a CPU quota"),
    (["run", "--cpu-quota", "1" + "0" * 23 + "%", "true"], USAGE, "too large: at most 819200%"),
    (["run", "--tasks-max", str(2**70), "true"], USAGE, f"'{2**70}' is too large"),
    (["run", "--memory-max", str(2**64), "true"], USAGE, f"'{2**64}' is too large"),
    (["run", "--runtime-max", "99999999999999999999d", "true"], USAGE, "is too long"),
    (["run", "--cpus", "0-99999999999999999999", "true"], USAGE, "out of range"),
    (["run", "-p", "OOMPolicy=kill\x1b[2J", "true"], USAGE, "holds a control character"),
    (["run", "--", b"caf\xe9"], USAGE, "argument 3 (caf\\xe9) is not valid UTF-8 (byte 0xe9)"),
    (["run", "-E", b"NAME=\xff", "--", "true"], USAGE, "argument 3 (NAME=\\xff) is not valid"),
    (["run", "--unit", "job.service\n", "true"], USAGE, "invalid unit name 'job.service\\n"),
    (["adopt", "somejob", "99999999999999999999"], USAGE, "invalid PID '99999999999999999999'"),
    (["adopt", "somejob", "\u00b2"], USAGE, "invalid PID '\u00b2'"),  # a superscript two
    (["history", "--limit", "\u00b2"], USAGE, "invalid --limit '\u00b2'"),
    (["run", "--", "no-such-command-xyz"], NOT_FOUND, "command not found: 'no-such-command-xyz'"),
    (["run", "--", "/nonexistent/bin/tool"], NOT_FOUND, "command not found"),
    (["run", "--", "/run/slotmgr-tests/plain-file"], NOT_EXECUTABLE, "not executable"),
    (["run", "--", "/etc"], NOT_EXECUTABLE, "not executable"),
]


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str | bytes, ...], subprocess.CompletedProcess[str]]:
    """Every case's CLI run, started a few at a time: each is a whole Python
    start, slow under emulation; the tests below then judge one case each."""
    plain = Path("/run/slotmgr-tests/plain-file")
    plain.parent.mkdir(exist_ok=True)
    plain.write_text("not a program\n")
    plain.chmod(0o644)
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = {tuple(args): pool.submit(run_cli, *args) for args, _code, _msg in CASES}
    return {args: future.result() for args, future in runs.items()}


@pytest.mark.parametrize(
    ("args", "code", "message"), CASES, ids=[" ".join(map(str, c[0]))[:60] for c in CASES]
)
def test_bad_input_gets_one_line_and_its_code(
    outcomes: dict[tuple[str | bytes, ...], subprocess.CompletedProcess[str]],
    args: list[str],
    code: int,
    message: str,
) -> None:
    out = outcomes[tuple(args)]
    assert out.returncode == code, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("slotmgr: error: ")
    assert message in lines[0]
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_property_newer_than_this_systemd_names_the_version() -> None:
    out = run_cli("run", "-p", "MemoryZSwapMax=1G", "-p", "MemoryZSwapWriteback=yes", "--", "true")
    if systemd_version() >= 257:
        assert out.returncode == 0, out.stderr
    else:
        assert out.returncode == USAGE
        assert out.stderr.strip().splitlines() == [
            "slotmgr: error: MemoryZSwapMax= needs systemd 253 or newer; this host runs systemd 252"
        ]


def test_job_safe_values_reach_the_unit_and_the_job(unique: str) -> None:
    """The job-safe set is not refused on the way: each value is on the unit and
    in effect for the job's processes, and the job still gets its record."""
    unit = f"slotmgr-{unique}.service"
    job = start_cli(
        "run",
        "--job-id",
        unique,
        "--json",
        "-",
        "-p",
        "Nice=5",
        "-p",
        "OOMScoreAdjust=500",
        "-p",
        "ProtectSystem=full",
        "-p",
        "ProtectHome=read-only",
        "-p",
        "NoNewPrivileges=yes",
        "-p",
        "CPUWeight=50",
        "-p",
        "MemoryLow=1M",
        "-p",
        "OOMPolicy=continue",
        "-p",
        "SendSIGHUP=yes",
        "--",
        "sh",
        "-c",
        "nice; cat /proc/self/oom_score_adj; exec sleep 600",
    )
    try:
        wait_until(lambda: unit_active(unit), what=unit)
        assert job.stdout is not None
        assert [job.stdout.readline(), job.stdout.readline()] == ["5\n", "500\n"]
        shown = systemctl_show(
            unit,
            "Nice",
            "OOMScoreAdjust",
            "ProtectSystem",
            "ProtectHome",
            "NoNewPrivileges",
            "CPUWeight",
            "MemoryLow",
            "OOMPolicy",
            "SendSIGHUP",
        )
        assert shown == {
            "Nice": "5",
            "OOMScoreAdjust": "500",
            "ProtectSystem": "full",
            "ProtectHome": "read-only",
            "NoNewPrivileges": "yes",
            "CPUWeight": "50",
            "MemoryLow": str(1024**2),
            "OOMPolicy": "continue",
            "SendSIGHUP": "yes",
        }
    finally:
        job.send_signal(signal.SIGTERM)
        out, err = job.communicate(timeout=120)
    # SendSIGHUP=yes: systemd follows the stop's SIGTERM with a SIGHUP, either may end it.
    assert job.returncode in (143, 129), err
    record = json.loads(out.strip().splitlines()[-1])
    assert (record["job_id"], record["unit"]) == (unique, unit)


def test_control_characters_in_the_command_and_environment_reach_the_job() -> None:
    """Not refused, because systemd takes them as given: a tab, a newline and
    an escape in an argument and in a -E value arrive unchanged."""
    text = "a\tb\nc\x1bd\x7f"
    out = run_cli(
        "run", "-q", "-E", f"ODD={text}", "--", "sh", "-c", 'printf "%s|%s" "$1" "$ODD"', "sh", text
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{text}|{text}"
