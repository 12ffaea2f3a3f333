"""The guest's kernel modules: a small tree cut out of Debian's package.

``modules/<version>/`` holds the modules the initramfs loads at boot plus a
few to load on demand, with depmod data of their own; it becomes the guest's
``/lib/modules``. ``modules.load`` lists the boot modules in load order.
Modules are stored decompressed: busybox's insmod cannot read every
compression Debian uses.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

from . import hostdeps

MODULES = ("virtio_pci", "virtio_console", "virtio_blk", "9pnet_virtio", "9p", "overlay")
# Not loaded at boot, but installed in the guest with their depmod data, so
# that modprobe and the kernel's autoloading find them: the tests format and
# mount the scratch disk (ext4 wants a crc32c driver), and loop devices, the
# BFQ scheduler (IOWeight), FUSE and device-mapper are plausible next needs.
ON_DEMAND_MODULES = (
    "ext4",
    "crc32c_intel",
    "crc32c_generic",
    "loop",
    "bfq",
    "fuse",
    "dm_mod",
    "squashfs",
    "vfat",
)


def build_module_tree(root: Path, kver: str, work: Path, out: Path) -> None:
    """Fill out/modules and out/modules.load from the unpacked package at root."""
    if not (root / "lib" / "modules").is_dir():  # a package with /usr/lib/modules
        (root / "lib").symlink_to("usr/lib")
    src = root / "lib" / "modules" / kver
    # The package ships no modules.dep (its postinst runs depmod): make one.
    subprocess.run([hostdeps.tool("depmod"), "-b", str(root), kver], check=True)
    tree = work / "tree"
    dest = tree / "lib" / "modules" / kver
    dest.mkdir(parents=True)
    early: list[str] = []  # load order for the initramfs, dependencies first
    early_files = module_files(root, kver, MODULES)
    on_demand = module_files(root, kver, ON_DEMAND_MODULES, required=False)
    for path in early_files + on_demand:
        rel = (path.parent.relative_to(src) / decompressed_name(path)).as_posix()
        target = dest / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(read_module(path))
        if path in early_files and f"{kver}/{rel}" not in early:
            early.append(f"{kver}/{rel}")
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
    # modules.dep and modules.alias for this reduced tree, so that modprobe,
    # and the kernel's own module autoloading, work inside the guest.
    subprocess.run([hostdeps.tool("depmod"), "-b", str(tree), kver], check=True)
    (tree / "lib" / "modules").rename(out / "modules")
    (out / "modules.load").write_text("".join(f"{name}\n" for name in early))


def module_files(
    root: Path, kver: str, names: tuple[str, ...], *, required: bool = True
) -> list[Path]:
    """Module files in load order (dependencies first), builtins left out.
    A module the kernel does not have is an error only if it is required: an
    on-demand one may be renamed or built in from one release to the next
    (crc32c_intel, say)."""
    files: list[Path] = []
    for name in names:
        shown = subprocess.run(
            [hostdeps.tool("modprobe"), "-d", str(root), "-S", kver, "--show-depends", name],
            capture_output=True,
            text=True,
            check=required,
        )
        files += parse_show_depends(shown.stdout if shown.returncode == 0 else "", root)
    return files


def parse_show_depends(text: str, root: Path) -> list[Path]:
    """``insmod /lib/modules/.../x.ko`` lines; paths are relative to root."""
    files: list[Path] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "insmod":
            path = Path(words[1])
            # modprobe -d prints the path with or without the -d prefix
            # depending on the kmod version.
            if not str(path).startswith(str(root)):
                path = root / str(path).lstrip("/")
            files.append(path)
    return files


def decompressed_name(path: Path) -> str:
    name = path.name
    for suffix in (".xz", ".zst", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        hostdeps.ensure({"zstd": "zstd"})
        return subprocess.run(
            [hostdeps.tool("zstd"), "-dc", str(path)], capture_output=True, check=True
        ).stdout
    return data
