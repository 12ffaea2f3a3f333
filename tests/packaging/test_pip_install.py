"""`pip install` of slotmgr puts its man page where man finds it.

Builds a wheel from the files git tracks (as a fresh clone has them) with the
project's venv, installs it into a fresh venv, then asks man(1) for the page
under that venv's prefix. Needs man-db and groff (scripts/setup installs them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _run(*cmd: str | Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"
    return proc


def _tracked_copy(dest: Path) -> Path:
    files = _run(
        "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO
    ).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_pip_install_puts_the_man_page_where_man_finds_it(tmp_path: Path) -> None:
    for tool in ("man", "groff"):
        assert shutil.which(tool), f"{tool} is missing: apt-get install man-db groff-base"
    source = _tracked_copy(tmp_path / "src")
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "--disable-pip-version-check",
        "-w",
        tmp_path / "wheels",
        source,
    )
    wheel = next((tmp_path / "wheels").glob("slotmgr-*.whl"))
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--disable-pip-version-check",
        wheel,
    )

    found = _run("man", "-M", venv / "share" / "man", "-w", "slotmgr").stdout.strip()
    assert Path(found) == venv / "share" / "man" / "man1" / "slotmgr.1"
    assert Path(found).read_text() == (REPO / "packaging" / "slotmgr.1").read_text()

    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    shown = _run("man", "--warnings", "-M", venv / "share" / "man", "slotmgr", env=env)
    assert not shown.stderr, shown.stderr
    text = re.sub(".\b", "", shown.stdout)  # man's bold and underline by overstriking
    assert "slotmgr - run batch jobs as transient systemd units" in text
    assert "EXIT STATUS" in text and "slotmgr run [OPTIONS] COMMAND..." in text
    local = _run("man", "--warnings", "-l", found, env=env)
    assert not local.stderr and local.stdout == shown.stdout
