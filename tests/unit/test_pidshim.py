"""Tests for slotmgr/pidshim.py, run for real as a subprocess (as root, like slotmgr runs it).

Three modes are exercised where they differ:
  plain    pidshim.py -- CMD                     not PID 1: a subreaper supervisor
  unshare  pidshim.py --unshare -- CMD           the systemd 252 mode: own PID namespace
  pid1     unshare --pid --fork --mount-proc pidshim.py -- CMD
           PID 1 of a namespace made by someone else: stands in for systemd >= 257's
           PrivatePIDs=yes, where signals come from the parent namespace.
The interpreter running pytest also runs the shim, so run this file with each Python.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import random
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import PIPE
from typing import Any, NamedTuple

import pytest

from slotmgr.errors import ExitCode

SHIM = str(Path(__file__).resolve().parents[2] / "slotmgr" / "pidshim.py")
PY = [sys.executable, "-I", "-S", SHIM]
MODES = {
    "plain": [*PY, "--"],
    "unshare": [*PY, "--unshare", "--"],
    "pid1": ["unshare", "--pid", "--fork", "--mount-proc", *PY, "--"],
}
NS_MODES = ["unshare", "pid1"]
TIMEOUT = 20

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pidshim tests run as root")


@pytest.fixture(autouse=True)
def _signals_as_a_login_shell_leaves_them() -> Iterator[None]:
    """The tests' children start with no signal ignored: a test run started in
    the background (`cmd &`, nohup) inherits SIGINT, SIGQUIT and SIGHUP
    ignored, which an exec keeps and the shell cannot trap."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


STARTED: list[subprocess.Popen[str]] = []


def popen(args: list[str], **kw: Any) -> subprocess.Popen[str]:
    """Popen, remembered so that whatever a failed test leaves running gets killed."""
    proc = subprocess.Popen(args, text=True, **kw)
    STARTED.append(proc)
    return proc


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a process not yet waited for and all its descendants (namespaces included)."""
    if proc.poll() is not None:
        return  # reaped: its pid may be reused, and its orphans are beyond reach
    tree, todo = [], [proc.pid]
    while todo:  # an unreaped process's pid, and its children's, cannot be reused
        pid = todo.pop()
        tree.append(pid)
        with contextlib.suppress(OSError):
            todo += map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    for pid in tree:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(autouse=True)
def _kill_leftovers() -> Iterator[None]:
    yield
    while STARTED:
        kill_tree(STARTED.pop())


def shim(mode: str, *cmd: str, input: str | None = None, **kw: Any) -> Result:
    """Run CMD under the shim in `mode`, capturing its output."""
    stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
    proc = popen([*MODES[mode], *cmd], stdin=stdin, stdout=PIPE, stderr=PIPE, **kw)
    stdout, stderr = proc.communicate(input, timeout=TIMEOUT)
    return Result(proc.returncode, stdout, stderr)


def start(mode: str, script: str, python: bool = False, **kw: Any) -> subprocess.Popen[str]:
    """Start `sh -c script` (or Python) under the shim; it must print "ready" when ready."""
    kw.setdefault("stdout", PIPE)
    job = [sys.executable, "-I", "-S", "-c"] if python else ["sh", "-c"]
    proc = popen([*MODES[mode], *job, script], **kw)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def shim_pid(mode: str, proc: subprocess.Popen[str]) -> int:
    """The host pid of the shim process to signal (in pid1 mode, util-linux unshare's child)."""
    if mode != "pid1":
        return proc.pid
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1
    return int(children[0])


def sleepers(marker: str) -> list[int]:
    """Pids on the host running `sleep MARKER` (not the shells whose scripts mention it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique `sleep` argument, to find a job's daemon in the host's process table."""
    mark = f"86399.{random.randrange(10**8, 10**9)}"
    yield mark
    for pid in sleepers(mark):  # clean up after a failed test
        os.kill(pid, signal.SIGKILL)


def test_unshare_tool_works_here() -> None:
    # The premise of the namespace tests: if this fails, the host lacks PID namespaces.
    subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], check=True)


# --- exit status ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_code_passthrough(mode: str, code: int) -> None:
    result = shim(mode, "sh", "-c", f"exit {code}")
    assert (result.returncode, result.stderr) == (code, "")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_by_signal_is_128_plus_n(mode: str, sig: signal.Signals) -> None:
    result = shim(mode, "sh", "-c", f"kill -{sig.name[3:]} $$")
    assert result.returncode == 128 + sig


