"""The guest kernels: each guest's own Debian release's, unpacked, never installed.

RHEL pairs systemd 252 with Linux 5.14 (RHEL 9) and systemd 257 with 6.12
(RHEL 10); Debian 12 and 13 pair them with 6.1 and 6.12. So each guest boots
its own release's kernel: the 257 guest gets Landlock ABI 6 (abstract socket
and signal scoping), which 6.1 lacks. The host's release's kernel comes
through the host's apt; another release's through a private apt state in
the cache (its own sources, lists and package cache), so the host's apt is
never changed. Kernels are cached side by side (their recipes name package
and version), each with its own initramfs and matching modules.

The artifact keeps only what the guests need: the kernel image and a small
module tree (see kmodules.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from . import hostdeps
from .aptsources import mirror_url
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
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


HOST_LISTS = Path("/var/lib/apt/lists")


def host_suite(os_release: Path = Path("/etc/os-release")) -> str:
    """The Debian release the host runs (its apt serves that release's kernel)."""
    try:
        for line in os_release.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "VERSION_CODENAME":
                return value.strip().strip('"')
    except OSError:
        pass
    return ""


class Apt:
    """apt-get and apt-cache for one suite: the host's own, or a private state."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.private = suite != host_suite()
        self.options: list[str] = []
        self.lists = HOST_LISTS
        if self.private:
            root = cache_dir() / f"apt-{suite}"
            self.lists = root / "lists"
            for sub in (self.lists / "partial", root / "archives" / "partial", root / "parts"):
                sub.mkdir(parents=True, exist_ok=True)
            sources = root / "sources.list"
            sources.write_text(f"deb {mirror_url()} {suite} main\n")
            self.options = [
                f"Dir::Etc::SourceList={sources}",
                f"Dir::Etc::SourceParts={root / 'parts'}",
                f"Dir::Etc::PreferencesParts={root / 'parts'}",
                "Dir::Etc::Preferences=/dev/null",
                f"Dir::State::Lists={self.lists}",
                f"Dir::Cache={root}",
                f"Dir::Cache::archives={root / 'archives'}",
                "Acquire::Languages=none",
            ]

    def argv(self, tool: str, *args: str) -> list[str]:
        options = [*self.options, "APT::Sandbox::User=root"]
        return [tool, *(word for opt in options for word in ("-o", opt)), *args]

    def cache(self, *args: str) -> str:
        argv = self.argv("apt-cache", *args)
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    def update(self) -> None:
        subprocess.run(self.argv("apt-get", "update"), check=False, stdout=subprocess.DEVNULL)


def _lists_fingerprint(lists: Path = HOST_LISTS) -> str:
    """Changes whenever apt's package lists do (names, sizes, times)."""
    digest = hashlib.sha256()
    for path in sorted(lists.glob("*_Packages*")):
        st = path.stat()
        digest.update(f"{path.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def resolve_package(apt: Apt, log: Callable[[str], None] = print) -> tuple[str, str]:
    """The versioned kernel package linux-image-amd64 points at, and its version.

    Asking apt-cache costs about a second (this host keeps no binary package
    cache), so the answer is remembered until the package lists change.
    """
    name = f"kernel-package-{apt.suite}.json" if apt.private else "kernel-package.json"
    memo = cache_dir() / name
    fingerprint = _lists_fingerprint(apt.lists)
    try:
        saved = json.loads(memo.read_text())
        if saved["lists"] == fingerprint:
            return saved["package"], saved["version"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    package, version = _ask_apt(apt, log)
    memo.write_text(
        json.dumps({"lists": _lists_fingerprint(apt.lists), "package": package, "version": version})
        + "\n"
    )
    return package, version


def _ask_apt(apt: Apt, log: Callable[[str], None]) -> tuple[str, str]:
    for attempt in range(2):
        package = parse_depends(apt.cache("depends", META_PACKAGE))
        if package:
            version = parse_candidate(apt.cache("policy", package))
            if version:
                return package, version
        if attempt == 0:  # no or stale package lists on a fresh machine
            log(f"testbed: refreshing apt package lists ({apt.suite})")
            apt.update()
    raise TestbedError(f"apt knows no kernel package behind {META_PACKAGE} in {apt.suite}")


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


def prefetch(suite: str, log: Callable[[str], None] = print) -> None:
    """Download the suite's kernel package if its artifact is missing. Called
    before build_lock is taken: other guests need not wait for a download."""
    apt = Apt(suite)
    package, version = resolve_package(apt, log)
    if not artifact_path("kernel", recipe(package, version)).is_dir():
        # On failure kernel_dir refreshes the lists and tries again, under the lock.
        with contextlib.suppress(subprocess.CalledProcessError):
            fetch_deb(apt, package, version, log)


def fetch_deb(apt: Apt, package: str, version: str, log: Callable[[str], None]) -> Path:
    """The package file, downloaded once into the cache (atomically: by rename)."""
    debs = cache_dir() / "debs"
    debs.mkdir(exist_ok=True)
    target = debs / f"{package}_{version}.deb"
    if target.is_file():
        return target
    log(f"testbed: downloading {package} {version} ({apt.suite})")
    with tempfile.TemporaryDirectory(dir=debs) as work:
        # Sandbox user root: the _apt user may not write into the cache dir.
        subprocess.run(
            apt.argv("apt-get", "download", f"{package}={version}"),
            cwd=work,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (deb,) = Path(work).glob("*.deb")
        deb.replace(target)
    return target


def kernel_dir(suite: str, log: Callable[[str], None] = print) -> Path:
    """The suite's kernel artifact directory, building it if needed (hold build_lock)."""
    apt = Apt(suite)
    package, version = resolve_package(apt, log)
    the_recipe = recipe(package, version)
    if artifact_path("kernel", the_recipe).is_dir():
        return artifact_path("kernel", the_recipe)
    hostdeps.ensure_build_tools(log)
    try:
        return ensure_artifact(
            "kernel", the_recipe, lambda out: _build(out, apt, package, version, log), log
        )
    except subprocess.CalledProcessError:
        # Stale package lists name a version the mirror no longer has.
        log("testbed: kernel download failed; refreshing apt package lists and retrying")
        apt.update()
        package, version = resolve_package(apt, log)
        the_recipe = recipe(package, version)
        return ensure_artifact(
            "kernel", the_recipe, lambda out: _build(out, apt, package, version, log), log
        )


def _build(out: Path, apt: Apt, package: str, version: str, log: Callable[[str], None]) -> None:
    work = out / "work"
    work.mkdir()
    deb = fetch_deb(apt, package, version, log)
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
    deb.unlink()  # the artifact is what is kept


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF kernel inside a bzImage: xz (Debian 12's) or
    zstd (Debian 13's).

    QEMU boots such an ELF directly through its PVH entry point. That skips
    the bzImage's own decompressor, which takes 2-3 s under emulation.
    """
    at = bzimage.find(XZ_MAGIC)
    if at >= 0:
        try:
            elf = lzma.LZMADecompressor().decompress(bzimage[at:])
        except lzma.LZMAError:
            return None
        return elf if whole_elf(elf) else None
    at = bzimage.find(ZSTD_MAGIC)
    if at < 0:
        return None
    hostdeps.ensure({"zstd": "zstd"})
    # zstd reports the bzImage's bytes after the frame as a bad second frame:
    # its status says nothing, so the ELF's own headers tell whether it is whole.
    elf = subprocess.run(
        [hostdeps.tool("zstd"), "-dc"], input=bzimage[at:], capture_output=True, check=False
    ).stdout
    return elf if whole_elf(elf) else None


def whole_elf(data: bytes) -> bool:
    """A 64-bit little-endian ELF whose segments and section headers all lie in data."""
    if not data.startswith(b"\x7fELF\x02\x01") or len(data) < 64:
        return False
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    if shoff + shentsize * shnum > len(data) or phoff + phentsize * phnum > len(data):
        return False
    for index in range(phnum):
        offset, filesz = struct.unpack_from("<Q8x8xQ", data, phoff + index * phentsize + 8)
        if offset + filesz > len(data):
            return False
    return True


def boot_image(kernel: Path) -> Path:
    """The file to hand QEMU's -kernel: the ELF if extracted, else the bzImage."""
    vmlinux = kernel / "vmlinux"
    return vmlinux if vmlinux.is_file() else kernel / "vmlinuz"


def _kernel_version(root: Path) -> str:
    candidates = sorted(p.name[len("vmlinuz-") :] for p in (root / "boot").glob("vmlinuz-*"))
    if len(candidates) != 1:
        raise TestbedError(f"expected one vmlinuz in the kernel package, found {candidates}")
    return candidates[0]
