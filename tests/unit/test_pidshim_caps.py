"""pidshim --unshare run by a user who holds CAP_SYS_ADMIN only as an ambient
capability (what slotmgr asks systemd 252 for with --uid): the namespace is
made, and neither the shim nor the job keeps any capability."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from slotmgr.jobspec import PIDSHIM

NOBODY = "65534"
# A system interpreter that user nobody may execute (pyenv's live under /root).
PYTHON = "/usr/bin/python3"


@pytest.fixture
def as_nobody_with_ambient_sys_admin() -> list[str]:
    assert os.geteuid() == 0, "these tests drop from root to nobody"
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed"
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=+sys_admin", "--ambient-caps=+sys_admin"]


def caps(text: str) -> dict[str, int]:
    return {line.split(":")[0]: int(line.split()[1], 16)
            for line in text.splitlines() if line.startswith("Cap")}


def test_job_gets_no_capability(as_nobody_with_ambient_sys_admin):
    out = subprocess.run(
        [*as_nobody_with_ambient_sys_admin, PYTHON, "-I", "-S", PIDSHIM, "--unshare", "--",
         "sh", "-c", "echo pid=$$; grep ^Cap /proc/self/status; grep ^Cap /proc/1/status"],
        capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "pid=2" in out.stdout  # the namespace was made: the job is PID 2, the init PID 1
    lines = out.stdout.splitlines()
    job, init = "\n".join(lines[1:6]), "\n".join(lines[6:])
    for name, status in (("job", caps(job)), ("init", caps(init))):
        assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == 0, (name, status)


def test_without_the_capability_it_fails_with_125():
    out = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                          PYTHON, "-I", "-S", PIDSHIM, "--unshare", "--", "true"],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 125
    assert out.stderr.startswith("pidshim: cannot create a PID namespace")


def test_private_tmp_gives_the_job_an_empty_tmp(tmp_path):
    marker = "/tmp/pidshim-private-tmp-marker"
    with open(marker, "w") as f:
        f.write("host")
    try:
        out = subprocess.run(
            [PYTHON, "-I", "-S", PIDSHIM, "--unshare", "--private-tmp", "--", "sh", "-c",
             "ls -A /tmp /var/tmp; touch /tmp/inside; stat -c %a /tmp"],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "pidshim-private-tmp-marker" not in out.stdout
        assert out.stdout.splitlines()[-1] == "1777"
        assert not os.path.exists("/tmp/inside")
    finally:
        os.unlink(marker)
    usage = subprocess.run([PYTHON, "-I", "-S", PIDSHIM, "--private-tmp", "--", "true"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "--private-tmp needs --unshare" in usage.stderr
