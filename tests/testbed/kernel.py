"""The guest kernel: Debian's own, downloaded and unpacked, never installed.

The artifact keeps only what the guests need: the kernel image and a small
module tree (see kmodules.py).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from . import hostdeps
from .cache import artifact_path, ensure_artifact
from .errors import TestbedError
from .kmodules import MODULES, ON_DEMAND_MODULES, build_module_tree
from .paths import cache_dir

META_PACKAGE = "linux-image-amd64"
# Early-boot drivers: PCI virtio transport, the output port, the scratch
# disk, 9p shares and the overlay root. Their dependencies are added by
# modprobe --show-depends. No network driver: the guest has no NIC.
FORMAT = 3  # bump when the artifact layout changes
XZ_MAGIC = b"\xfd7zXZ\x00"


def _apt_cache(*args: str) -> str:
    return subprocess.run(["apt-cache", *args], capture_output=True, text=True, check=False).stdout


def _lists_fingerprint(lists: Path = Path("/var/lib/apt/lists")) -> str:
    """Changes whenever apt's package lists do (names, sizes, times)."""
    digest = hashlib.sha256()
    for path in sorted(lists.glob("*_Packages*")):
        st = path.stat()
        digest.update(f"{path.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def resolve_package(log: Callable[[str], None] = print) -> tuple[str, str]:
    """The versioned kernel package linux-image-amd64 points at, and its version.

    Asking apt-cache costs about a second (this host keeps no binary package
    cache), so the answer is remembered until the package lists change.
    """
    memo = cache_dir() / "kernel-package.json"
    fingerprint = _lists_fingerprint()
    try:
        saved = json.loads(memo.read_text())
        if saved["lists"] == fingerprint:
            return saved["package"], saved["version"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    package, version = _ask_apt(log)
    memo.write_text(
        json.dumps({"lists": _lists_fingerprint(), "package": package, "version": version}) + "\n"
    )
    return package, version


def _ask_apt(log: Callable[[str], None]) -> tuple[str, str]:
    for attempt in range(2):
        package = parse_depends(_apt_cache("depends", META_PACKAGE))
        if package:
            version = parse_candidate(_apt_cache("policy", package))
            if version:
                return package, version
        if attempt == 0:  # no or stale package lists on a fresh machine
            log("testbed: refreshing apt package lists")
            subprocess.run(["apt-get", "update"], check=False, stdout=subprocess.DEVNULL)
    raise TestbedError(f"apt knows no kernel package behind {META_PACKAGE}")


def parse_depends(text: str) -> str | None:
    """The first ``Depends: linux-image-*`` of ``apt-cache depends`` output."""
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key.lstrip("|") == "Depends" and value.strip().startswith("linux-image-"):
            return value.strip()
    return None


def parse_candidate(text: str) -> str | None:
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate" and value.strip() not in ("", "(none)"):
            return value.strip()
    return None


def recipe(package: str, version: str) -> dict[str, object]:
    return {
        "on_demand": list(ON_DEMAND_MODULES),
        "kind": "kernel",
        "format": FORMAT,
        "package": package,
        "version": version,
        "modules": list(MODULES),
    }


def kernel_dir(log: Callable[[str], None] = print) -> Path:
    """The kernel artifact directory, building it if needed (hold build_lock)."""
    package, version = resolve_package(log)
    the_recipe = recipe(package, version)
    if artifact_path("kernel", the_recipe).is_dir():
        return artifact_path("kernel", the_recipe)
    hostdeps.ensure_build_tools(log)
    try:
        return ensure_artifact("kernel", the_recipe, lambda out: _build(out, package, version), log)
    except subprocess.CalledProcessError:
        # Stale package lists name a version the mirror no longer has.
        log("testbed: kernel download failed; refreshing apt package lists and retrying")
        subprocess.run(["apt-get", "update"], check=False, stdout=subprocess.DEVNULL)
        package, version = resolve_package(log)
        the_recipe = recipe(package, version)
        return ensure_artifact("kernel", the_recipe, lambda out: _build(out, package, version), log)


def _build(out: Path, package: str, version: str) -> None:
    work = out / "work"
    work.mkdir()
    # Sandbox user root: the _apt user may not write into the cache dir.
    subprocess.run(
        ["apt-get", "download", "-o", "APT::Sandbox::User=root", f"{package}={version}"],
        cwd=work,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (deb,) = work.glob("*.deb")
    root = work / "root"
    subprocess.run([hostdeps.tool("dpkg-deb"), "-x", str(deb), str(root)], check=True)
    kver = _kernel_version(root)
    bzimage = root / "boot" / f"vmlinuz-{kver}"
    config = (root / "boot" / f"config-{kver}").read_text()
    vmlinux = extract_vmlinux(bzimage.read_bytes()) if "CONFIG_PVH=y" in config else None
    if vmlinux is not None:
        (out / "vmlinux").write_bytes(vmlinux)
    else:
        shutil.copyfile(bzimage, out / "vmlinuz")
    (out / "version").write_text(kver + "\n")
    build_module_tree(root, kver, work, out)
    shutil.rmtree(work)


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF kernel inside a bzImage, if it is xz-compressed.

    QEMU boots such an ELF directly through its PVH entry point. That skips
    the bzImage's own decompressor, which takes 2-3 s under emulation.
    """
    at = bzimage.find(XZ_MAGIC)
    if at < 0:
        return None
    try:
        elf = lzma.LZMADecompressor().decompress(bzimage[at:])
    except lzma.LZMAError:
        return None
    return elf if elf.startswith(b"\x7fELF") else None


def boot_image(kernel: Path) -> Path:
    """The file to hand QEMU's -kernel: the ELF if extracted, else the bzImage."""
    vmlinux = kernel / "vmlinux"
    return vmlinux if vmlinux.is_file() else kernel / "vmlinuz"


def _kernel_version(root: Path) -> str:
    candidates = sorted(p.name[len("vmlinuz-") :] for p in (root / "boot").glob("vmlinuz-*"))
    if len(candidates) != 1:
        raise TestbedError(f"expected one vmlinuz in the kernel package, found {candidates}")
    return candidates[0]
