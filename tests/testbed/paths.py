"""Where things are: the repository, the cache, per-run scratch space.

Everything is computed at run time so that no absolute path of any machine
ends up in the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SLOTMGR_TESTBED_CACHE"

# Data files that go into the initramfs (init script, systemd units, ...).
GUEST_FILES = Path(__file__).resolve().parent / "guest"


def repo_root() -> Path:
    """The repository root: tests/testbed/ lives two levels below it."""
    return Path(__file__).resolve().parent.parent.parent


def cache_dir() -> Path:
    """The artifact cache (kernel, initramfs, root images, console logs)."""
    override = os.environ.get(CACHE_ENV)
    path = Path(override).resolve() if override else repo_root() / ".testbed"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_dir() -> Path:
    path = cache_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path
