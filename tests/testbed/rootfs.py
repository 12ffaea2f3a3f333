"""Root images: plain Debian installations made by mmdebstrap.

An image is a directory tree that guests mount read-only over 9p. It holds
only Debian packages; everything test-bed specific comes from the initramfs
(see initramfs.py), so the slow part is rebuilt only when the package list
changes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

from . import hostdeps
from .aptsources import mirror_url
from .cache import artifact_path, ensure_artifact
from .guests import Guest

FORMAT = 1  # bump when the options below change in a way the hash misses
# Documentation, manuals and translations are dead weight in a guest.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)


def recipe(guest: Guest) -> dict[str, object]:
    # The mirror is left out on purpose: any mirror serves the same suite.
    return {
        "kind": "rootfs",
        "format": FORMAT,
        "suite": guest.suite,
        "variant": "minbase",
        "packages": list(guest.packages),
        "dpkg": list(DPKG_OPTIONS),
    }


def rootfs_dir(guest: Guest, log: Callable[[str], None] = print) -> Path:
    the_recipe = recipe(guest)
    kind = f"rootfs-{guest.name}"
    if artifact_path(kind, the_recipe).is_dir():
        return artifact_path(kind, the_recipe)
    hostdeps.ensure_build_tools(log)
    return ensure_artifact(kind, the_recipe, lambda out: _build(out, guest), log)


def mmdebstrap_argv(guest: Guest, target: Path, mirror: str) -> list[str]:
    argv = [
        # A private mount namespace: mmdebstrap's bind mounts of /dev, /proc
        # ... into the target can never leak to (or linger on) the host.
        hostdeps.tool("unshare"),
        "--mount",
        "--propagation",
        "private",
        hostdeps.tool("mmdebstrap"),
        "--mode=root",
        "--variant=minbase",
        "--include=" + ",".join(guest.packages),
    ]
    argv += [f"--dpkgopt={option}" for option in DPKG_OPTIONS]
    argv += [guest.suite, str(target), mirror]
    return argv


def _build(out: Path, guest: Guest) -> None:
    image = out / "root"
    subprocess.run(
        mmdebstrap_argv(guest, image, mirror_url()), check=True, stdin=subprocess.DEVNULL
    )
