"""Content-addressed build cache: one directory per artifact and recipe.

An artifact lives in ``<cache>/<kind>-<hash>/`` where the hash covers its
whole recipe (package versions, package lists, the bytes of the guest files
...). A changed recipe therefore gets a new directory and is rebuilt, while
an unchanged one is reused as is. A directory only appears under its final
name once complete (built under a temporary name, then renamed), so an
interrupted build never leaves a half artifact that looks finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable

from .paths import cache_dir


def recipe_hash(recipe: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable recipe."""
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def hash_tree(root: Path) -> str:
    """Hash every file's relative path, mode and content (or link target)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            digest.update(f"L {rel} {path.readlink()}\n".encode())
        elif path.is_file():
            mode = path.stat().st_mode & 0o777
            digest.update(f"F {rel} {mode:o}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Serialise builds, so parallel runs don't build the same thing twice."""
    with open(cache_dir() / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def artifact_path(kind: str, recipe: Mapping[str, Any]) -> Path:
    return cache_dir() / f"{kind}-{recipe_hash(recipe)}"


def ensure_artifact(
    kind: str,
    recipe: Mapping[str, Any],
    build: Callable[[Path], None],
    log: Callable[[str], None] = print,
) -> Path:
    """Return the artifact directory for recipe, building it if missing.

    ``build(tmpdir)`` fills an empty directory; on success it is renamed to
    its final name. Callers should hold build_lock().
    """
    final = artifact_path(kind, recipe)
    if final.is_dir():
        return final
    tmp = final.with_name(f".tmp-{final.name}")
    if tmp.exists():
        shutil.rmtree(tmp)  # left over from an interrupted build
    tmp.mkdir()
    started = time.monotonic()
    log(f"testbed: building {final.name} ...")
    try:
        build(tmp)
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(final)
    log(f"testbed: built {final.name} in {time.monotonic() - started:.1f} s")
    return final


def stale_artifacts(kind: str, keep: Path) -> list[Path]:
    """Other versions of the same artifact kind, superseded by ``keep``."""
    return sorted(
        p
        for p in cache_dir().glob(f"{kind}-*")
        if p != keep and p.is_dir() and len(p.name) == len(kind) + 17
    )


def in_use(path: Path) -> bool:
    """Whether a running process (a guest's QEMU) names path on its command line."""
    needle = str(path).encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes():
                return True
        except OSError:
            continue  # the process is gone or not ours to read
    return False


def dir_size(path: Path) -> int:
    """Bytes used under path (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for item in [path, *path.rglob("*")]:
        st = item.lstat()
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total
