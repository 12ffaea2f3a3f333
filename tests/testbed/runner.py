"""Boot a guest, stream the command's output, return its exit status."""

from __future__ import annotations

import ctypes
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import BinaryIO, Callable

from . import hostdeps
from .build import ensure_built
from .console import console_tail
from .errors import TestbedError
from .guests import get_guest
from .job import command_env
from .launch import Launch, prepared_launch
from .paths import repo_root
from .qemu import qemu_argv
from .stream import EndMarkerScanner, new_token

DEFAULT_TIMEOUT = 1500.0
# From QEMU's start to the command's first line. A TCG boot takes 10-15 s;
# this only catches a guest that hangs while booting, well before the
# (much longer) overall timeout would.
DEFAULT_BOOT_TIMEOUT = 300.0
DEFAULT_MEMORY_MIB = 2048
_PR_SET_PDEATHSIG = 1


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_in_guest(
    guest: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    memory_mib: int = DEFAULT_MEMORY_MIB,
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
    output: BinaryIO | None = None,
    log: Callable[[str], None] = _stderr,
) -> int:
    """Run argv as root in a fresh guest; return its exit status.

    Output (stdout and stderr merged) is copied to ``output`` (default: this
    process's stdout) as it arrives. Raises TestbedError when the test bed
    fails: no boot, timeout, or no exit status came back. Never skips.
    """
    get_guest(guest)  # validate the name before any building
    if not argv:
        raise ValueError("no command given")
    artifacts = ensure_built(guest, log)
    hostdeps.ensure_run_tools(log)
    token = new_token()
    full_env = command_env(repo_root(), guest, env)
    with prepared_launch(guest, artifacts, argv, full_env, token, memory_mib) as launch:
        session = _Session(guest, launch, token, output or sys.stdout.buffer, timeout, boot_timeout)
        status = session.run()
    log(
        f"testbed: guest {guest}: exit status {status}; command started "
        f"{session.started_after:.1f} s after launch, guest stopped after "
        f"{session.elapsed:.1f} s"
    )
    return status


class _Session:
    """One QEMU process, its output socket and its deadlines."""

    def __init__(
        self,
        guest: str,
        launch: Launch,
        token: str,
        output: BinaryIO,
        timeout: float,
        boot_timeout: float,
    ) -> None:
        self.guest = guest
        self.launch = launch
        self.output = output
        self.scanner = EndMarkerScanner(token)
        self.timeout = timeout
        self.boot_timeout = min(boot_timeout, timeout)
        self.started_after = 0.0  # seconds from launch to the first output
        self.elapsed = 0.0
        self._t0 = 0.0

    def run(self) -> int:
        sock_path = self.launch.config.output_socket
        assert sock_path is not None and self.launch.console_log is not None
        # Listen before QEMU starts: it connects as a client while starting
        # up, so not one byte of the guest's output can be missed.
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        listener.listen(1)
        argv = qemu_argv(hostdeps.tool("qemu-system-x86_64"), self.launch.config)
        with open(self.launch.console_log, "ab") as console:
            console.write(("testbed: " + " ".join(argv) + "\n").encode())
            console.flush()
            self._t0 = time.monotonic()
            # QEMU's own complaints land in the console log too.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                preexec_fn=_die_with_parent,
            )
        try:
            self._pump(proc, listener)
            return self._status(proc)
        except TestbedError as exc:
            raise TestbedError(self._failure(str(exc))) from None
        finally:
            listener.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            self.elapsed = time.monotonic() - self._t0

    def _deadline_check(self, started: bool) -> None:
        now = time.monotonic() - self._t0
        if not started and now > self.boot_timeout:
            raise TestbedError(f"the command did not start within {self.boot_timeout:.0f} s")
        if now > self.timeout:
            raise TestbedError(f"timed out after {self.timeout:.0f} s")

    def _pump(self, proc: subprocess.Popen[bytes], listener: socket.socket) -> None:
        conn: socket.socket | None = None
        started = False
        while True:
            self._deadline_check(started)
            if conn is None:
                readable, _, _ = select.select([listener], [], [], 0.2)
                if readable:
                    conn, _ = listener.accept()
                elif proc.poll() is not None:
                    return  # QEMU died before connecting; _status explains
                continue
            readable, _, _ = select.select([conn], [], [], 0.5)
            if not readable:
                if proc.poll() is not None:
                    # QEMU has gone; the socket may still hold a last chunk.
                    conn.setblocking(False)
                    self._drain(conn)
                    return
                continue
            data = conn.recv(65536)
            if not data:  # QEMU closed the port: it is exiting
                self._write(self.scanner.flush())
                return
            if not started:
                started = True
                self.started_after = time.monotonic() - self._t0
            self._write(self.scanner.feed(data))
            if self.scanner.done:
                # Tell the runner it may power off: everything has arrived.
                conn.sendall(b"ack\n")
                self._wait_exit(proc)
                return

    def _drain(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                data = b""
            if not data:
                self._write(self.scanner.flush())
                return
            self._write(self.scanner.feed(data))

    def _wait_exit(self, proc: subprocess.Popen[bytes]) -> None:
        """After the end marker the guest powers off within seconds."""
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise TestbedError("the guest did not power off after the command ended") from None

    def _write(self, data: bytes) -> None:
        if data:
            self.output.write(data)
            self.output.flush()

    def _status(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is None:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise TestbedError("the guest did not power off") from None
        status_file = self.launch.exchange / "status"
        if status_file.is_file():
            text = status_file.read_text().strip()
            if text.isdigit():
                if self.scanner.status is None:
                    # Status without the end marker: output may be cut short.
                    _stderr(
                        f"testbed: guest {self.guest}: warning: the end of the "
                        "output stream was not seen; output may be incomplete"
                    )
                return int(text)
            raise TestbedError(f"unreadable exit status {text!r}")
        bootfail = self.launch.exchange / "bootfail"
        if bootfail.is_file():
            raise TestbedError("boot failed: " + bootfail.read_text().strip())
        if proc.returncode:
            raise TestbedError(
                f"QEMU exited with status {proc.returncode} and no exit status came back"
            )
        log = self.launch.console_log
        panic = [line for line in console_tail(log) if "Kernel panic" in line] if log else []
        if panic:
            raise TestbedError(panic[0].split("] ", 1)[-1])
        raise TestbedError("the guest powered off without an exit status")

    def _failure(self, why: str) -> str:
        log = self.launch.console_log
        tail = console_tail(log) if log else []
        lines = [f"testbed: guest {self.guest} failed: {why} (console log: {log})"]
        lines += [f"testbed: console: {line}" for line in tail]
        return "\n".join(lines)


def _die_with_parent() -> None:
    """In QEMU's child process: get SIGKILL when the host process dies.

    The finally clause kills QEMU on any exception, but not when this process
    is itself killed (CI's own timeout); a leftover QEMU would burn a core.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
