"""Make sure the host has the Debian tools the test bed drives.

CI starts from a fresh machine, so every tool is installed on demand with
apt-get (``--no-install-recommends`` keeps it lean) instead of assuming a
hand-prepared host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from typing import Callable

from .errors import TestbedError

# Executables searched here too: root's PATH may lack the sbin directories.
_EXTRA_PATH = ("/usr/sbin", "/sbin")

# What the boot step needs, and what the build step needs on top.
RUN_TOOLS = {"qemu-system-x86_64": "qemu-system-x86"}
BUILD_TOOLS = {
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
    "depmod": "kmod",
    "modprobe": "kmod",
    "mmdebstrap": "mmdebstrap",
    "gpg": "gpg",  # mmdebstrap only recommends it, but inspects keyrings with it
    "unshare": "util-linux",
}
# Checked by package: /bin/busybox from the non-static "busybox" package
# would not run inside the initramfs, which has no shared libraries.
BUILD_PACKAGES = ("busybox-static", "debian-archive-keyring")


def which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    return shutil.which(name, path=path)


def tool(name: str) -> str:
    """The absolute path of an executable that ensure_* has provided."""
    found = which(name)
    if found is None:
        raise TestbedError(f"host tool {name} is missing")
    return found


def package_installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and result.stdout.strip().endswith(" installed")


def missing_packages(tools: dict[str, str], packages: Iterable[str] = ()) -> list[str]:
    missing = {pkg for exe, pkg in tools.items() if which(exe) is None}
    missing.update(pkg for pkg in packages if not package_installed(pkg))
    return sorted(missing)


def apt_install(packages: list[str], log: Callable[[str], None] = print) -> None:
    log(f"testbed: installing host packages: {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # The package lists of a fresh machine may be absent or stale.
    subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def ensure(
    tools: dict[str, str], packages: Iterable[str] = (), log: Callable[[str], None] = print
) -> None:
    missing = missing_packages(tools, packages)
    if not missing:
        return
    if os.geteuid() != 0:
        raise TestbedError(f"missing host packages (need root to install): {' '.join(missing)}")
    try:
        apt_install(missing, log)
    except subprocess.CalledProcessError as exc:
        raise TestbedError(f"could not install host packages {missing}: {exc}") from exc
    still = missing_packages(tools, packages)
    if still:
        raise TestbedError(f"host packages still missing after install: {' '.join(still)}")


def ensure_run_tools(log: Callable[[str], None] = print) -> None:
    ensure(RUN_TOOLS, (), log)


def ensure_build_tools(log: Callable[[str], None] = print) -> None:
    ensure({**RUN_TOOLS, **BUILD_TOOLS}, BUILD_PACKAGES, log)