@pytest.mark.parametrize("mode", MODES)
def test_command_not_found_is_127(mode: str) -> None:
    result = shim(mode, "no-such-command-pidshim")
    assert result.returncode == 127
    assert result.stderr == (
        "pidshim: cannot execute 'no-such-command-pidshim': No such file or directory\n"
    )


@pytest.mark.parametrize("mode", MODES)
def test_not_executable_is_126(mode: str, tmp_path: Path) -> None:
    plain_file = tmp_path / "data"
    plain_file.write_text("echo hi\n")
    plain_file.chmod(0o644)  # EACCES, even for root
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01\x02 not a script\n")
    garbage.chmod(0o755)  # ENOEXEC
    for path, reason in [(plain_file, "Permission denied"), (garbage, "Exec format error")]:
        result = shim(mode, str(path))
        assert result.returncode == 126
        assert result.stderr == f"pidshim: cannot execute '{path}': {reason}\n"


def test_usage_errors() -> None:
    for args in [[], ["--unshare"], ["--"], ["--bogus", "true"]]:
        result = subprocess.run([*PY, *args], capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("pidshim: ")
    result = subprocess.run([*PY, "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert (result.returncode, result.stdout.startswith("usage: ")) == (0, True)
    # Options end at the first word that is not one: CMD keeps its own options.
    assert subprocess.run([*PY, "sh", "-c", "exit 4"], timeout=TIMEOUT).returncode == 4


def test_no_pid_namespace_is_71() -> None:
    # Without CAP_SYS_ADMIN (e.g. a unit with User=), unshare(CLONE_NEWPID) fails with EPERM.
    drop = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]
    result = subprocess.run(
        [*drop, *MODES["unshare"], "true"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == ExitCode.INIT_FAILED  # 71, not 125 (the OOM kill's)
    assert result.stderr == "pidshim: cannot create a PID namespace: Operation not permitted\n"


# --- what the job sees -------------------------------------------------------------------


def test_unshare_job_sees_only_its_namespace() -> None:
    script = 'echo $$; tr "\\0" " " </proc/1/cmdline; echo; ls /proc'
    result = shim("unshare", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    job_pid, init_cmdline, *proc = result.stdout.splitlines()
    assert job_pid == "2"  # the shim is PID 1, the job its first child
    assert SHIM in init_cmdline.split()
    pids = {int(name) for name in proc if name.isdigit()}
    host_pids = [name for name in os.listdir("/proc") if name.isdigit()]
    assert len(host_pids) > 10, "too few host processes for this test to mean anything"
    assert pids <= {1, 2, 3, 4}, pids  # shim, sh, tr (gone) and ls


def test_unshare_proc_mount_does_not_propagate() -> None:
    # Under a shared mount tree (as on systemd hosts), the fresh /proc would propagate to the
    # outside namespace unless the shim made its mount tree private first. The job runs
    # until its stdin, passed down from here, is closed.
    script = f'{" ".join(MODES["unshare"])} sh -c "echo ready; read x"'
    outer = popen(
        ["unshare", "--mount", "--propagation", "shared", "sh", "-c", script],
        stdin=PIPE,
        stdout=PIPE,
    )
    try:
        assert outer.stdout is not None
        assert outer.stdout.readline().strip() == "ready"
        mountinfo = Path(f"/proc/{outer.pid}/mountinfo").read_text().splitlines()
        assert any("shared:" in line.split(" - ")[0] for line in mountinfo)
        proc_mounts = [line for line in mountinfo if line.split()[4] == "/proc"]
        assert len(proc_mounts) == 1, proc_mounts
    finally:
        outer.communicate(timeout=TIMEOUT)


@pytest.mark.parametrize("mode", MODES)
def test_stdin_stdout_pass_through(mode: str) -> None:
    result = shim(mode, "cat", input="hello\n")
    assert (result.returncode, result.stdout) == (0, "hello\n")


def test_job_gets_the_original_environment() -> None:
    # Python's C-locale coercion adds LC_CTYPE=C.UTF-8 to the shim's environ; not the job's.
    env = {"PATH": os.environ["PATH"], "LANG": "C", "PIDSHIM_TEST": "x y"}
    result = shim("plain", "env", env=env)
    assert sorted(result.stdout.splitlines()) == [
        "LANG=C",
        f"PATH={env['PATH']}",
        "PIDSHIM_TEST=x y",
    ]


@pytest.mark.parametrize("mode", MODES)
def test_job_gets_the_original_signal_state(mode: str) -> None:
    # Mask and ignored signals as if started directly: nothing blocked, SIGPIPE back to
    # default (Python ignores it), a signal ignored by the caller still ignored.
    def ignore_usr2() -> None:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    cmd = ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]
    direct = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=ignore_usr2)
    via_shim = shim(mode, *cmd, preexec_fn=ignore_usr2)
    assert via_shim.stdout == direct.stdout
    assert f"SigIgn:\t{1 << (signal.SIGUSR2 - 1):016x}" in direct.stdout


# --- reaping and the end of the job ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_orphans_are_reaped(mode: str) -> None:
    # 50 double-forked children re-parent to the shim (init or subreaper: the job's parent)
    # and, while the job still runs, exit; none may stay a zombie. The job looks at /proc.
    script = """if True:
        import os, time

        def orphans():  # the state of the shim's children, but the job
            states = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == os.getppid() and int(pid) != os.getpid():
                    states.append(stat[0])
            return states

        r, w = os.pipe()
        for _ in range(50):
            if os.fork() == 0:
                if os.fork() == 0:
                    os.close(w)
                    os.read(r, 1)  # until the job closes the pipe
                    os._exit(0)
                os._exit(0)
            os.wait()
        print("orphans", len(orphans()), "zombies", orphans().count("Z"))
        os.close(w)  # now they all exit
        deadline = time.monotonic() + 5
        while orphans() and time.monotonic() < deadline:
            time.sleep(0.01)
        print("left", len(orphans()), "zombies", orphans().count("Z"))
    """
    result = shim(mode, sys.executable, "-I", "-S", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["orphans 50 zombies 0", "left 0 zombies 0"]


@pytest.mark.parametrize("mode", NS_MODES)
def test_daemon_is_killed_when_job_exits(mode: str, marker: str) -> None:
    script = f"""
        (setsid sleep {marker} &)
        for i in $(seq 100); do
            ps -e -o args= | grep -q '^sleep {marker}' && break; sleep 0.05
        done
        echo running=$(ps -e -o args= | grep -c '^sleep {marker}')
        exit 7
    """
    started = time.monotonic()
    result = shim(mode, "sh", "-c", script)
    elapsed = time.monotonic() - started
    assert (result.returncode, result.stdout.split()) == (7, ["running=1"])
    assert elapsed < 5
    assert sleepers(marker) == []


def test_namespace_dies_with_the_outer_process(marker: str) -> None:
    # --unshare: if the outer process is SIGKILLed alone, PR_SET_PDEATHSIG takes the inner
    # init, and with it the whole namespace, down too.
    proc = start("unshare", f"(setsid sleep {marker} &); echo ready; exec sleep {marker}")
    assert wait_until(lambda: len(sleepers(marker)) == 2)
    proc.kill()
    proc.wait()
    assert wait_until(lambda: sleepers(marker) == [])


# --- signals -----------------------------------------------------------------------------

TRAPS = """
    trap 'exit 10' TERM; trap 'exit 11' USR1; trap 'exit 12' HUP; trap 'exit 13' INT
    echo ready
    while :; do sleep 0.05; done
"""
TRAPPED = {signal.SIGTERM: 10, signal.SIGUSR1: 11, signal.SIGHUP: 12, signal.SIGINT: 13}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig", list(TRAPPED), ids=lambda s: s.name)
def test_signal_is_forwarded(mode: str, sig: signal.Signals) -> None:
    proc = start(mode, TRAPS)
    os.kill(shim_pid(mode, proc), sig)
    assert proc.wait(timeout=TIMEOUT) == TRAPPED[sig]


@pytest.mark.parametrize("mode", MODES)
def test_untrapped_sigterm_gives_143(mode: str) -> None:
    proc = start(mode, "echo ready; exec sleep 1000")
    os.kill(shim_pid(mode, proc), signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT) == 143


@pytest.mark.parametrize("mode", ["plain", "unshare"])
def test_terminal_interrupt_reaches_the_job_once(mode: str) -> None:
    # With a controlling terminal, the job gets the foreground: ^C reaches it directly and
    # only once (not a second time through the shim's forwarding).
    master, slave = pty.openpty()

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    # The job counts SIGINTs in Python, which, unlike sh, does not merge two deliveries
    # that arrive while it sleeps.
    script = (
        "import signal, sys, time\n"
        "n = []\n"
        "signal.signal(signal.SIGINT, lambda *_: n.append(1))\n"
        "print('ready', flush=True)\n"
        "while not n: time.sleep(0.01)\n"
        "time.sleep(0.5)\n"
        "sys.exit(20 + len(n))\n"
    )
    try:
        proc = start(mode, script, stdin=slave, preexec_fn=controlling_tty, python=True)
        time.sleep(0.1)
        os.write(master, b"\x03")
        assert proc.wait(timeout=TIMEOUT) == 21
    finally:
        os.close(master)
        os.close(slave)


# --- start-up cost -------------------------------------------------------------------------


def test_startup_time(capsys: pytest.CaptureFixture[str]) -> None:
    def median_ms(cmd: list[str], runs: int = 15) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(cmd, check=True)
            times.append((time.perf_counter() - started) * 1000)
        return sorted(times)[runs // 2]

    unshare = shutil.which("unshare")
    assert unshare is not None
    results = {
        "python3 -I -S pidshim.py --unshare -- true": median_ms([*MODES["unshare"], "true"]),
        "python3 -I -S pidshim.py -- true": median_ms([*MODES["plain"], "true"]),
        "python3 -I -S -c pass": median_ms([sys.executable, "-I", "-S", "-c", "pass"]),
        "unshare --pid --fork --mount-proc true": median_ms(
            [unshare, "--pid", "--fork", "--mount-proc", "true"]
        ),
    }
    with capsys.disabled():
        print(f"\nstart-up, median of 15 ({sys.executable}, Python {sys.version.split()[0]}):")
        for name, ms in results.items():
            print(f"  {ms:6.1f} ms  {name}")


# --- started with signals blocked (how slotmgr starts it in a service) -------------------

BLOCKED = ["env", "--block-signal"]


@pytest.mark.parametrize("mode", ["plain", "unshare"])
def test_started_blocked_a_signal_before_python_is_up_reaches_the_job(mode: str) -> None:
    # SIGTERM at once, while the interpreter is still starting: without blocking, the shim
    # would die of it here (as PID 1 of a namespace, the kernel would drop it and the job
    # would run on); blocked, it stays pending and is forwarded to the job once it runs.
    args = [*BLOCKED, *MODES[mode][:-1], "--started-blocked", "--", "sleep", "30"]
    proc = popen(args, stdout=PIPE, stderr=PIPE)

    def python_starting() -> bool:  # env has blocked the signals and exec'd the interpreter
        return Path(f"/proc/{proc.pid}/status").read_text().startswith("Name:\tpython")

    assert wait_until(python_starting, timeout=TIMEOUT)
    # 2 ms into the interpreter's start, long before pidshim's handlers (measured: without
    # the blocking, 20 of 20 shims die of the signal here; with it, 20 of 20 give 143).
    time.sleep(0.002)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT) == 143  # the job's own death by SIGTERM, passed on


@pytest.mark.parametrize("mode", ["plain", "unshare"])
def test_started_blocked_the_job_gets_an_empty_mask(mode: str) -> None:
    cmd = ["grep", "-E", "^SigBlk", "/proc/self/status"]
    out = subprocess.run(
        [*BLOCKED, *MODES[mode][:-1], "--started-blocked", "--", *cmd],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert out.stdout == "SigBlk:\t0000000000000000\n", out.stderr
    # Without the option the job would keep env's mask: the test can tell.
    kept = subprocess.run(
        [*BLOCKED, *MODES[mode], *cmd], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert kept.stdout != out.stdout


def test_every_exit_code_means_one_thing() -> None:
    """An IntEnum folds equal values into aliases: each code must be its own."""
    assert len({int(code) for code in ExitCode}) == len(ExitCode.__members__)
    from slotmgr import pidshim

    # pidshim runs as a file and imports nothing of slotmgr's: its code is written twice.
    assert pidshim.EX_SHIM == ExitCode.INIT_FAILED
    assert int(ExitCode.JOB_OOM) != pidshim.EX_SHIM
