"""`slotmgr run` as a batch system runs it for a user, and as a user runs it:
whose ids, which directory, which files, what the job's environment reaches."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slotmgr.history.record import validate

from .accounts import ensure_user, slotmgr_as
from .conftest import (
    REPO,
    processes_of,
    run_cli,
    start_cli,
    systemctl_show,
    unit_active,
    wait_until,
)

WORK = Path("/run/slotmgr-tests")  # not /tmp: each job has its own /tmp
CAP_LINES = ("CapInh", "CapPrm", "CapEff", "CapAmb")


@pytest.fixture
def user_dir(unique: str) -> Iterator[Path]:
    """A directory of user nobody's own, reachable by them."""
    WORK.mkdir(exist_ok=True)
    WORK.chmod(0o755)
    path = WORK / f"{unique}-home"
    path.mkdir()
    shutil.chown(path, "nobody", "nogroup")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("slotmgr: error: ") and "Traceback" not in out.stderr
    return lines[0]


def record_of(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert validate(record) == [], validate(record)
    return record


def capabilities(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in status
        if line.startswith(CAP_LINES)
    }


# -- identity --------------------------------------------------------------------------


def test_scope_refuses_another_user_and_keeps_its_working_directory(unique: str) -> None:
    out = run_cli("run", "--scope", "--uid", "nobody", "--", "id", "-un")
    assert out.returncode == 64 and out.stdout == ""  # never run as root instead
    assert "--scope runs the job as the caller" in one_error_line(out)
    out = run_cli("run", "--scope", "--quiet", "--working-directory", "/var", "--", "pwd")
    assert (out.returncode, out.stdout) == (0, "/var\n"), out.stderr


def test_a_root_job_says_user_root_and_starts_where_it_was_called(unique: str) -> None:
    unit = f"slotmgr-{unique}.service"
    job = start_cli("run", "--job-id", unique, "--", "sleep", "600", cwd="/var")
    try:
        wait_until(lambda: unit_active(unit), what=unit)
        shown = systemctl_show(unit, "User", "WorkingDirectory")
        assert shown["User"] == "root"
        assert shown["WorkingDirectory"] == "!/var"  # "!": systemctl's show of "-"
    finally:
        job.send_signal(signal.SIGTERM)
        job.communicate(timeout=120)


def test_a_non_root_caller_on_the_system_manager_is_told_what_to_do() -> None:
    alice = ensure_user("slotalice")
    out = slotmgr_as(alice, "run", "--", "true")
    assert out.returncode == 77
    line = one_error_line(out)
    assert "only root may run jobs on the system manager" in line
    assert "slotmgr --user run" in line and "AccessDenied" not in line


def test_the_jobs_environment_never_reaches_the_capable_shim(unique: str) -> None:
    """252: the init's unshare holds CAP_SYS_ADMIN (pidshim's until it forks the
    job; util-linux's unshare outside catatonit's namespace while the job
    runs); a variable the job sets (LD_PRELOAD, here a harmless library, and a
    marker) must reach only processes without any capability: the job's own,
    after the init."""
    unit = f"slotmgr-{unique}.service"
    mark = f"SLOTMGR_T_{unique}=1"
    job = start_cli(
        "run",
        "--job-id",
        unique,
        "--uid",
        "nobody",
        "--working-directory",
        "/",
        "-E",
        mark,
        "-E",
        "LD_PRELOAD=libc.so.6",
        "--",
        "sleep",
        "600",
    )
    try:
        wait_until(lambda: unit_active(unit) and len(processes_of(unit)) >= 2, what=unit)
        wait_until(
            lambda: any(
                Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep")
                for p in processes_of(unit)
            ),
            what="the job's sleep",
        )
        seen, seen_env = {}, {}
        for pid in processes_of(unit):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            seen[pid] = (cmdline, mark.encode() in environ, capabilities(pid))
            seen_env[pid] = environ
        job_side = [pid for pid, (_c, marked, _caps) in seen.items() if marked]
        assert job_side, seen  # the job itself has its variables
        for pid, (cmdline, marked, caps) in seen.items():
            if any(arg.endswith(b"pidshim.py") for arg in cmdline):
                assert not marked, (cmdline, seen)
            if any(caps.values()):  # unshare on 252, under catatonit
                assert not marked, (cmdline, seen)
            if marked:
                assert set(caps.values()) == {0}, (cmdline, caps)
                assert b"LD_PRELOAD=libc.so.6" in seen_env[pid]
    finally:
        job.send_signal(signal.SIGTERM)
        job.communicate(timeout=120)


# -- working directory -----------------------------------------------------------------


def test_the_readme_command_runs_from_the_callers_directory(user_dir: Path) -> None:
    simulate = user_dir / "simulate"
    simulate.write_text('#!/bin/sh\npwd\nid -un\ncat "$1"\n')
    simulate.chmod(0o755)
    (user_dir / "input.dat").write_text("data 42\n")
    out = run_cli(
        "run", "--quiet", "--uid", "nobody", "--", "./simulate", "input.dat", cwd=str(user_dir)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(user_dir), "nobody", "data 42"]
    # --working-directory, relative to the caller's, overrides it.
    out = run_cli(
        "run",
        "--quiet",
        "--working-directory",
        user_dir.name,
        "--",
        "./simulate",
        "input.dat",
        cwd=str(user_dir.parent),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == str(user_dir)


def test_a_working_directory_the_user_cannot_enter_is_refused(user_dir: Path) -> None:
    private = user_dir / "root-only"
    private.mkdir(mode=0o700)
    out = run_cli("run", "--uid", "nobody", "--working-directory", str(private), "--", "true")
    assert out.returncode == 64
    assert f"working directory '{private}' is not accessible to nobody" in one_error_line(out)


def test_the_record_is_kept_when_the_job_removes_its_working_directory(user_dir: Path) -> None:
    gone = user_dir / "gone"
    gone.mkdir()
    shutil.chown(gone, "nobody", "nogroup")
    out = run_cli(
        "run",
        "--uid",
        "nobody",
        "--json",
        "-",
        "--working-directory",
        str(gone),
        "--",
        "rmdir",
        str(gone),
    )
    assert out.returncode == 0, out.stderr
    assert not gone.exists()
    assert record_of(out)["result"] == "success"


# -- unit name, start line -------------------------------------------------------------


def test_unit_name_gets_its_suffix_and_the_start_line_names_it(unique: str) -> None:
    out = run_cli(
        "run",
        "--verbose",
        "--job-id",
        unique,
        "--unit",
        f"ux-{unique}",
        "--json",
        "-",
        "--",
        "true",
    )
    assert out.returncode == 0, out.stderr
    assert record_of(out)["unit"] == f"ux-{unique}.service"
    first = out.stderr.splitlines()[0]
    assert first == f"Running as unit: ux-{unique}.service; job id: {unique}"
    out = run_cli(
        "run", "--scope", "--verbose", "--job-id", unique, "--unit", f"ux-{unique}", "--", "true"
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines()[0] == f"Running as scope: ux-{unique}.scope; job id: {unique}"
    out = run_cli("run", "--verbose", "--quiet", "--", "true")  # --quiet silences it
    assert out.returncode == 0 and out.stderr == ""
    out = run_cli("run", "--", "true")  # stderr is not a terminal
    assert "Running as" not in out.stderr


def test_the_start_line_is_printed_when_stderr_is_a_terminal(unique: str) -> None:
    import pty

    master, terminal = pty.openpty()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "slotmgr", "run", "--job-id", unique, "--", "true"],
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=120,
        )
        assert out.returncode == 0
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    first = shown.decode().splitlines()[0]
    assert first == f"Running as unit: slotmgr-{unique}.service; job id: {unique}"


def test_a_unit_name_of_another_type_is_refused() -> None:
    out = run_cli("run", "--unit", "ux.timer", "--", "true")
    assert out.returncode == 64
    assert "invalid --unit 'ux.timer'" in one_error_line(out)


# -- output files ----------------------------------------------------------------------


def test_json_file_is_not_followed_through_a_symlink_nor_made_before_checks(user_dir: Path) -> None:
    victim = WORK / f"{user_dir.name}-victim"
    victim.write_text("precious")
    (user_dir / "record.json").symlink_to(victim)
    out = run_cli("run", "--uid", "nobody", "--json", str(user_dir / "record.json"), "--", "true")
    assert out.returncode == 64
    assert "symbolic link" in one_error_line(out)
    assert victim.read_text() == "precious"
    # A job that is refused makes no file.
    out = run_cli(
        "run", "--uid", "nobody", "--json", str(user_dir / "new.json"), "--", "no-such-command-x"
    )
    assert out.returncode == 127 and not (user_dir / "new.json").exists()
    # A record file is made by the job's user.
    out = run_cli("run", "--uid", "nobody", "--json", str(user_dir / "new.json"), "--", "true")
    assert out.returncode == 0, out.stderr
    assert (user_dir / "new.json").stat().st_uid == pwd_uid("nobody")
    assert json.loads((user_dir / "new.json").read_text())["result"] == "success"


def pwd_uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def test_output_and_error_files_get_the_jobs_stdio_directly(user_dir: Path, unique: str) -> None:
    script = "echo out; echo err >&2"
    out = run_cli(
        "run",
        "--quiet",
        "--uid",
        "nobody",
        "--job-id",
        unique,
        "--output",
        "out-%j.txt",
        "--error",
        "err-%j.txt",
        "--",
        "sh",
        "-c",
        script,
        cwd=str(user_dir),
    )
    assert (out.returncode, out.stdout) == (0, ""), out.stderr
    assert (user_dir / f"out-{unique}.txt").read_text() == "out\n"
    assert (user_dir / f"err-{unique}.txt").read_text() == "err\n"
    assert (user_dir / f"out-{unique}.txt").stat().st_uid == pwd_uid("nobody")
    # --output alone takes both, --append keeps what was there.
    out = run_cli(
        "run",
        "--quiet",
        "--uid",
        "nobody",
        "--job-id",
        unique,
        "--append",
        "--output",
        "out-%j.txt",
        "--",
        "sh",
        "-c",
        script,
        cwd=str(user_dir),
    )
    assert out.returncode == 0, out.stderr
    assert (user_dir / f"out-{unique}.txt").read_text() == "out\nout\nerr\n"
    # A file the user may not write is refused before the job runs.
    theirs = user_dir / "theirs.txt"
    theirs.write_text("precious")
    theirs.chmod(0o644)
    out = run_cli("run", "--uid", "nobody", "--output", str(theirs), "--", "true")
    assert out.returncode == 64 and "Permission denied" in one_error_line(out)
    assert theirs.read_text() == "precious"
    # Scope mode too.
    out = run_cli(
        "run",
        "--scope",
        "--quiet",
        "--output",
        str(user_dir / "scope.txt"),
        "--",
        "sh",
        "-c",
        script,
    )
    assert out.returncode == 0, out.stderr
    assert (user_dir / "scope.txt").read_text() == "out\nerr\n"


# -- where slotmgr is installed --------------------------------------------------------


def copy_of_slotmgr(where: Path) -> dict[str, str]:
    shutil.copytree(
        REPO / "slotmgr", where / "slotmgr", ignore=shutil.ignore_patterns("__pycache__")
    )
    return dict(os.environ, PYTHONPATH=str(where), PYTHONDONTWRITEBYTECODE="1")


def test_an_install_the_jobs_user_cannot_reach_is_refused_before_the_unit(unique: str) -> None:
    WORK.mkdir(exist_ok=True)
    hidden = WORK / f"{unique}-private"
    hidden.mkdir(mode=0o700)
    try:
        env = copy_of_slotmgr(hidden)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "slotmgr",
                "run",
                "--uid",
                "nobody",
                "--working-directory",
                "/",
                "--",
                "true",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd="/",
        )
        assert out.returncode == 78
        line = one_error_line(out)
        assert f"nobody cannot read {hidden}/slotmgr/pidshim.py" in line
        assert "install slotmgr where every job's user can read it" in line
    finally:
        shutil.rmtree(hidden)


