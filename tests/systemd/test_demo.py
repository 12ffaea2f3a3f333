"""The README's main command: scripts/demo runs examples/mpd-demo.sh in a
guest. These run that script as a user would, from anywhere, and check that
its exit status tells whether slotmgr contained the job."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.systemd.conftest import REPO, processes_with_marker

DEMO = REPO / "examples" / "mpd-demo.sh"


def _demo(tmp_path: Path, **env: str) -> tuple[int, str]:
    """Run the demo from another directory than the repository (a job does not
    start there); its exit status and output. The output goes to a file: a
    daemon that escaped would hold a pipe open."""
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        status = subprocess.run(
            ["sh", str(DEMO)],
            cwd="/",
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
        ).returncode
    return status, log.read_text()


def test_demo_contrasts_the_mpd_job_without_and_with_slotmgr(tmp_path: Path) -> None:
    status, out = _demo(tmp_path)
    assert status == 0, out
    without, under = out.split("===== 2. under slotmgr")
    # Without slotmgr the daemon and its world-writable socket were left on the node...
    assert "srwxrwxrwx" in without.split("===== after it, on the node")[1]
    assert "left now: nothing" in without
    # ...under slotmgr nothing was, and the record printed.
    after = under.split("===== after it, on the node")[1]
    assert "socket in the node's /tmp: none" in after
    assert "processes of the job still running:       none" in after
    job_id = under.split("--job-id ")[1].split()[0]
    record = after.split(f"===== its record: slotmgr status {job_id}")[1]
    # `slotmgr status` of a finished job shows its whole record, one field a line.
    assert f"Job {job_id} (slotmgr-{job_id}.service) finished\n" in record
    assert re.search(r"^  Result: +success, exit status 0$", record, re.M), record
    assert re.search(r"^  Command: +sh /\S+/examples/mpd-job\.sh$", record, re.M), record
    assert "demo: ok" in out
    assert not processes_with_marker("mpd_daemon.py demo")
    assert not Path("/tmp/mpd-demo.sock").exists()


def test_demo_fails_when_the_job_escapes(tmp_path: Path) -> None:
    # A "slotmgr" that runs the job as a plain process, as if nothing contained it.
    fake = tmp_path / "no-slotmgr"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = run ] || exit 1\n'
        'while [ "$1" != -- ]; do shift; done\nshift\nexec "$@"\n'
    )
    fake.chmod(0o755)
    try:
        status, out = _demo(tmp_path, SLOTMGR=str(fake))
        assert status != 0, out
        assert "demo: FAILED: the job left its daemon or socket on the node" in out
        assert "demo: FAILED: slotmgr status found no record" in out
        assert "demo: ok" not in out
    finally:
        for pid in processes_with_marker("mpd_daemon.py demo"):
            subprocess.run(["kill", str(pid)], check=False)
        Path("/tmp/mpd-demo.sock").unlink(missing_ok=True)
        Path("/tmp/mpd-demo.ready").unlink(missing_ok=True)
