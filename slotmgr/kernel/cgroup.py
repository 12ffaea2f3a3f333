"""Reading a cgroup's own counters (a scope's, which its launcher records;
a service's are read by its stop hook, slotmgr/stophook.sh)."""

from __future__ import annotations

CGROUP_ROOT = "/sys/fs/cgroup"


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def read_counters(cgroup: str) -> dict[str, int]:
    """memory.peak, pids.peak, cpu.stat and io.stat of `cgroup`; a counter
    the kernel lacks (pids.peak before Linux 6.13, say) is left out."""
    base = CGROUP_ROOT + cgroup
    counters: dict[str, int] = {}
    for key, name in (("memory_peak", "memory.peak"), ("pids_peak", "pids.peak")):
        peak = _read_int(f"{base}/{name}")
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
    try:
        with open(f"{base}/cpu.stat") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key in ("usage_usec", "user_usec", "system_usec"):
                    counters[key] = int(value)
    except (OSError, ValueError):
        pass
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
