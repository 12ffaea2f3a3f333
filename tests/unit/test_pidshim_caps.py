"""pidshim --unshare run by a user who holds CAP_SYS_ADMIN only as an ambient
capability (what slotmgr asks systemd 252 for with --uid): the namespace is
made, and neither the shim nor the job keeps any capability."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from slotmgr.job.spec import PIDSHIM

NOBODY = "65534"
# A system interpreter that user nobody may execute (pyenv's live under /root).
PYTHON = "/usr/bin/python3"


@pytest.fixture
def as_nobody_with_ambient_sys_admin() -> list[str]:
    assert os.geteuid() == 0, "these tests drop from root to nobody"
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed"
    return [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--inh-caps=+sys_admin",
        "--ambient-caps=+sys_admin",
    ]


def caps(text: str) -> dict[str, int]:
    return {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in text.splitlines()
        if line.startswith("Cap")
    }


def test_job_gets_no_capability(as_nobody_with_ambient_sys_admin: list[str]) -> None:
    out = subprocess.run(
        [
            *as_nobody_with_ambient_sys_admin,
            PYTHON,
            "-I",
            "-S",
            PIDSHIM,
            "--unshare",
            "--",
            "sh",
            "-c",
            "echo pid=$$; grep ^Cap /proc/self/status; grep ^Cap /proc/1/status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    assert "pid=2" in out.stdout  # the namespace was made: the job is PID 2, the init PID 1
    lines = out.stdout.splitlines()
    job, init = "\n".join(lines[1:6]), "\n".join(lines[6:])
    for name, status in (("job", caps(job)), ("init", caps(init))):
        assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == 0, (name, status)


def test_without_the_capability_it_fails_with_71() -> None:
    out = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            PYTHON,
            "-I",
            "-S",
            PIDSHIM,
            "--unshare",
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert out.returncode == 71  # ExitCode.INIT_FAILED
    assert out.stderr.startswith("pidshim: cannot create a PID namespace")


def test_private_tmp_gives_the_job_an_empty_tmp(tmp_path: Path) -> None:
    marker = "/tmp/pidshim-private-tmp-marker"
    with open(marker, "w") as f:
        f.write("host")
    try:
        out = subprocess.run(
            [
                PYTHON,
                "-I",
                "-S",
                PIDSHIM,
                "--unshare",
                "--private-tmp",
                "--",
                "sh",
                "-c",
                "ls -A /tmp /var/tmp; touch /tmp/inside; stat -c %a /tmp",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "pidshim-private-tmp-marker" not in out.stdout
        assert out.stdout.splitlines()[-1] == "1777"
        assert not os.path.exists("/tmp/inside")
    finally:
        os.unlink(marker)
    usage = subprocess.run(
        [PYTHON, "-I", "-S", PIDSHIM, "--private-tmp", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 2 and "--private-tmp needs --unshare" in usage.stderr


def test_private_ipc_and_shm_give_the_job_its_own(tmp_path: Path) -> None:
    marker = f"pidshim-shm-{os.getpid()}"
    with open(f"/dev/shm/{marker}", "w") as f:
        f.write("host")
    made = subprocess.run(["ipcmk", "-M", "4096"], capture_output=True, text=True, check=True)
    host_id = made.stdout.split()[-1]
    try:
        out = subprocess.run(
            [
                PYTHON,
                "-I",
                "-S",
                PIDSHIM,
                "--unshare",
                "--private-ipc",
                "--private-shm",
                "--",
                "sh",
                "-c",
                "ls -A /dev/shm; stat -c %a /dev/shm; touch /dev/shm/inside; echo IPCS:; ipcs -m",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        files, segments = out.stdout.split("IPCS:")
        assert files.split() == ["1777"]  # an empty /dev/shm of its own
        assert not os.path.exists("/dev/shm/inside")
        assert not re.search(rf"^\S+\s+{host_id}\s", segments, re.M), segments
    finally:
        os.unlink(f"/dev/shm/{marker}")
        subprocess.run(["ipcrm", "-m", host_id], check=False)
    for flag in ("--private-ipc", "--private-shm"):
        usage = subprocess.run(
            [PYTHON, "-I", "-S", PIDSHIM, flag, "--", "true"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert usage.returncode == 2 and f"{flag} needs --unshare" in usage.stderr


CONNECT = (
    "import socket, sys\n"
    "c = socket.socket(socket.AF_UNIX)\n"
    "try:\n    c.connect(sys.argv[1].encode().replace(b'@', b'\\0')); print('REACHED')\n"
    "except OSError as e:\n    print('REFUSED', e.errno)\n"
)


def test_landlock_scope_keeps_the_job_from_abstract_sockets_outside_it() -> None:
    """Needs a kernel with Landlock ABI 6 (Linux 6.12+), as the host and the 257 guest have."""
    from slotmgr.pidshim import landlock_abi

    assert landlock_abi() >= 6, "this test needs Landlock ABI 6 (Linux 6.12)"
    server = socket.socket(socket.AF_UNIX)
    name = f"@pidshim-landlock-{os.getpid()}"
    server.bind(name.replace("@", "\0"))
    server.listen(4)
    try:
        for flags, expected in (([], "REACHED"), (["--landlock-scope"], "REFUSED 1")):
            for user in (
                [],
                ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"],
            ):
                out = subprocess.run(
                    [
                        *user,
                        PYTHON,
                        "-I",
                        "-S",
                        PIDSHIM,
                        *flags,
                        "--",
                        PYTHON,
                        "-I",
                        "-c",
                        CONNECT,
                        name,
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    cwd="/",
                )
                assert out.returncode == 0, out.stderr
                assert out.stdout.strip() == expected, (flags, user, out.stdout)
        # Inside its own domain the job still reaches its own sockets, and signals itself.
        own = subprocess.run(
            [
                PYTHON,
                "-I",
                "-S",
                PIDSHIM,
                "--landlock-scope",
                "--",
                PYTHON,
                "-I",
                "-c",
                "import socket, os, signal, subprocess, sys\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "s.bind(b'\\0own-%d' % os.getpid()); s.listen()\n"
                f"c = subprocess.run([sys.executable, '-I', '-c', {CONNECT!r}, '@own-%d' % "
                "os.getpid()], capture_output=True, text=True).stdout\n"
                "os.kill(os.getpid(), 0); print(c.strip())\n"
                f"try:\n    os.kill({os.getpid()}, 0); print('SIGNALLED-OUTSIDE')\n"
                "except PermissionError:\n    print('NO-SIGNAL-OUT')\n",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        assert own.returncode == 0, own.stderr
        assert own.stdout.split("\n")[:2] == ["REACHED", "NO-SIGNAL-OUT"], own.stdout
    finally:
        server.close()
