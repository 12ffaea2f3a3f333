"""The initramfs: static busybox, the kernel modules and the guest files.

Everything the test bed adds to a guest (init script, systemd units, the
runner, unit masks, kernel modules) lives here rather than in the root
images, so changing it rebuilds a few megabytes in a second instead of a
Debian installation.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

from . import hostdeps
from .cache import artifact_path, ensure_artifact, hash_tree
from .cpio import CpioWriter
from .paths import GUEST_FILES

BUSYBOX = Path("/bin/busybox")
FORMAT = 2  # bump when the archive layout changes
OVERLAY = "etc/testbed/overlay"  # /init copies this tree over the root image


def busybox_version() -> str:
    return subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "busybox-static"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def mask_entries(text: str) -> list[str]:
    """Paths (relative to /etc/systemd) from the masks file, comments skipped."""
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def recipe(kernel: Path) -> dict[str, object]:
    return {
        "kind": "initramfs",
        "format": FORMAT,
        "kernel": kernel.name,
        "busybox": busybox_version(),
        "guest_files": hash_tree(GUEST_FILES),
    }


def initramfs_dir(kernel: Path, log: Callable[[str], None] = print) -> Path:
    the_recipe = recipe(kernel)
    if not artifact_path("initramfs", the_recipe).is_dir():
        hostdeps.ensure_build_tools(log)
        the_recipe = recipe(kernel)  # busybox may just have been installed
    return ensure_artifact("initramfs", the_recipe, lambda out: _build(out, kernel), log)


class _Tree:
    """Adds files to the archive, creating each parent directory once."""

    def __init__(self, archive: CpioWriter) -> None:
        self.archive = archive
        self.dirs: set[str] = set()

    def directory(self, name: str) -> None:
        parts = name.split("/")
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent not in self.dirs:
                self.archive.directory(parent)
                self.dirs.add(parent)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        if "/" in name:
            self.directory(name.rpartition("/")[0])
        self.archive.file(name, data, perm)

    def symlink(self, name: str, target: str) -> None:
        self.directory(name.rpartition("/")[0])
        self.archive.symlink(name, target)

    def copy_tree(self, root: Path, prefix: str) -> None:
        self.directory(prefix)
        for path in sorted(root.rglob("*")):
            name = f"{prefix}/{path.relative_to(root).as_posix()}"
            if path.is_dir():
                self.directory(name)
            else:
                data = path.read_bytes()
                # Scripts must be executable whatever mode git gave them.
                self.file(name, data, 0o755 if data.startswith(b"#!") else 0o644)


def _build(out: Path, kernel: Path) -> None:
    with open(out / "initrd.cpio", "wb") as handle:
        # Left uncompressed: unpacking is a copy, while decompressing costs
        # noticeable time under emulation; the archive is only a few MB.
        archive = CpioWriter(handle)
        tree = _Tree(archive)
        for name in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys"):
            tree.directory(name)  # busybox --install puts its links here
        # The kernel opens /dev/console for init's stdio before /init runs.
        archive.char_device("dev/console", 5, 1)
        tree.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        tree.file("init", (GUEST_FILES / "init").read_bytes(), 0o755)
        tree.file("etc/testbed/modules.load", (kernel / "modules.load").read_bytes())
        tree.copy_tree(GUEST_FILES / "overlay", OVERLAY)
        # Root images are merged-/usr, so this is also /lib/modules there.
        tree.copy_tree(kernel / "modules", f"{OVERLAY}/usr/lib/modules")
        # Masking = a link to /dev/null in /etc, which wins over /usr/lib.
        for entry in mask_entries((GUEST_FILES / "masks").read_text()):
            tree.symlink(f"{OVERLAY}/etc/systemd/{entry}", "/dev/null")
        archive.close()
