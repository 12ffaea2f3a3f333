"""What one job cannot see or reach of another, on the real systemd (issue 9).

Every test runs its jobs as a second user (the batch system's case: root
runs slotmgr, the job belongs to the user) and looks from a second job of
the SAME user, whom file permissions do not stop.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import pytest

from .accounts import ensure_user
from .conftest import run_cli, start_cli, systemctl_show, unit_active, wait_until

WORK = Path("/run/slotmgr-tests")  # not /tmp: each job has its own /tmp
SCRATCH_BASE = Path("/var/lib/slotmgr/scratch")  # the default: no slotmgr.conf in the guests
SYSTEMD_VERSION = int(
    cast(
        "re.Match[str]",
        re.search(
            r"\d+",
            subprocess.run(["systemctl", "--version"], capture_output=True, text=True).stdout
            or "0",
        ),  # never None: the text searched is at least "0"
    ).group()
)


@pytest.fixture(scope="module")
def alice() -> pwd.struct_passwd:
    return ensure_user("slotalice")


@pytest.fixture
def shared(unique: str, alice: pwd.struct_passwd) -> Path:
    """A directory both of the user's jobs and the test may write (not /tmp)."""
    path = WORK / unique
    path.mkdir(parents=True)
    os.chown(path, alice.pw_uid, alice.pw_gid)
    return path


def landlock_abi() -> int:
    from slotmgr.pidshim import landlock_abi as abi

    return abi()


def wait_for_file(path: Path, timeout: float = 60) -> str:
    wait_until(path.exists, timeout=timeout, what=str(path))
    time.sleep(0.1)  # written with a shell redirection: let it finish
    return path.read_text()


def stop(job: subprocess.Popen[str], unique: str) -> tuple[str, str]:
    run_cli("stop", unique, "--grace", "0")
    return job.communicate(timeout=120)


# -- finding 3: the job's user does not own its unit's cgroup ------------------------


