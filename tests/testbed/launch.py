"""Per-boot scratch space: results share, job file, scratch disk, logs."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .build import BootArtifacts
from .console import new_console_log
from .job import render_job, render_mounts
from .paths import repo_root
from .qemu import QemuConfig, Share, kernel_cmdline

SCRATCH_DISK_BYTES = 1 << 30
RUN_DIR_PREFIX = "testbed-run-"  # then the owner's PID


def _remove_orphans() -> None:
    """Delete run directories whose process died without cleaning up (SIGKILL)."""
    for path in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        pid = path.name[len(RUN_DIR_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


@dataclass(frozen=True)
class Launch:
    config: QemuConfig
    exchange: Path  # the results share, as seen on the host
    console_log: Path | None


@contextlib.contextmanager
def prepared_launch(
    guest: str,
    artifacts: BootArtifacts,
    argv: Sequence[str],
    env: Mapping[str, str],
    token: str,
    memory_mib: int,
    interactive: bool = False,
    terminal: tuple[int, int] | None = None,
) -> Iterator[Launch]:
    """Create a fresh run directory, yield the QEMU setup, then delete it."""
    repo = repo_root()
    # Under /tmp rather than the cache: the output socket's path must stay
    # below the kernel's 108-byte limit for unix socket names.
    _remove_orphans()
    run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-{guest}-"))
    try:
        exchange = run_dir / "results"
        exchange.mkdir()
        rows, cols = terminal or (None, None)
        (exchange / "job").write_text(
            render_job(guest, token, repo, argv, env, rows=rows, cols=cols)
        )
        project_tag = "project"
        (exchange / "mounts").write_text(render_mounts({project_tag: repo}))
        scratch = run_dir / "scratch.img"
        with open(scratch, "wb") as disk:
            disk.truncate(SCRATCH_DISK_BYTES)  # sparse: costs no host disk until written
        console_log = None if interactive else new_console_log(guest)
        target = "testbed-shell.target" if interactive else "testbed.target"
        config = QemuConfig(
            kernel=artifacts.kernel,
            initrd=artifacts.initrd,
            cmdline=kernel_cmdline(guest, target, quiet=interactive),
            shares=(
                Share("root", artifacts.rootfs, readonly=True),
                Share("testbed", exchange, readonly=False),
                Share(project_tag, repo, readonly=True),
            ),
            memory_mib=memory_mib,
            scratch_disk=scratch,
            output_socket=None if interactive else run_dir / "out.sock",
            console_log=console_log,
        )
        yield Launch(config, exchange, console_log)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