def test_an_install_under_tmp_is_refused_before_the_unit(unique: str) -> None:
    under_tmp = Path(f"/tmp/{unique}")
    under_tmp.mkdir()
    try:
        env = copy_of_slotmgr(under_tmp)
        out = subprocess.run(
            [sys.executable, "-m", "slotmgr", "run", "--working-directory", "/", "--", "true"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd="/",
        )
        assert out.returncode == 78
        assert f"{under_tmp}/slotmgr/pidshim.py is under /tmp" in one_error_line(out)
    finally:
        shutil.rmtree(under_tmp)


def test_a_job_refused_for_a_full_slot_makes_no_output_file(unique: str, user_dir: Path) -> None:
    conf = Path("/etc/slotmgr/slots.conf")
    before = conf.read_bytes() if conf.exists() else None
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("[slot9]\n")
    conf.chmod(0o644)
    first_unit = f"slotmgr-{unique}a.service"
    first = start_cli("run", "--slot", "9", "--job-id", f"{unique}a", "--", "sleep", "300")
    try:
        wait_until(lambda: unit_active(first_unit), timeout=60, what=first_unit)
        for mode in ((), ("--scope",)):
            out = run_cli(
                "run",
                *mode,
                "--slot",
                "9",
                "--output",
                str(user_dir / "out.txt"),
                "--json",
                str(user_dir / "rec.json"),
                "--",
                "true",
            )
            assert out.returncode == 75, out.stderr
            assert not (user_dir / "out.txt").exists() and not (user_dir / "rec.json").exists()
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
        if before is None:
            conf.unlink(missing_ok=True)
        else:
            conf.write_bytes(before)
