"""The QEMU command line (pure functions, so it can be unit-tested)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

KERNEL_CMDLINE_ENV = "SLOTMGR_TESTBED_KERNEL_CMDLINE"  # appended; for debugging
OUTPUT_PORT = "testbed.out"  # virtio-serial port name the runner looks up
SCRATCH_SERIAL = "testbed-scratch"  # disk serial the runner looks up


@dataclass(frozen=True)
class Share:
    tag: str  # 9p mount tag, what the guest mounts by
    path: Path
    readonly: bool = True


@dataclass(frozen=True)
class QemuConfig:
    kernel: Path
    initrd: Path
    cmdline: str
    shares: tuple[Share, ...]
    memory_mib: int = 2048
    cpus: int = 2
    scratch_disk: Path | None = None
    output_socket: Path | None = None  # run mode: QEMU connects here
    console_log: Path | None = None  # None: serial console on stdio (shell)
    extra: tuple[str, ...] = field(default=())


def kernel_cmdline(guest: str, target: str, quiet: bool = False, extra: str | None = None) -> str:
    words = [
        "console=ttyS0",
        # A panic reboots at once, and -no-reboot turns that into QEMU
        # exiting: a broken boot ends in seconds, not at the timeout.
        "panic=-1",
        # Under emulation every user/kernel switch costs; the guest runs
        # only trusted test code, so skip the speculation mitigations.
        "mitigations=off",
        # Under TCG the clocksource watchdog sees read-back delays, marks the
        # TSC unstable mid-run and flips the sched_clock static key: that
        # live code patch once panicked a guest ("Oops: int3" in
        # sched_clock_cpu), and hpet, the fallback, is slow to read. QEMU's
        # TSC follows the host's monotonic clock on every vCPU.
        "tsc=reliable",
        f"systemd.unit={target}",
        f"testbed.guest={guest}",
    ]
    if quiet:
        words += ["quiet", "systemd.show_status=error"]
    if extra is None:
        extra = os.environ.get(KERNEL_CMDLINE_ENV, "")
    return " ".join(words + extra.split())


def _opt(value: object) -> str:
    """Escape a value inside a QEMU option list (commas are doubled)."""
    return str(value).replace(",", ",,")


def qemu_argv(binary: str, config: QemuConfig) -> list[str]:
    argv = [
        binary,
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        # KVM on these machines cannot run a stock kernel: emulate.
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-m",
        str(config.memory_mib),
        "-smp",
        str(config.cpus),
        "-no-reboot",
        "-kernel",
        str(config.kernel),
        "-initrd",
        str(config.initrd),
        "-append",
        config.cmdline,
    ]
    if config.console_log is None:
        argv += ["-serial", "mon:stdio"]
    else:
        argv += [
            "-chardev",
            f"file,id=console,path={_opt(config.console_log)},append=on",
            "-serial",
            "chardev:console",
        ]
    for index, share in enumerate(config.shares):
        fsdev = f"local,id=fs{index},path={_opt(share.path)},security_model=none,multidevs=remap"
        if share.readonly:
            fsdev += ",readonly=on"
        argv += ["-fsdev", fsdev, "-device", f"virtio-9p-pci,fsdev=fs{index},mount_tag={share.tag}"]
    if config.output_socket is not None:
        argv += [
            "-device",
            "virtio-serial-pci,id=vser",
            "-chardev",
            f"socket,id=out,path={_opt(config.output_socket)}",
            "-device",
            f"virtserialport,bus=vser.0,chardev=out,name={OUTPUT_PORT}",
        ]
    if config.scratch_disk is not None:
        argv += [
            # unsafe: the disk is thrown away, so host flushes are wasted time
            "-drive",
            f"file={_opt(config.scratch_disk)},format=raw,if=none,id=scratch,"
            "cache=unsafe,discard=unmap",
            "-device",
            f"virtio-blk-pci,drive=scratch,serial={SCRATCH_SERIAL}",
        ]
    return argv + list(config.extra)
