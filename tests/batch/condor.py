"""HTCondor helpers of the batch tier: the guest's one-node pool (257-batch).

The pool is Debian's condor + minicondor, made two static slots (slot1,
slot2: 1 CPU, 512 MiB each) with short intervals at boot by
tests/testbed/guest/overlay/usr/local/lib/testbed/condor-setup. The tests add
slotmgr as an admin would (packaging/htcondor/), and act as a user would:
condor_submit, condor_q, condor_rm, condor_history, condor_status.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO, run, slotmgr_argv, wait_until

WRAPPER = Path("/usr/libexec/slotmgr/htcondor-wrapper")
CONFIG = Path("/etc/condor/config.d/50-slotmgr.conf")
SLOTS = ("slot1", "slot2")
POOL_DEADLINE = 240.0  # boot to both slots in the collector, under emulation
JOB_DEADLINE = 90.0
# JobStatus values
IDLE, RUNNING, REMOVED, COMPLETED, HELD = 1, 2, 3, 4, 5
STATUS_NAMES = {1: "Idle", 2: "Running", 3: "Removed", 4: "Completed", 5: "Held"}
ACTIVE_STATES = ("active", "activating", "deactivating", "reloading")


def have_condor() -> bool:
    return shutil.which("condor_submit") is not None and os.path.exists("/usr/sbin/condor_master")


def slot_states() -> dict[str, str]:
    """condor_status's State of each slot, by its short name: {'slot1': 'Unclaimed'}."""
    proc = run(["condor_status", "-af", "Name", "State"], check=False, timeout=30)
    states = {}
    for line in proc.stdout.splitlines():
        words = line.split()
        if len(words) == 2:
            states[words[0].split("@", 1)[0]] = words[1]
    return states


