"""Everything one guest needs to boot, built (or found) in the cache."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .cache import build_lock, dir_size, in_use, stale_artifacts
from .guests import get_guest
from .initramfs import initramfs_dir
from .kernel import boot_image, kernel_dir, prefetch
from .rootfs import rootfs_dir


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BootArtifacts:
    kernel: Path  # uncompressed ELF (PVH boot) or bzImage
    initrd: Path  # uncompressed cpio
    rootfs: Path  # directory tree shared over 9p


def ensure_built(guest_name: str, log: Callable[[str], None] = _stderr) -> BootArtifacts:
    """Build whatever is missing for guest_name and return the artifact paths.

    Build progress goes to stderr by default so that a run's stdout carries
    nothing but the guest command's output.
    """
    guest = get_guest(guest_name)
    prefetch(guest.suite, log)  # a download must not hold up the other guests' builds
    with build_lock():
        kernel = kernel_dir(guest.suite, log)
        initramfs = initramfs_dir(kernel, log)
        rootfs = rootfs_dir(guest, log)
    return BootArtifacts(boot_image(kernel), initramfs / "initrd.cpio", rootfs / "root")


def build(guest_names: list[str], prune: bool = True, log: Callable[[str], None] = print) -> None:
    """The ``build`` command: refresh the cache, report each part's time."""
    kept: list[Path] = []
    for name in guest_names:
        started = time.monotonic()
        artifacts = ensure_built(name, log)
        log(f"testbed: guest {name} ready in {time.monotonic() - started:.1f} s")
        for path in (artifacts.kernel.parent, artifacts.initrd.parent, artifacts.rootfs.parent):
            if path not in kept:
                kept.append(path)
    if prune:
        with build_lock():
            for path in kept:
                kind = path.name[: -len("-0123456789abcdef")]
                for old in stale_artifacts(kind, path):
                    # A running guest still reads its root image and kernel.
                    if old not in kept and not in_use(old):
                        log(f"testbed: removing superseded {old.name}")
                        shutil.rmtree(old)
    for path in kept:
        log(f"testbed: {path.name}: {dir_size(path) / 2**20:.0f} MiB")
