"""The job file: how the host tells the guest what to run.

It is a bash fragment that the guest's runner sources, written to the
results share before boot. Every value is shell-quoted here, so any argv
and any environment value arrive intact.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_env_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (as given to --env) to a dict; values may hold '='."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not _NAME.match(name):
            raise ValueError(f"not a KEY=VALUE pair with a valid name: {pair!r}")
        env[name] = value
    return env


def command_env(repo: Path, guest: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment the command starts with (the guest adds only
    SLOTMGR_TESTBED_SCRATCH_DISK)."""
    env = {
        "PATH": GUEST_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(repo),
        # Output is only useful live if Python doesn't hold it in a buffer.
        "PYTHONUNBUFFERED": "1",
        "SLOTMGR_TESTBED_GUEST": guest,
    }
    for name, value in (extra or {}).items():
        if not _NAME.match(name):
            raise ValueError(f"invalid environment variable name: {name!r}")
        env[name] = value
    return env


def render_job(
    guest: str,
    token: str,
    cwd: Path,
    argv: Sequence[str],
    env: Mapping[str, str],
    rows: int | None = None,
    cols: int | None = None,
) -> str:
    def array(words: Iterable[str]) -> str:
        return "(" + " ".join(shlex.quote(word) for word in words) + ")"

    lines = [
        "# Written by tests/testbed on the host; sourced by the guest's runner.",
        f"TESTBED_GUEST={shlex.quote(guest)}",
        f"TESTBED_TOKEN={shlex.quote(token)}",
        f"TESTBED_CWD={shlex.quote(str(cwd))}",
        f"TESTBED_ENV={array(f'{k}={v}' for k, v in env.items())}",
        f"TESTBED_ARGV={array(argv)}",
    ]
    if rows and cols:
        lines += [f"TESTBED_ROWS={int(rows)}", f"TESTBED_COLS={int(cols)}"]
    return "\n".join(lines) + "\n"


def render_mounts(shares: Mapping[str, Path]) -> str:
    """``TAG PATH`` lines for the initramfs, which mounts each share at PATH."""
    for path in shares.values():
        if "\n" in str(path):
            raise ValueError(f"cannot share a path containing a newline: {path!r}")
    return "".join(f"{tag} {path}\n" for tag, path in shares.items())