def pool_diagnostics() -> str:
    parts = []
    for argv in (
        ["condor_status", "-any"],
        ["condor_q", "-all", "-nobatch"],
        ["systemctl", "--no-pager", "--full", "status", "testbed-condor-setup", "condor"],
        ["sh", "-c", "tail -n 20 /var/log/condor/*Log"],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        parts.append(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    return "\n".join(parts)


def wait_for_pool(timeout: float = POOL_DEADLINE) -> float:
    """Wait until both slots are Unclaimed in the collector; return the guest's uptime then."""
    deadline = time.monotonic() + timeout
    while True:
        states = slot_states()
        if all(states.get(slot) == "Unclaimed" for slot in SLOTS):
            return float(Path("/proc/uptime").read_text().split()[0])
        if time.monotonic() > deadline:
            pytest.fail(
                f"the HTCondor pool did not come up within {timeout:.0f} s: slots "
                f"{states or 'none'} (want {', '.join(SLOTS)} Unclaimed)\n{pool_diagnostics()}",
                pytrace=False,
            )
        time.sleep(1)


def install_slotmgr() -> None:
    """What an admin installs for slotmgr on an HTCondor node (besides the
    sudo entry): the wrapper and the config snippet; then condor_reconfig,
    and wait until the schedd has the hold policy."""
    shutil.copyfile(REPO / "packaging" / "htcondor" / "slotmgr-wrapper", WRAPPER)
    os.chown(WRAPPER, 0, 0)
    WRAPPER.chmod(0o755)
    shutil.copyfile(REPO / "packaging" / "htcondor" / "50-slotmgr.conf", CONFIG)
    CONFIG.chmod(0o644)
    run(["condor_reconfig"])

    def schedd_has_it() -> bool:
        proc = run(["condor_config_val", "-schedd", "JOB_TRANSFORM_NAMES"], check=False)
        return "SlotmgrJob" in proc.stdout

    wait_until(schedd_has_it, 60, "the schedd to read 50-slotmgr.conf")
    assert run(["condor_config_val", "USER_JOB_WRAPPER"]).stdout.strip() == str(WRAPPER)


@dataclass(frozen=True)
class Job:
    cluster: int
    directory: Path

    @property
    def id(self) -> str:
        return f"{self.cluster}.0"

    def read(self, name: str) -> str:
        return (self.directory / name).read_text()


def submit(
    directory: Path,
    owner: pwd.struct_passwd,
    executable: str,
    arguments: str = "",
    extra: str = "",
) -> Job:
    """condor_submit, as `owner`, of one vanilla job run in `directory`
    (its output in job.out, job.err; its event log in job.log)."""
    text = (
        "universe = vanilla\n"
        f"executable = {executable}\n"
        f"arguments = {arguments}\n"
        "transfer_executable = false\n"
        "should_transfer_files = NO\n"
        f"initialdir = {directory}\n"
        "output = job.out\nerror = job.err\nlog = job.log\n"
        "request_cpus = 1\n"
        f"{extra}"
        "queue\n"
    )
    path = directory / "job.sub"
    path.write_text(text)
    os.chown(path, owner.pw_uid, owner.pw_gid)
    proc = run(["condor_submit", "-terse", str(path)], user=owner.pw_name, cwd=directory)
    # -terse: "12.0 - 12.0"
    first = proc.stdout.split()[0]
    cluster = first.split(".")[0]
    assert cluster.isdigit(), proc.stdout
    return Job(int(cluster), directory)


def queue_ad(job: Job, *attrs: str) -> dict[str, str] | None:
    """The job's attributes from condor_q (None once it has left the queue)."""
    proc = run(["condor_q", job.id, "-af:j", *attrs], check=False, timeout=30)
    for line in proc.stdout.splitlines():
        words = line.split(None, len(attrs))
        if words and words[0] == job.id:
            return dict(zip(attrs, words[1:]))
    return None


def history_ad(job: Job) -> dict[str, str] | None:
    """The job's whole ad from condor_history (None until it is there)."""
    proc = run(["condor_history", job.id, "-limit", "1", "-l"], check=False, timeout=30)
    ad = {}
    for line in proc.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            ad[name.strip()] = value.strip()
    return ad or None


def job_status(job: Job) -> int | None:
    """JobStatus from the queue, else from the history; None if neither knows it."""
    ad = queue_ad(job, "JobStatus")
    if ad is not None and ad.get("JobStatus", "").isdigit():
        return int(ad["JobStatus"])
    hist = history_ad(job)
    if hist is not None and hist.get("JobStatus", "").isdigit():
        return int(hist["JobStatus"])
    return None


def wait_for_status(job: Job, wanted: tuple[int, ...], timeout: float = JOB_DEADLINE) -> int:
    seen: list[int | None] = []

    def reached() -> bool:
        status = job_status(job)
        if not seen or seen[-1] != status:
            seen.append(status)
        return status in wanted

    try:
        wait_until(
            reached, timeout, f"job {job.id} to be {'/'.join(STATUS_NAMES[w] for w in wanted)}"
        )
    except AssertionError as err:
        names = " -> ".join(STATUS_NAMES.get(s, str(s)) if s else "?" for s in seen)
        raise AssertionError(
            f"{err}; states seen: {names}\n{pool_diagnostics()}\n"
            f"job.err: {_maybe(job.directory / 'job.err')}\n"
            f"job.log: {_maybe(job.directory / 'job.log')}"
        ) from None
    status = seen[-1]
    assert status is not None
    return status


def wait_for_history(job: Job, *attrs: str, timeout: float = 60) -> dict[str, str]:
    """The job's history ad, once it has every one of `attrs`."""
    found: list[dict[str, str]] = []

    def there() -> bool:
        ad = history_ad(job)
        if ad is not None and all(a in ad for a in attrs):
            found.append(ad)
            return True
        return False

    wait_until(there, timeout, f"job {job.id} in condor_history with {', '.join(attrs)}")
    return found[-1]


def _maybe(path: Path) -> str:
    try:
        return path.read_text()[-3000:]
    except OSError as exc:
        return f"({exc})"


@dataclass(frozen=True)
class Unit:
    name: str
    user: str
    main_pid: int
    active_state: str


def units_of(batch_id: str) -> list[Unit]:
    """slotmgr's job units (loaded, in any state) whose batch id is `batch_id`."""
    listed = run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", "slotmgr-*.service"]
    ).stdout
    units = []
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.endswith(".service") or name.startswith("slotmgr-launcher-"):
            continue
        props = systemctl_show(name, "LogExtraFields", "User", "MainPID", "ActiveState")
        fields = props.get("LogExtraFields", "").split()
        if f"SLOTMGR_BATCH_ID={batch_id}" in fields:
            units.append(
                Unit(name, props["User"], int(props["MainPID"] or 0), props["ActiveState"])
            )
    return units


def running_units_of(batch_id: str) -> list[Unit]:
    return [u for u in units_of(batch_id) if u.active_state in ACTIVE_STATES]


def systemctl_show(unit: str, *props: str) -> dict[str, str]:
    out = run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_for_unit(job: Job, timeout: float = JOB_DEADLINE) -> Unit:
    """The job's slotmgr unit, once it is active."""
    found: list[Unit] = []

    def active() -> bool:
        found[:] = [u for u in units_of(job.id) if u.active_state == "active"]
        return bool(found)

    try:
        wait_until(active, timeout, f"a slotmgr unit with batch id {job.id} to be active")
    except AssertionError as err:
        raise AssertionError(
            f"{err}: units {units_of(job.id)}\njob.err: {_maybe(job.directory / 'job.err')}\n"
            f"{pool_diagnostics()}"
        ) from None
    return found[0]


def remote_slot(job: Job) -> str:
    """The short name of the slot the running job was matched to (slot1 ...)."""
    ad = queue_ad(job, "RemoteHost")
    assert ad is not None and ad.get("RemoteHost"), f"job {job.id} has no RemoteHost: {ad}"
    return ad["RemoteHost"].strip('"').split("@", 1)[0]


def assert_not_double_booked(slot: str, batch_id: str, timeout: float = 60) -> float:
    """Until `slot` shows Unclaimed again (within `timeout`), and then once
    more: whenever the collector shows it Unclaimed, no unit of the job runs.
    Returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        unclaimed = slot_states().get(slot) == "Unclaimed"
        running = running_units_of(batch_id)
        assert not (unclaimed and running), (
            f"{slot} is Unclaimed while job {batch_id} still runs in {running}"
        )
        if unclaimed:
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{slot} did not become Unclaimed within {timeout:.0f} s\n{pool_diagnostics()}"
            )
        time.sleep(0.5)


def launcher_pids(batch_id: str) -> list[int]:
    """The batch-run python processes (root, under sudo) of this batch id."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if (
            len(words) >= 3
            and os.path.basename(words[0]).startswith("python3")
            and "/usr/libexec/slotmgr/batch-run" in words
            and batch_id in words
        ):
            pids.append(int(entry))
    return pids


