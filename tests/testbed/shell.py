"""``shell``: an interactive root shell in a fresh guest, on the terminal."""

from __future__ import annotations

import shutil
import subprocess
import sys

from . import hostdeps
from .build import ensure_built
from .job import command_env
from .launch import prepared_launch
from .paths import repo_root
from .qemu import qemu_argv
from .stream import new_token


def run_shell(guest: str, memory_mib: int, env: dict[str, str] | None = None) -> int:
    artifacts = ensure_built(guest)
    hostdeps.ensure_run_tools()
    size = shutil.get_terminal_size()
    full_env = command_env(repo_root(), guest, env)
    full_env.setdefault("TERM", "xterm-256color")
    with prepared_launch(
        guest,
        artifacts,
        ["/bin/bash", "-l"],
        full_env,
        new_token(),
        memory_mib,
        interactive=True,
        terminal=(size.lines, size.columns),
    ) as launch:
        print(f"testbed: booting guest {guest} (quit QEMU with Ctrl-a x)", file=sys.stderr)
        # The serial console is this terminal; QEMU puts it in raw mode.
        argv = qemu_argv(hostdeps.tool("qemu-system-x86_64"), launch.config)
        return subprocess.run(argv, check=False).returncode
