"""The guests: which Debian release gives which systemd version."""

from __future__ import annotations

from dataclasses import dataclass

# Installed in every root image. minbase has no init, no bus and no Python;
# the rest is what slotmgr's tests and its RPM packaging checks call.
PACKAGES = (
    "systemd-sysv",
    "dbus",
    "procps",
    "python3",
    "python3-jeepney",
    "python3-click",
    "python3-pytest",
    "util-linux",
    "e2fsprogs",
    "passwd",
    "rpm2cpio",
    "cpio",
    "psmisc",
    "iproute2",
    "kmod",
    "catatonit",  # the jobs' compiled PID-namespace init (pidshim is the fallback)
)
# Added by the batch guests: a real Slurm (controller, node daemon, client
# commands) with its authentication daemon. The test bed's own setup of them
# (guest/overlay: testbed-batch.target) starts only where slurmd is installed.
# sudo: a batch job's user reaches slotmgr through its sudo entry (packaging/sudoers.d).
SLURM_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "sudo")
# Added by 257-batch only: a C compiler and Slurm's headers, so that
# tests/batch/test_spank.py builds packaging/slurm/spank_slotmgr.c in the guest
# (spank_prepend_task_argv is Slurm 23.11+; 252-batch's 22.05 has none).
SPANK_BUILD_PACKAGES = ("gcc", "libc6-dev", "libslurm-dev")
# Added by the trixie batch guest only (Debian 12 has no HTCondor): the daemons
# (`condor`, 23.9.6; `htcondor` is a transitional name for it) and their
# single-node configuration (`minicondor`). The test bed turns it into a pool
# of two static slots at boot (guest/overlay: testbed-condor-setup.service),
# only where condor_master is installed.
CONDOR_PACKAGES = ("condor", "minicondor")
# Added by 257-batch only: Slurm's accounting daemon and its database, so that
# `sacct` shows what slotmgr's Epilog writes into a job's AdminComment
# (tests/batch/test_accounting.py). Set up at boot only where slurmdbd is
# installed (guest/overlay: testbed-accounting-setup.service).
ACCOUNTING_PACKAGES = ("slurmdbd", "mariadb-server")


@dataclass(frozen=True)
class Guest:
    name: str  # what users type: the systemd major version
    suite: str  # Debian release the root image is built from
    extra_packages: tuple[str, ...] = ()  # installed on top of PACKAGES in this guest only

    @property
    def packages(self) -> tuple[str, ...]:
        """Everything its root image installs, sorted (the image's recipe names them)."""
        return tuple(sorted({*PACKAGES, *self.extra_packages}))


GUESTS = {
    "252": Guest("252", "bookworm"),
    "257": Guest("257", "trixie"),
    # Slurm 22.05 and 24.11: a one-controller, two-node cluster in one guest;
    # 257-batch also has an HTCondor 23.9 pool (one node, slots slot1 and slot2).
    "252-batch": Guest("252-batch", "bookworm", SLURM_PACKAGES),
    "257-batch": Guest(
        "257-batch",
        "trixie",
        (*SLURM_PACKAGES, *SPANK_BUILD_PACKAGES, *CONDOR_PACKAGES, *ACCOUNTING_PACKAGES),
    ),
}


def get_guest(name: str) -> Guest:
    try:
        return GUESTS[name]
    except KeyError:
        raise ValueError(f"unknown guest {name!r} (choose from {', '.join(GUESTS)})") from None