def slotmgr_record(unit: str) -> dict[str, object] | None:
    """The finished job's record, from `slotmgr status UNIT --json` (None until there)."""
    proc = subprocess.run(
        [*slotmgr_argv(), "status", unit, "--json"], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout)
    return data if isinstance(data, dict) else None


def sudo_commands(batch_id: str) -> list[str]:
    """The batch-run command lines sudo logged for this batch id."""
    out = run(["journalctl", "-q", "-o", "cat", "-t", "sudo", "--no-pager"]).stdout
    return [line for line in out.splitlines() if f"--batch-id {batch_id} " in line]


def wait_for_unit_stop(unit: str, since: float, timeout: float) -> float:
    """Seconds from `since` (time.monotonic()) until systemd had `unit`
    inactive: its InactiveEnterTimestampMonotonic where systemd still has the
    unit, else when this poll first saw it gone."""
    deadline = since + timeout
    while True:
        props = systemctl_show(unit, "ActiveState", "InactiveEnterTimestampMonotonic")
        if props.get("ActiveState") not in ACTIVE_STATES:
            seen = time.monotonic() - since
            stamp = props.get("InactiveEnterTimestampMonotonic", "0")
            usec = int(stamp) if stamp.isdigit() else 0
            return usec / 1e6 - since if usec / 1e6 > since else seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{unit} still {props} {timeout:.0f} s after its launcher died")
        time.sleep(0.1)
