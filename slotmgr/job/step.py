"""The tasks of one Slurm step on one node as one job: the launcher's side.

MPI ranks on a node share memory (POSIX shared memory in /dev/shm, System V
IPC) and read each other's memory by PID (cross-memory attach), so a step's
tasks on a node must share one IPC namespace, one /dev/shm and one PID
namespace, and one cgroup whose limits they share. A unit per task would
give each its own. So `batch-run`, inside a Slurm step (its cgroup names
`job_N/step_S` with S a number), runs each task through one unit per step
and node, `slotmgr-slurm-N.S-<node>.service`:

- Under a lock of the step's (root's, in STEPS_DIR, which only root may
  enter), the first task's launcher makes a listening socket there and
  starts the unit with it as the unit's stdin; the unit runs
  slotmgr/taskhost.py as the job's user, under the job's init, with the
  job's limits and namespaces. A later task's launcher finds the unit active
  and only connects.
- Each launcher sends its task (command, environment, working directory,
  stdio) to the host, which starts it as its own child, inside the unit;
  signals the launcher gets (Slurm's scancel) go to the task; the task's
  exit status comes back and is the launcher's.
- A launcher that goes away (killed with its Slurm task) closes its
  connection, and the host kills its task. The host exits when no task runs
  and no launcher waits: the unit ends with the step's last task on the node,
  and its stop hook writes one record, batch id `N.S`.

The node part of the unit's name is a hash of the step's cgroup, which root's
slurmstepd made: two slurmd on one host (multiple-slurmd) get two units.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import select
import signal
import socket
import stat
from collections.abc import Iterator, Sequence

from slotmgr.deadline import flock_within
from slotmgr.errors import ExitCode, SlotmgrError
from slotmgr.history import launch as run_files
from slotmgr.job import runner
from slotmgr.job.asuser import acting_as
from slotmgr.job.spec import PACKAGE_DIR, JobSpec, unit_properties
from slotmgr.systemd.manager import Manager
from slotmgr.systemd.messages import SERVICE_IFACE
from slotmgr.systemd.wire import Property

# Root's only: the steps' sockets and locks. /run is a tmpfs: a reboot clears it.
STEPS_DIR = "/run/slotmgr/steps"
# Run by path (like pidshim): a unit started before an upgrade still finds it.
TASKHOST = os.path.join(PACKAGE_DIR, "taskhost.py")
LOCK_DEADLINE_S = 300.0  # another task's launcher starting the step's unit
START_DEADLINE_S = 300.0  # the unit's start, under emulation
ACTIVE = ("active", "activating", "reloading")
# What the launcher relays to its task (Slurm's scancel sends SIGTERM; srun, SIGINT...).
RELAYED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def step_job_id(batch_id: str, step_cgroup: str) -> str:
    """`slurm-N.S-<8 hex>`: the step's job id on this node, the same for
    every task of the step here, another on another node."""
    digest = hashlib.sha256(step_cgroup.encode()).hexdigest()[:8]
    return f"slurm-{batch_id}-{digest}"


def _steps_dir() -> str:
    """STEPS_DIR, made if missing: a directory of root's that nobody else
    may enter; refused if anything else is there (a link, another owner)."""
    parent = os.path.dirname(STEPS_DIR)
    for path, mode in ((parent, 0o755), (STEPS_DIR, 0o700)):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, mode)
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            raise SlotmgrError(
                f"{path} is not a directory of root's that only root may write: "
                "slotmgr will not keep a step's socket there",
                exit_code=ExitCode.CONFIG,
            )
    if os.lstat(STEPS_DIR).st_mode & 0o077:
        os.chmod(STEPS_DIR, 0o700)
    return STEPS_DIR


@contextlib.contextmanager
def _step_lock(steps: str, unit: str) -> Iterator[None]:
    """The step's lock: one launcher at a time decides whether to start the unit."""
    fd = os.open(
        os.path.join(steps, unit + ".lock"),
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        if not flock_within(fd, LOCK_DEADLINE_S):
            raise SlotmgrError(
                f"another launcher held the lock of {unit} for over {LOCK_DEADLINE_S:g} s",
                exit_code=ExitCode.UNAVAILABLE,
            )
        yield
    finally:
        os.close(fd)


def host_spec(spec: JobSpec) -> JobSpec:
    """The step's unit: the job's limits, namespaces, user and init around
    the task host instead of a command; the tasks' variables go to the host
    with each task. Not bound to any one launcher: the host binds each task
    to its own."""
    return dataclasses.replace(
        spec,
        command=(spec.python, "-I", "-S", TASKHOST),
        environment=(),
        launcher=None,
    )


def _start_host(manager: Manager, spec: JobSpec, path: str, task: Sequence[str]) -> None:
    """Listen at `path` and start the step's unit with the socket as its stdin.
    Its record's command is `task`, the command of the task that starts it
    (an MPI step's ranks run one), not the host's."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale socket of an earlier unit of this name (a requeue)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        listener.bind(path)
        listener.listen(128)
        props = unit_properties(spec, manager.features) + [
            Property("StandardInputFileDescriptor", "h", listener.fileno()),
            Property("StandardOutput", "s", "journal"),
            Property("StandardError", "s", "journal"),
        ]
        launch = dataclasses.replace(runner.launch_of(spec, manager), command=list(task))
        run_files.write_launch(spec.history_db, launch)
        try:
            job = manager.start_transient_unit(spec.unit, props)
            result = manager.wait_for_job(job, timeout=START_DEADLINE_S)
        except SlotmgrError:
            run_files.discard_launch(spec.history_db, spec.run_id)
            runner.drop_unused_scratch(spec)
            raise
        if result != "done":
            raise SlotmgrError(
                f"systemd could not start {spec.unit} ({result}; see: journalctl -u {spec.unit})",
                exit_code=ExitCode.SYSTEMD_REFUSED,
            )
    finally:
        listener.close()


def _request(conn: socket.socket, spec: JobSpec, stdio: tuple[int, int, int]) -> None:
    env = dict(item.split("=", 1) for item in spec.environment)
    message = {"argv": list(spec.command), "env": env, "cwd": spec.working_directory}
    fds = array.array("i", stdio)
    conn.sendmsg(
        [json.dumps(message).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())]
    )


def _serve(conn: socket.socket, wake_fd: int) -> int | None:
    """Relay signals to the task until its exit status comes; None if the
    host ended before it started the task (it was exiting: start again)."""
    started = False
    while True:
        ready, _, _ = select.select([conn.fileno(), wake_fd], [], [])
        if wake_fd in ready:
            with contextlib.suppress(BlockingIOError):
                for signum in os.read(wake_fd, 64):
                    if started:
                        with contextlib.suppress(OSError):
                            conn.send(json.dumps({"signal": signum}).encode())
        if conn.fileno() in ready:
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if not data:
                return None if not started else -1
            # The host is the job's user's: its words are read as data, no more.
            try:
                message = json.loads(data)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if "started" in message:
                started = True
            elif isinstance(message.get("exit"), int) and 0 <= message["exit"] <= 255:
                return int(message["exit"])


def _connect(path: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(path)
    except OSError as exc:
        conn.close()
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            raise ConnectionRefusedError(path) from None
        raise
    return conn


def _lost_task_status(manager: Manager, unit: str) -> int:
    """The task's status when its host went away under it: the unit's end."""
    with contextlib.suppress(SlotmgrError, TimeoutError):
        manager.wait_until_inactive(unit, timeout=60)
    result = None
    with contextlib.suppress(SlotmgrError):
        result = manager.unit_property(unit, SERVICE_IFACE, "Result")
    if result == "oom-kill":
        return ExitCode.JOB_OOM
    if result == "timeout":
        return ExitCode.JOB_TIMEOUT
    return 128 + signal.SIGKILL


def run_task(spec: JobSpec, *, files: runner.OutputFiles) -> int:
    """Run `spec`'s command as a task of its step's unit; its exit status."""
    who = runner.job_identity(spec)
    with acting_as(who):
        runner.check_job(spec)
    steps = _steps_dir()
    path = os.path.join(steps, spec.unit + ".sock")
    manager = Manager.connect(user=False, want_bus=False, prefer_bus=True)
    outputs = runner.OutputStreams(files, who)
    try:
        manager.watch_unit(spec.unit, jobs=True)
        stdio = outputs.open()
        with runner.signal_pipe(RELAYED) as wake_fd:
            for _attempt in range(3):
                status: int | None = None
                with _step_lock(steps, spec.unit):
                    if manager.unit_active_state(spec.unit) not in ACTIVE:
                        host = runner.with_scratch_dir(host_spec(spec), who)
                        _start_host(manager, host, path, spec.command)
                    try:
                        conn: socket.socket | None = _connect(path)
                    except ConnectionRefusedError:
                        conn = None  # its host has just ended, the unit not yet
                if conn is not None:
                    try:
                        _request(conn, spec, stdio)
                        status = _serve(conn, wake_fd)
                    finally:
                        conn.close()
                if status is None:
                    # The host was ending as we came: once it has, start the step anew.
                    with contextlib.suppress(SlotmgrError, TimeoutError):
                        manager.wait_until_inactive(spec.unit, timeout=60)
                    continue
                return _lost_task_status(manager, spec.unit) if status < 0 else status
        raise SlotmgrError(
            f"{spec.unit}: its task host ended three times before it started this task",
            exit_code=ExitCode.UNAVAILABLE,
        )
    finally:
        outputs.close()
        manager.close()
