"""slotmgr/taskhost.py, the host of a Slurm step's tasks on one node, run as
its unit runs it (stdin: a listening socket) without systemd: launchers
connect, send tasks, relay signals, go away. Its place in a real unit, under
real Slurm: tests/batch/test_batch_run.py and test_spank.py."""

from __future__ import annotations

import array
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slotmgr import taskhost
from slotmgr.job import step


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    path = str(tmp_path / "step.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(16)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", taskhost.__file__], stdin=listener.fileno()
    )
    listener.close()
    yield proc, path
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def launch(path: str, argv: list[str], *, env: dict[str, str] | None = None) -> socket.socket:
    """A launcher: connect, send the task with this process's stdin and a pipe."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect(path)
    message = {"argv": argv, "env": env or {}, "cwd": "/"}
    fds = array.array("i", [0, 1, 2])
    conn.sendmsg(
        [json.dumps(message).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())]
    )
    return conn


def reply(conn: socket.socket, timeout: float = 30) -> dict[str, int]:
    conn.settimeout(timeout)
    data = conn.recv(65536)
    assert data, "the host closed the connection"
    return dict(json.loads(data))


def test_two_tasks_share_the_host_and_each_gets_its_own_status(
    host: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    proc, path = host
    seen = tmp_path / "seen"
    first = launch(
        path, ["sh", "-c", f"echo $$ {'$'}WHO >> {seen}; sleep 0.5; exit 3"], env={"WHO": "a"}
    )
    second = launch(path, ["sh", "-c", f"echo $$ {'$'}WHO >> {seen}; exit 0"], env={"WHO": "b"})
    pids = {reply(first)["started"], reply(second)["started"]}
    assert reply(second) == {"exit": 0}
    assert reply(first) == {"exit": 3}
    # Both ran as the host's children, each with its own variables.
    lines = sorted(seen.read_text().split("\n")[:-1])
    assert sorted(line.split()[1] for line in lines) == ["a", "b"]
    assert {int(line.split()[0]) for line in lines} == pids
    # No task left, no launcher: the host ends, with the first nonzero status.
    assert proc.wait(timeout=30) == 3


def test_a_launchers_signal_reaches_its_task_only(
    host: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, path = host
    target = launch(path, ["sleep", "60"])
    other = launch(path, ["sh", "-c", "sleep 1; exit 0"])
    reply(target), reply(other)
    target.send(json.dumps({"signal": int(signal.SIGTERM)}).encode())
    assert reply(target) == {"exit": 128 + signal.SIGTERM}
    assert reply(other) == {"exit": 0}
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM


def test_a_task_dies_with_its_launcher_and_the_host_then_ends(
    host: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, path = host
    conn = launch(path, ["sh", "-c", "sleep 60 & wait"])
    task = reply(conn)["started"]
    conn.close()  # what the kernel does when a launcher is SIGKILLed
    assert proc.wait(timeout=30) == 128 + signal.SIGKILL
    deadline = time.monotonic() + 10
    while Path(f"/proc/{task}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{task}").exists()


def test_a_task_that_cannot_start_says_why_and_fails_as_the_shell_does(
    host: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, path = host
    conn = launch(path, ["/nonexistent/program"])
    reply(conn)
    assert reply(conn) == {"exit": taskhost.EXEC_FAILED}
    assert proc.wait(timeout=30) == taskhost.EXEC_FAILED


def test_a_host_nobody_comes_to_ends_at_its_idle_deadline(tmp_path: Path) -> None:
    path = str(tmp_path / "idle.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(1)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-I", "-S", taskhost.__file__, "0.5"], stdin=listener.fileno(), timeout=30
    )
    assert proc.returncode == 0 and time.monotonic() - started >= 0.5


def test_the_steps_job_id_is_one_per_step_and_node() -> None:
    n1 = "/system.slice/n1_slurmstepd.scope/job_5/step_0"
    n2 = "/system.slice/n2_slurmstepd.scope/job_5/step_0"
    assert step.step_job_id("5.0", n1) == step.step_job_id("5.0", n1)
    assert step.step_job_id("5.0", n1) != step.step_job_id("5.0", n2)
    assert step.step_job_id("5.0", n1).startswith("slurm-5.0-")
