"""The host of a Slurm step's tasks on one node: one unit, many tasks.

    python3 -I -S taskhost.py [IDLE_SECONDS]   (stdin: a listening AF_UNIX SOCK_SEQPACKET socket)

The tasks of one step on one node are one job (issue 13): MPI ranks there
talk through POSIX shared memory and cross-memory attach, which needs one
IPC namespace, one /dev/shm and one PID namespace. So the step's unit runs
this program, as the job's user, under the job's init, with every limit and
namespace the unit has; each task's launcher (`batch-run`, root, outside the
unit) connects to it and has it start the task here, as its child. A task
started so has everything a process of the unit has (cgroup, namespaces,
Landlock scope, seccomp filters, User=), because it is one: nothing joins
from outside.

The socket is made by root in a directory only root may enter, and systemd
hands it over as this program's stdin (slotmgr.job.step); the user cannot
reach it, only root's launchers can. Messages are JSON, one per datagram:

    launcher -> host   {"argv": [...], "env": {NAME: VALUE}, "cwd": DIR}
                       with the task's stdin, stdout, stderr (SCM_RIGHTS)
                       {"signal": N}      to the task's process group
    host -> launcher   {"started": PID}   (PID as the job sees it)
                       {"exit": STATUS}   as a shell says it: 128+N if signal N

The task runs in a process group of its own, with the host's environment
(systemd's for the user) under the task's variables. When a launcher's
connection ends before its task does (the launcher was killed, or its Slurm
task was), the task's process group is killed: the task dies with its
launcher, as a bound job does. When no task runs and no launcher is
connected or waiting, the host exits, and the unit with it: the job ends
with the step's last task on this node; systemd then kills whatever of it is
left (the double-forked daemons) and its stop hook writes the step's record.

Exit status: the first task's nonzero status, else 0; 0 also when no
launcher came within IDLE_START_S (IDLE_SECONDS, for tests). Standard library only, run by path: a
unit started before an upgrade still finds this file after it.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import selectors
import signal
import socket
import sys

IDLE_START_S = 120.0  # no launcher within this: the step never came
MAX_MESSAGE = 1 << 20
EXEC_FAILED = 127


def _status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _send(conn: socket.socket, message: dict[str, int]) -> None:
    # A launcher gone: its task is killed when its end is seen.
    with contextlib.suppress(OSError):
        conn.send(json.dumps(message).encode())


def _receive(conn: socket.socket) -> tuple[dict[str, object] | None, list[int]]:
    """One message and the descriptors that came with it; (None, []) at the end."""
    fds = array.array("i")
    try:
        data, ancdata, _flags, _addr = conn.recvmsg(
            MAX_MESSAGE, socket.CMSG_SPACE(3 * fds.itemsize)
        )
    except OSError:
        return None, []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        message = {}
    return message, list(fds)


def _start(request: dict[str, object], fds: list[int]) -> int:
    """Fork the task of `request` with `fds` as its stdio; its PID."""
    argv = request.get("argv")
    env = request.get("env", {})
    cwd = request.get("cwd", "/")
    if (
        len(fds) != 3
        or not isinstance(argv, list)
        or not argv
        or not all(isinstance(a, str) for a in argv)
        or not isinstance(env, dict)
        or not isinstance(cwd, str)
    ):
        raise ValueError("a task request needs argv, env, cwd and three descriptors")
    environ = dict(os.environ)
    environ.update({str(k): str(v) for k, v in env.items()})
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in fds:
                if fd > 2:
                    os.close(fd)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            os.chdir(cwd)
            os.execvpe(argv[0], argv, environ)
        except BaseException as exc:  # the child must never return
            try:
                os.write(2, f"slotmgr: task {argv[0]!r}: {exc}\n".encode(errors="replace"))
            finally:
                os._exit(EXEC_FAILED)
    # In the parent too: a signal sent right after "started" must find the group.
    with contextlib.suppress(OSError):  # EACCES: the child has exec'd, having done it
        os.setpgid(pid, pid)
    return pid


def main(argv: list[str]) -> int:
    # IDLE_SECONDS: for tests only; the unit gives none.
    idle_start = float(argv[1]) if len(argv) > 1 else IDLE_START_S
    listener = socket.socket(fileno=os.dup(0))
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)  # fd 0 again, for nothing to inherit by accident
    listener.setblocking(False)
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # systemd's stop: end every task first; the unit's own stop does the rest.
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _f: stopping.append(signum))

    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_read, selectors.EVENT_READ, "wake")
    tasks: dict[int, socket.socket] = {}  # task PID -> its launcher's connection
    waiting: dict[socket.socket, int | None] = {}  # connection -> its task, once started
    status = 0
    served = False

    def drop(conn: socket.socket) -> None:
        selector.unregister(conn)
        pid = waiting.pop(conn, None)
        conn.close()
        if pid is not None and pid in tasks:
            with contextlib.suppress(ProcessLookupError):  # reaped later
                os.killpg(pid, signal.SIGKILL)

    def reap() -> None:
        nonlocal status
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = tasks.pop(pid, None)
            code = _status(wait_status)
            if status == 0 and code != 0:
                status = code
            if conn is not None and conn in waiting:
                _send(conn, {"exit": code})
                selector.unregister(conn)
                del waiting[conn]
                conn.close()

    while True:
        idle = not tasks and not waiting
        if idle and served:
            try:  # a launcher already waiting to be accepted keeps the step alive
                conn, _ = listener.accept()
            except BlockingIOError:
                return status
            conn.setblocking(True)
            selector.register(conn, selectors.EVENT_READ, "conn")
            waiting[conn] = None
            continue
        timeout = idle_start if idle else None
        events = selector.select(timeout)
        if not events and idle:
            return status  # no launcher ever came
        for key, _mask in events:
            if key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
                reap()
                if stopping:
                    for pid in list(tasks):
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(pid, signal.SIGTERM)
                    stopping.clear()
            elif key.data == "accept":
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(True)
                selector.register(conn, selectors.EVENT_READ, "conn")
                waiting[conn] = None
                served = True
            else:
                conn = key.fileobj  # type: ignore[assignment]
                assert isinstance(conn, socket.socket)
                message, fds = _receive(conn)
                if message is None:
                    drop(conn)
                    continue
                running = waiting.get(conn)
                if running is None and "argv" in message:
                    try:
                        pid = _start(message, fds)
                    except (ValueError, OSError) as exc:
                        print(f"taskhost: refused a task: {exc}", file=sys.stderr, flush=True)
                        drop(conn)
                        continue
                    finally:
                        for fd in fds:
                            os.close(fd)
                    tasks[pid] = conn
                    waiting[conn] = pid
                    served = True
                    _send(conn, {"started": pid})
                elif running is not None and isinstance(message.get("signal"), int):
                    signum = message["signal"]
                    assert isinstance(signum, int)
                    with contextlib.suppress(ValueError, OSError):
                        os.killpg(running, signum)
                else:
                    for fd in fds:
                        os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
