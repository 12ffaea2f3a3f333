"""A job's cgroup (v2) as the kernel shows it: its files, its processes,
its counters, its freezer.

A group is a path below the cgroup root, as systemd's ControlGroup= gives it
(`/slotmgr.slice/slotmgr-ab.service`). A scope's counters are read here by
its launcher; a service's by its own stop hook, slotmgr/stophook.sh.
"""

from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"


def directory(group: str, *, root: str | None = None) -> str:
    return (CGROUP_ROOT if root is None else root) + group


def read_file(group: str, name: str, *, root: str | None = None) -> str | None:
    """A file of `group`, stripped; None if it cannot be read (no such
    controller, or the cgroup is gone)."""
    try:
        with open(f"{directory(group, root=root)}/{name}") as f:
            return f.read().strip()
    except OSError:
        return None


def read_int(group: str, name: str, *, root: str | None = None) -> int | None:
    """A one-number file; None for 'max', a missing file or garbage."""
    text = read_file(group, name, root=root)
    if text is None or not text.isdigit():
        return None
    return int(text)


def pids(group: str, *, root: str | None = None) -> list[int]:
    """Every PID in the group and below it (threads' groups once)."""
    found: list[int] = []
    for here, _dirs, files in os.walk(directory(group, root=root)):
        if "cgroup.procs" not in files:
            continue
        try:
            with open(os.path.join(here, "cgroup.procs")) as f:
                found += [int(line) for line in f if line.strip()]
        except OSError:
            continue
    return found


def cpu_stat(group: str, *, root: str | None = None) -> dict[str, int]:
    """cpu.stat's usage_usec, user_usec and system_usec (empty if unreadable)."""
    stat: dict[str, int] = {}
    for line in (read_file(group, "cpu.stat", root=root) or "").splitlines():
        key, _, value = line.partition(" ")
        if key in ("usage_usec", "user_usec", "system_usec") and value.strip().isdigit():
            stat[key] = int(value)
    return stat


def set_frozen(group: str, frozen: bool) -> None:
    """Write the group's cgroup.freeze; OSError if it cannot be."""
    with open(f"{directory(group)}/cgroup.freeze", "w") as f:
        f.write("1" if frozen else "0")


def read_counters(cgroup: str) -> dict[str, int]:
    """memory.peak, pids.peak, cpu.stat and io.stat of `cgroup`; a counter
    the kernel lacks (pids.peak before Linux 6.13, say) is left out."""
    base = directory(cgroup)
    counters: dict[str, int] = {}
    for key, name in (("memory_peak", "memory.peak"), ("pids_peak", "pids.peak")):
        peak = read_int(cgroup, name)
        if peak is not None:
            counters[key] = peak
    try:
        # OOM kills of the job's processes, whichever limit caused them (the
        # unit's own, or its slot's slice above it): the kernel counts them here.
        with open(f"{base}/memory.events") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    counters["oom_kill"] = int(value)
    except (OSError, ValueError):
        pass
    counters.update(cpu_stat(cgroup))
    try:
        read = written = 0
        with open(f"{base}/io.stat") as f:
            for line in f:
                for item in line.split()[1:]:
                    key, _, value = item.partition("=")
                    if key == "rbytes":
                        read += int(value)
                    elif key == "wbytes":
                        written += int(value)
        counters["io_read"], counters["io_write"] = read, written
    except (OSError, ValueError):
        pass
    return counters
