"""The RPM's files installed in the guest run a job under the installed slice
(issue: RPM packaging). The RPM is built on the host by the 'rpm' stage of
the test command, before the guests boot."""

from __future__ import annotations

import os
import signal
import subprocess

from .conftest import REPO, systemctl_show, unit_active, wait_until


def built_rpm() -> str:
    folder = REPO / "rpmbuild" / "RPMS" / "noarch"
    rpms = sorted(folder.glob("slotmgr-*.noarch.rpm")) if folder.is_dir() else []
    assert rpms, f"no RPM in {folder}: run `make rpm` on the host first (scripts/check does)"
    return str(rpms[-1])


def test_installed_slotmgr_runs_a_job_in_the_installed_slice(unique):
    check = subprocess.run(["sh", str(REPO / "tests/packaging/guest_install_check.sh"),
                            built_rpm()], capture_output=True, text=True,
                           env=dict(os.environ, SLOTMGR_GUEST="1"))
    assert check.returncode == 0, check.stderr
    fragment = systemctl_show("slotmgr.slice", "FragmentPath")["FragmentPath"]
    # Debian 12 names it through the merged-/usr /lib symlink: the same file.
    assert os.path.realpath(fragment) == "/usr/lib/systemd/system/slotmgr.slice"
    # The installed command, not the source tree: no PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    installed = subprocess.run(["/usr/bin/slotmgr", "--version"], capture_output=True,
                               text=True, env=env, cwd="/")
    assert installed.returncode == 0 and installed.stdout.startswith("slotmgr ")
    unit = f"slotmgr-{unique}.service"
    job = subprocess.Popen(["/usr/bin/slotmgr", "run", "--job-id", unique, "--", "sleep", "600"],
                           env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        wait_until(lambda: unit_active(unit), what=unit)
        status = subprocess.run(["systemctl", "status", "--no-pager", "slotmgr.slice"],
                                capture_output=True, text=True).stdout
        assert "lib/systemd/system/slotmgr.slice" in status
        assert unit in status
        exec_start = systemctl_show(unit, "ExecStart")["ExecStart"]
        # The installed package's init: pidshim where a Landlock scope is had, else
        # the catatonit the package requires.
        assert ("site-packages/slotmgr/pidshim.py" in exec_start
                or "catatonit -- /usr/bin/env --default-signal" in exec_start), exec_start
    finally:
        job.send_signal(signal.SIGTERM)
        _out, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
