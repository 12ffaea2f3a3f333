"""Slurm's own accounting shows what slotmgr measured of a job (257-batch:
slurmdbd and MariaDB, set up at boot by the test bed).

Slurm's figures of a job run through slotmgr see only its launcher: the job
lives in slotmgr's unit, outside Slurm's cgroup. slotmgr's Epilog
(packaging/slurm/slotmgr-epilog) writes the unit's figures into the job's
AdminComment once the job has ended, and `sacct -o AdminComment` shows them.
The job goes the documented route (`exec sudo batch-run`), submitted by the
unprivileged test user; the Epilog is installed as an admin installs it.
conftest deselects this module in 252-batch (no slurmdbd), and says so.
"""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from .conftest import (
    BURN_SECONDS,
    JOB_DEADLINE,
    install_epilog,
    output_of,
    run,
    sbatch,
    wait_for_end,
    wait_until,
    write_script,
)
from .test_batch_run import record_of, wrapped

ACCOUNTING_DEADLINE = 120.0  # the job's end -> its AdminComment in sacct, under emulation
# The job burns BURN_SECONDS of CPU in its own process and says how much it used.
BURN = (
    "python3 -c 'import resource, time\n"
    f"end = time.process_time() + {BURN_SECONDS}\n"
    "while time.process_time() < end: pass\n"
    "use = resource.getrusage(resource.RUSAGE_SELF)\n"
    'print("self_cpu_usec=%d" % int((use.ru_utime + use.ru_stime) * 1e6))\''
)


@pytest.fixture(scope="module", autouse=True)
def accounting(batch_entry: Path) -> None:
    """The Epilog installed, and slurmdbd answering for cluster testbed."""
    install_epilog()

    def cluster_known() -> bool:
        out = run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], check=False)
        return "testbed" in out.stdout.split()

    wait_until(cluster_known, 120, "slurmdbd to list cluster testbed (sacctmgr list cluster)")


def admin_comment(job_id: str) -> str:
    out = run(["sacct", "-j", job_id, "-n", "-P", "-X", "-o", "AdminComment"], check=False)
    return out.stdout.strip()


def test_sacct_shows_slotmgrs_figures_of_the_job_written_by_the_epilog(
    batch_entry: Path, workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(workdir, "burn.sh", wrapped(batch_entry, BURN), test_user)
    job_id = sbatch(script, user=test_user.pw_name)
    info = wait_for_end(job_id, JOB_DEADLINE + BURN_SECONDS)
    out = output_of(workdir, job_id)
    assert info["JobState"] == "COMPLETED", (info, out)
    (own,) = [int(w.split("=", 1)[1]) for w in out.split() if w.startswith("self_cpu_usec=")]
    (record,) = record_of(job_id)

    wait_until(
        lambda: admin_comment(job_id).startswith("slotmgr "),
        ACCOUNTING_DEADLINE,
        f"sacct -j {job_id} -o AdminComment to show slotmgr's figures",
    )
    comment = admin_comment(job_id)
    print(f"\nsacct -j {job_id} AdminComment: {comment}")
    fields = dict(word.split("=", 1) for word in comment.split()[1:])
    # What Slurm keeps is slotmgr's record of the job's unit, as it stored it.
    assert fields["units"] == "1" and fields["results"] == "success", fields
    assert int(fields["cpu_usec"]) == record["cpu_usage_usec"], (fields, record)
    assert int(fields["memory_peak_bytes"]) == record["memory_peak_bytes"], (fields, record)
    assert int(fields["io_write_bytes"]) == record["io_write_bytes"], (fields, record)
    assert fields["node"] in ("n1", "n2"), fields
    # The unit holds the job's process and its init: never less than the job's own.
    slotmgr_cpu = int(fields["cpu_usec"])
    assert slotmgr_cpu >= own, (slotmgr_cpu, own)
    above = (slotmgr_cpu - own) / own
    print(
        f"job's own CPU {own / 1e6:.3f} s, slotmgr's {slotmgr_cpu / 1e6:.3f} s: "
        f"{above:+.1%}, {(slotmgr_cpu - own) / 1e6:.3f} s more (goal: within 5%; "
        "the unit's figure counts its start and its init too)"
    )
    assert above <= 0.05, (slotmgr_cpu, own)
