"""Bad input: one line naming the value and what is allowed, a distinct exit
code, never a traceback. Run against the real systemd, so that the checks
that need it (versions, units) are the real ones."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from slotmgr.features import parse_version

from .conftest import run_cli

USAGE, NOT_EXECUTABLE, NOT_FOUND = 64, 126, 127


def systemd_version() -> int:
    out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, check=True)
    return parse_version(out.stdout.splitlines()[0])


CASES = [
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
    (["run", "-p", "PrivateTmp=perhaps", "true"], USAGE, "not a boolean"),
    (["run", "-E", "1BAD=x", "true"], USAGE, "invalid --setenv '1BAD=x'"),
    (["run", "-E", "NOEQUALS", "true"], USAGE, "invalid --setenv 'NOEQUALS'"),
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
    (["run", "--", "no-such-command-xyz"], NOT_FOUND, "command not found: 'no-such-command-xyz'"),
    (["run", "--", "/nonexistent/bin/tool"], NOT_FOUND, "command not found"),
    (["run", "--", "/run/slotmgr-tests/plain-file"], NOT_EXECUTABLE, "not executable"),
    (["run", "--", "/etc"], NOT_EXECUTABLE, "not executable"),
]


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """Every case's CLI run, started a few at a time: each is a whole Python
    start, slow under emulation; the tests below then judge one case each."""
    plain = Path("/run/slotmgr-tests/plain-file")
    plain.parent.mkdir(exist_ok=True)
    plain.write_text("not a program\n")
    plain.chmod(0o644)
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = {tuple(args): pool.submit(run_cli, *args) for args, _code, _msg in CASES}
    return {args: future.result() for args, future in runs.items()}


@pytest.mark.parametrize(("args", "code", "message"), CASES,
                         ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_gets_one_line_and_its_code(outcomes, args, code, message):
    out = outcomes[tuple(args)]
    assert out.returncode == code, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("slotmgr: error: ")
    assert message in lines[0]
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_property_newer_than_this_systemd_names_the_version():
    out = run_cli("run", "-p", "MemoryZSwapMax=1G", "-p", "PrivatePIDs=yes", "--", "true")
    if systemd_version() >= 257:
        assert out.returncode == 0, out.stderr
    else:
        assert out.returncode == USAGE
        assert out.stderr.strip().splitlines() == [
            "slotmgr: error: MemoryZSwapMax= needs systemd 253 or newer; "
            "this host runs systemd 252"]