def test_a_jobs_user_cannot_freeze_a_sub_cgroup_and_hang_systemd(
    unique: str, alice: pwd.struct_passwd
) -> None:
    attack = (
        "cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup); "
        "mkdir $cg/.control 2>&1 && echo MKDIR-OK; "
        "echo 1 > $cg/.control/cgroup.freeze 2>&1; "
        "echo 1 > $cg/cgroup.freeze 2>&1; "
        "echo 1 > $cg/cgroup.subtree_control 2>&1; echo DONE"
    )
    out = run_cli(
        "run",
        "--quiet",
        "--job-id",
        unique,
        "--uid",
        alice.pw_name,
        "--",
        "sh",
        "-c",
        attack,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "MKDIR-OK" not in out.stdout
    assert re.search(
        r"mkdir: cannot create directory .*\.control.*: Permission denied", out.stdout
    ), out.stdout
    # The shell reports a refused redirection on its own stderr.
    assert re.search(r"service/cgroup\.freeze: Permission denied", out.stderr), out.stderr
    assert re.search(r"cgroup\.subtree_control: Permission denied", out.stderr), out.stderr
    assert "DONE" in out.stdout
    # systemd still answers at once, and the job was recorded.
    started = time.monotonic()
    state = subprocess.run(
        ["systemctl", "is-system-running"], capture_output=True, text=True, timeout=20
    )
    assert time.monotonic() - started < 10 and state.stdout.strip() in ("running", "degraded")
    history = run_cli("history", "--json", "--limit", "5")
    assert unique in history.stdout, history.stderr


def test_the_unit_is_not_delegated_and_its_record_reads_its_own_cgroup(
    unique: str, alice: pwd.struct_passwd
) -> None:
    unit = f"slotmgr-{unique}.service"
    job = start_cli(
        "run",
        "--job-id",
        unique,
        "--uid",
        alice.pw_name,
        "--json",
        "-",
        "--",
        "sh",
        "-c",
        "head -c 50000000 /dev/zero | tail -c 1 >/dev/null; sleep 600",
    )
    try:
        wait_until(lambda: unit_active(unit), what=unit)
        assert systemctl_show(unit, "Delegate")["Delegate"] == "no"
        cgroup_dir = Path(f"/sys/fs/cgroup/slotmgr.slice/{unit}")
        assert cgroup_dir.stat().st_uid == 0 and (cgroup_dir / "cgroup.procs").stat().st_uid == 0
    finally:
        out, _err = stop(job, unique)
    record = json.loads(out.strip().splitlines()[-1])
    assert record["job_id"] == unique
    # Counters of the unit's own cgroup (the recorder now runs there, not in .control).
    assert record["cpu_usage_usec"] > 10_000 and record["memory_peak_bytes"] > 1_000_000, record


# -- /dev/shm and SysV IPC -----------------------------------------------------------


@pytest.mark.parametrize("mode", [[], ["--scope"]], ids=["service", "scope"])
def test_dev_shm_and_sysv_segments_are_the_jobs_own(
    unique: str, alice: pwd.struct_passwd, shared: Path, mode: list[str]
) -> None:
    ready, go = shared / "ready", shared / "go"
    # Two jobs of one user: alice's services; a scope runs as its caller (--uid is refused).
    user = [] if mode else ["--uid", alice.pw_name]
    writer = start_cli(
        "run",
        "--quiet",
        *mode,
        *user,
        "--job-id",
        unique,
        "--",
        "sh",
        "-c",
        f"echo secret > /dev/shm/{unique}; ipcmk -M 4096 | grep -o '[0-9]*$' > {ready}.tmp; "
        f"mv {ready}.tmp {ready}; while [ ! -e {go} ]; do sleep 0.1; done; ls /dev/shm",
    )
    try:
        shmid = wait_for_file(ready).strip()
        assert shmid.isdigit()
        reader = run_cli(
            "run", "--quiet", *mode, *user, "--", "sh", "-c", "ls -a /dev/shm; echo IPCS:; ipcs -m"
        )
        assert reader.returncode == 0, reader.stderr
        listing, segments = reader.stdout.split("IPCS:")
        assert unique not in listing
        assert not re.search(rf"^\S+\s+{shmid}\s", segments, re.M), segments
        # Nor does the node see them.
        assert not Path(f"/dev/shm/{unique}").exists()
        node = subprocess.run(["ipcs", "-m"], capture_output=True, text=True).stdout
        assert not re.search(rf"^\S+\s+{shmid}\s", node, re.M), node
    finally:
        go.touch()
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert unique in out  # the job itself saw its file


def test_no_private_ipc_and_shm_share_them_again(unique: str, alice: pwd.struct_passwd) -> None:
    out = run_cli(
        "run",
        "--quiet",
        "--no-private-shm",
        "--no-private-ipc",
        "--uid",
        alice.pw_name,
        "--",
        "sh",
        "-c",
        f"echo x > /dev/shm/{unique}; ipcmk -M 4096 | grep -o '[0-9]*$'",
    )
    assert out.returncode == 0, out.stderr
    try:
        assert Path(f"/dev/shm/{unique}").exists()
        shmid = out.stdout.strip()
        node = subprocess.run(["ipcs", "-m"], capture_output=True, text=True).stdout
        assert re.search(rf"^\S+\s+{shmid}\s", node, re.M), node
    finally:
        Path(f"/dev/shm/{unique}").unlink(missing_ok=True)
        subprocess.run(["ipcrm", "-m", out.stdout.strip()], check=False)


# -- abstract unix sockets: an MPD-like daemon -----------------------------------------

DAEMON = """
import socket, sys, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\\0" + sys.argv[1]); s.listen(8)
open(sys.argv[2] + ".tmp", "w").close(); os.rename(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    c, _ = s.accept(); c.sendall(b"run-as-me\\n"); c.close()
"""

CLIENT = """
import socket, sys
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    c.connect("\\0" + sys.argv[1]); print("REACHED", c.recv(64).decode().strip())
except OSError as e:
    print("REFUSED", e.errno)
"""


def reach_daemon_from_second_job(
    unique: str, alice: pwd.struct_passwd, shared: Path, options: list[str]
) -> tuple[str, str]:
    """Job A serves an abstract socket; job B (same user) tries it. Returns
    B's stdout and A's summary."""
    ready = shared / "ready"
    name = f"slotmgr-mpd-{unique}"
    daemon = start_cli(
        "run",
        *options,
        "--uid",
        alice.pw_name,
        "--job-id",
        unique,
        "--",
        sys.executable,
        "-c",
        DAEMON,
        name,
        str(ready),
    )
    try:
        wait_for_file(ready)
        client = run_cli(
            "run",
            "--quiet",
            *options,
            "--uid",
            alice.pw_name,
            "--",
            sys.executable,
            "-c",
            CLIENT,
            name,
        )
        assert client.returncode == 0, client.stderr
        # Root on the node, outside every job, still reaches it (Landlock scopes the job's
        # own connections): that is how the daemon itself is shown to be up.
        if "--private-network" not in options:
            outside = subprocess.run(
                [sys.executable, "-c", CLIENT, name], capture_output=True, text=True, timeout=30
            )
            assert outside.stdout.startswith("REACHED run-as-me"), outside.stdout
    finally:
        _out, summary = stop(daemon, unique)
    return client.stdout, summary


def test_abstract_socket_of_one_job_is_not_reachable_from_another(
    unique: str, alice: pwd.struct_passwd, shared: Path
) -> None:
    if SYSTEMD_VERSION >= 257:
        # The 257 guest boots Debian 13's own kernel (6.12), as RHEL 10 pairs them.
        assert landlock_abi() >= 6, "the 257 guest must boot a kernel with Landlock ABI 6"
    if landlock_abi() < 6:
        client, summary = reach_daemon_from_second_job(unique, alice, shared, [])
        assert client.startswith("REACHED run-as-me")  # shared, and the summary says so
        assert "abstract sockets: shared, kernel lacks Landlock ABI 6" in summary
        assert "use --private-network" in summary
        return
    client, summary = reach_daemon_from_second_job(unique, alice, shared, [])
    assert client.startswith("REFUSED"), client
    assert "abstract-sockets(landlock), signals(landlock)" in summary, summary


def test_private_network_makes_abstract_sockets_and_localhost_the_jobs_own(
    unique: str, alice: pwd.struct_passwd, shared: Path
) -> None:
    client, summary = reach_daemon_from_second_job(unique, alice, shared, ["--private-network"])
    assert client.startswith("REFUSED"), client
    assert "network" in summary.split("isolation:")[1].splitlines()[0]
    assert "abstract sockets: shared" not in summary


# -- the per-job scratch directory -----------------------------------------------------


def test_scratch_is_the_users_hidden_from_other_jobs_and_removed_at_the_end(
    unique: str, alice: pwd.struct_passwd, shared: Path
) -> None:
    ready, go = shared / "ready", shared / "go"
    first = start_cli(
        "run",
        "--quiet",
        "--uid",
        alice.pw_name,
        "--job-id",
        unique,
        "--",
        "sh",
        "-c",
        f'echo "$SLOTMGR_SCRATCH $TMPDIR" > {ready}.tmp; stat -c "%U %a" "$SLOTMGR_SCRATCH" '
        f'>> {ready}.tmp; echo data > "$SLOTMGR_SCRATCH/result"; mv {ready}.tmp {ready}; '
        f"while [ ! -e {go} ]; do sleep 0.1; done",
    )
    own = SCRATCH_BASE / unique
    try:
        path_line, owner_line = wait_for_file(ready).splitlines()
        assert path_line.split()[0] == str(own)
        assert owner_line == "slotalice 700"
        assert (own / "result").read_text() == "data\n"  # the same directory, on the node
        second = run_cli(
            "run",
            "--quiet",
            "--uid",
            alice.pw_name,
            "--",
            "sh",
            "-c",
            f'ls -a {SCRATCH_BASE}; echo MINE: "$SLOTMGR_SCRATCH"; cat {own}/result 2>&1',
        )
        assert second.returncode != 0  # cat found nothing
        listing, mine = second.stdout.split("MINE:")
        names = set(listing.split()) - {".", ".."}
        assert unique not in names and names == {Path(mine.split()[0]).name}, second.stdout
    finally:
        go.touch()
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    # Removed by the unit's own hook, right after the record (which the launcher waited for).
    wait_until(lambda: not own.exists(), timeout=30, what="scratch removed")


def test_keep_scratch_keeps_it_and_no_scratch_makes_none(
    unique: str, alice: pwd.struct_passwd
) -> None:
    out = run_cli(
        "run",
        "--quiet",
        "--keep-scratch",
        "--uid",
        alice.pw_name,
        "--job-id",
        unique,
        "--",
        "sh",
        "-c",
        'echo kept > "$SLOTMGR_SCRATCH/f"',
    )
    kept = SCRATCH_BASE / unique
    try:
        assert out.returncode == 0, out.stderr
        assert (kept / "f").read_text() == "kept\n" and kept.stat().st_uid == alice.pw_uid
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    out = run_cli(
        "run",
        "--quiet",
        "--no-scratch",
        "--uid",
        alice.pw_name,
        "--job-id",
        f"{unique}n",
        "--",
        "sh",
        "-c",
        'echo "[${SLOTMGR_SCRATCH-unset}]"',
    )
    assert out.returncode == 0 and out.stdout.strip() == "[unset]", out.stderr
    assert not (SCRATCH_BASE / f"{unique}n").exists()


def test_scratch_is_removed_when_the_launchers_death_stops_the_job(
    unique: str, alice: pwd.struct_passwd
) -> None:
    unit = f"slotmgr-{unique}.service"
    job = start_cli("run", "--uid", alice.pw_name, "--job-id", unique, "--", "sleep", "600")
    wait_until(lambda: unit_active(unit), what=unit)
    assert (SCRATCH_BASE / unique).is_dir()
    job.kill()  # the launcher dies: the job, bound to it, is stopped (test_binding.py)
    job.communicate(timeout=30)
    # The removal hook runs after the record hook, which may wait for the history's lock:
    # allow the unit's whole stop timeout (90 s), as systemd does.
    wait_until(lambda: not (SCRATCH_BASE / unique).exists(), timeout=90, what="scratch removed")
    assert not unit_active(unit)


def test_summary_and_status_say_which_isolation_the_job_got(
    unique: str, alice: pwd.struct_passwd
) -> None:
    out = run_cli("run", "--uid", alice.pw_name, "--", "true")
    assert out.returncode == 0, out.stderr
    line = next(li for li in out.stderr.splitlines() if li.startswith("isolation: "))
    landlock = ", abstract-sockets(landlock), signals(landlock)" if landlock_abi() >= 6 else ""
    assert line == f"isolation: pids, tmp, ipc, shm, scratch{landlock}"
    unit = f"slotmgr-{unique}.service"
    job = start_cli("run", "--uid", alice.pw_name, "--job-id", unique, "--", "sleep", "600")
    try:
        wait_until(lambda: unit_active(unit), what=unit)
        status = run_cli("status", unique)
        assert status.returncode == 0, status.stderr
        assert f"  Isolation: pids, tmp, ipc, shm, scratch{landlock}\n" in status.stdout
        if not landlock:
            assert "  Abstract sockets: shared" in status.stdout
    finally:
        stop(job, unique)
    bare = run_cli(
        "run",
        "--no-private-pids",
        "--no-private-tmp",
        "--no-private-ipc",
        "--no-private-shm",
        "--no-scratch",
        "--",
        "true",
    )
    assert "isolation: none" in bare.stderr
