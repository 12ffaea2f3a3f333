"""pidshim: a tiny init (PID 1) for slotmgr batch jobs, in the spirit of catatonit and tini.

usage: pidshim.py [--unshare [--private-tmp] [--private-ipc] [--private-shm]]
                  [--landlock-scope] [--started-blocked] [--] CMD [ARGS...]

Run it as a file, ``python3 -I -S pidshim.py ...``: standard library only, nothing from
slotmgr, few imports, for a fast start. Options end at ``--`` or at the first non-option.

Modes
  default    Fork CMD and act as its init. Meant for systemd >= 257 with PrivatePIDs=yes:
             pidshim is PID 1 of the job's PID namespace, whose /proc systemd made fresh.
             Not PID 1 (run by hand), it becomes a child subreaper, so the job's orphans
             still come to it and are reaped; what still runs when CMD exits is left alone
             (re-parented further up; in a unit, systemd's cgroup clean-up kills it).
  --unshare  For systemd < 257: unshare(CLONE_NEWPID|CLONE_NEWNS), then fork. The child is
             PID 1 of the new namespace: it makes the mount tree private, mounts a fresh proc
             on /proc (so ps shows only the job) and acts as init as above; it dies with the
             parent (PR_SET_PDEATHSIG). The parent stays the unit's main process, forwards
             signals to that init and exits with its status. Needs CAP_SYS_ADMIN: a job
             run as a user gets it as an ambient capability, which both processes drop
             (every capability set emptied) before the job is forked.
  --private-tmp  With --unshare, for a scope (which has no PrivateTmp=): mount fresh
             tmpfs on /tmp and /var/tmp in the job's mount namespace.
  --private-ipc  With --unshare, for a scope (no PrivateIPC=): a new IPC namespace too
             (SysV IPC and POSIX message queues of the job's own).
  --private-shm  With --unshare, for a scope: a fresh tmpfs on /dev/shm (mode 1777).
  --landlock-scope  Before forking CMD, put the init (and so the job) in a Landlock domain
             scoped for abstract unix sockets and signals (Landlock ABI 6, Linux 6.12): the
             job can neither connect to an abstract socket nor signal a process outside
             its own job; what is outside may still reach in. Without CAP_SYS_ADMIN the
             kernel requires no_new_privs first: setuid and file-capability programs
             (sudo, su, ping on some systems) then run without their privileges. A kernel
             without ABI 6 makes it fail (71): the launcher asks for it only where it works.
  --started-blocked  pidshim was started with every signal blocked (`env --block-signal`
             in front of it), so that a signal sent while the interpreter starts stays
             pending instead of being lost (see Signals); the job gets an empty mask.

Exit status, encoded as a shell does
  N      CMD exited with N            126  CMD not executable (EACCES, ENOEXEC, ...)
  128+N  CMD was killed by signal N   127  CMD not found (ENOENT), or it vanished (ECHILD)
  71     pidshim failed: no PID namespace (unshare: EPERM, EINVAL...), /proc mount, fork
  2      usage error
All but N, 128+N and ECHILD's 127 come with one line on stderr, such as
"pidshim: cannot execute 'X': reason" or "pidshim: cannot create a PID namespace: reason".

Signals
  Before forking anything, pidshim blocks the signals it forwards, and SIGCHLD, and collects
  them with sigwaitinfo(): none is lost between fork and wait, no handler races waitpid().
  It also gives them no-op handlers: the kernel drops a signal sent to a PID namespace init
  whose disposition is SIG_DFL (sig_task_ignored) unless it is blocked at that very moment.
  Forwarded, to CMD's process only (not its group): every catchable signal (TERM INT HUP
  QUIT USR1 USR2 WINCH CONT ALRM, real-time ones...) except CHLD, the faults the kernel
  raises for pidshim's own bugs (SEGV BUS ILL FPE ABRT TRAP SYS), PIPE and XFSZ (left ignored
  as Python sets them), and TSTP TTIN TTOU (ignored: pidshim may be in a background group).
  Signals arriving before Python is up kill pidshim (not init) or are dropped (init):
  a PID-namespace init's default disposition makes the kernel discard them, so a stop
  in the first moments of a job would be lost. Hence --started-blocked: a blocked signal
  is never discarded.
  The child restores, before exec, the signal mask and dispositions pidshim started with
  (SIGPIPE and SIGXFSZ reset to SIG_DFL, as subprocess does).

Reaping and the end
  On each SIGCHLD every ready zombie is reaped, orphans included. When CMD exits, pidshim
  exits with its status at once. As PID 1 it first kills the rest of the namespace
  (kill(-1, SIGKILL)) and reaps it: the kernel kills them anyway when PID 1 exits, but so
  nothing of the job outlives that status, not even briefly as an orphan.

Terminal, stdin, environment
  CMD inherits the file descriptors (no proxying: pidshim never reads stdin) and working
  directory. It runs in a process group of its own and, if pidshim's group had the
  foreground of the terminal on stdin, takes it over: a terminal's ^C reaches CMD once, not
  again through forwarding. Job control (^Z) is not supported. CMD gets the environment
  pidshim started with, read from /proc/self/environ: Python's C-locale coercion (PEP 538)
  adds LC_CTYPE=C.UTF-8 to its own, even with -I.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:
    # The C module behind `signal`, whose enums (the enum module and what it
    # imports) cost a third of pidshim's start-up, billed to every job. Its
    # signals and handlers are plain ints: the same values, compared the same.
    import _signal as signal
if TYPE_CHECKING:  # typing costs milliseconds of start-up: only for mypy
    from collections.abc import Callable, Mapping
    from typing import NoReturn, Union

    Environ = Union[Mapping[bytes, bytes], Mapping[str, str]]

USAGE = (
    "usage: pidshim.py [--unshare [--private-tmp] [--private-ipc] [--private-shm]]"
    " [--landlock-scope] [--started-blocked] [--] CMD [ARGS...]"
)
# 71 is EX_OSERR, slotmgr's INIT_FAILED (125 would read as an OOM kill).
EX_USAGE, EX_SHIM, EX_NOEXEC, EX_NOTFOUND = 2, 71, 126, 127

# Linux constants the os module lacks (os.unshare only exists from Python 3.12).
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWIPC = 0x00020000, 0x20000000, 0x08000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_SET_NO_NEW_PRIVS = 38
# Landlock (include/uapi/linux/landlock.h); syscall numbers are the same on every
# architecture (the unified table from 424 on).
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_RESTRICT_SELF = 444, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET, LANDLOCK_SCOPE_SIGNAL = 0x1, 0x2
LANDLOCK_SCOPE_ABI = 6
CAP_SYS_ADMIN = 21

S = signal
JOB_CONTROL = {S.SIGTSTP, S.SIGTTIN, S.SIGTTOU}
NOT_FORWARDED = JOB_CONTROL | {S.SIGCHLD, S.SIGKILL, S.SIGSTOP, S.SIGPIPE, S.SIGXFSZ}
NOT_FORWARDED |= {S.SIGSEGV, S.SIGBUS, S.SIGILL, S.SIGFPE, S.SIGABRT, S.SIGTRAP, S.SIGSYS}
FORWARDED = signal.valid_signals() - NOT_FORWARDED
WAITED = FORWARDED | {S.SIGCHLD}


class Job:
    """CMD, and what its child needs to exec it as if pidshim were not there."""

    def __init__(self, cmd: list[str], mask: set[int], dispositions: dict[int, int]) -> None:
        self.cmd, self.mask, self.dispositions = cmd, mask, dispositions
        self.env = job_environ()
        self.take_tty = owns_terminal()


def quietly(func: Callable[..., object], *args: object) -> bool:
    # contextlib.suppress(OSError) without importing contextlib; tells whether it worked.
    try:
        func(*args)
    except OSError:
        return False
    return True


def warn(msg: str) -> None:
    # One line on stderr via the raw fd: safe in a forked child, and without sys.stderr.
    quietly(os.write, 2, f"pidshim: {msg}\n".encode(errors="backslashreplace"))


class Options:
    """The command line: its flags, and CMD."""

    FLAGS = (
        "unshare",
        "private-tmp",
        "private-ipc",
        "private-shm",
        "landlock-scope",
        "started-blocked",
    )
    NEED_UNSHARE = ("private-tmp", "private-ipc", "private-shm")

    def __init__(self, flags: set[str], cmd: list[str]) -> None:
        self.unshare = "unshare" in flags
        self.private_tmp = "private-tmp" in flags
        self.private_ipc = "private-ipc" in flags
        self.private_shm = "private-shm" in flags
        self.landlock_scope = "landlock-scope" in flags
        self.started_blocked = "started-blocked" in flags
        self.cmd = cmd


def parse_args(args: list[str]) -> Options:
    # Hand-rolled: argparse costs start-up time and would parse CMD's own options too.
    flags: set[str] = set()
    while args and args[0].startswith("-"):
        arg, args = args[0], args[1:]
        if arg == "--":
            break
        if arg.startswith("--") and arg[2:] in Options.FLAGS:
            flags.add(arg[2:])
        elif arg in ("-h", "--help"):
            print(USAGE)
            sys.exit(0)
        else:
            sys.exit(usage_error(f"unknown option '{arg}'"))
    if not args:
        sys.exit(usage_error("missing command"))
    for flag in Options.NEED_UNSHARE:
        if flag in flags and "unshare" not in flags:
            sys.exit(usage_error(f"--{flag} needs --unshare"))
    return Options(flags, args)


def usage_error(msg: str) -> int:
    # One line: what is wrong, then the usage.
    warn(f"{msg}; {USAGE}")
    return EX_USAGE


def job_environ() -> Environ:
    # Python's locale coercion may have added LC_CTYPE to os.environ; /proc/self/environ still
    # holds the environment we were started with, which is what the job must get.
    try:
        with open("/proc/self/environ", "rb") as f:
            data = f.read()
    except OSError:
        return os.environ
    return dict(item.split(b"=", 1) for item in data.split(b"\0") if b"=" in item)


def owns_terminal() -> bool:
    # The job may take the terminal over only if we have it: never steal it from a shell
    # when run in the background. Asked once, before a namespace hides process groups.
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def catch_signals(started_blocked: bool) -> tuple[set[int], dict[int, int]]:
    # Block first, then install handlers: a signal arriving in between stays pending rather
    # than acted upon. Returns the mask and dispositions the job's child must restore: the
    # empty mask systemd gives a unit if the signals were blocked only for our start.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
    if started_blocked:
        signal.pthread_sigmask(signal.SIG_SETMASK, WAITED)  # not SIGSEGV & co: faults kill
        mask = set()
    dispositions: dict[int, int] = {S.SIGPIPE: signal.SIG_DFL, S.SIGXFSZ: signal.SIG_DFL}
    for sig in WAITED | JOB_CONTROL:
        ignored = signal.getsignal(sig) == signal.SIG_IGN
        dispositions[sig] = signal.SIG_IGN if ignored else signal.SIG_DFL
        signal.signal(sig, signal.SIG_IGN if sig in JOB_CONTROL else lambda _s, _f: None)
    return mask, dispositions


def in_child(body: Callable[[], int]) -> NoReturn:
    # A forked child must never return into the parent's code (nor run its clean-up).
    code = EX_SHIM
    try:
        code = body()
    except BaseException as e:
        warn(f"internal error: {e!r}")
    os._exit(code)


def exec_job(job: Job) -> int:
    # In the job's child: own process group (terminal signals reach the job once), the
    # terminal if we had it (allowed: SIGTTOU is still ignored), then the signal state
    # pidshim started with, then exec with a PATH search, like execvp.
    if quietly(os.setpgid, 0, 0) and job.take_tty:
        quietly(os.tcsetpgrp, 0, os.getpgrp())
    for sig, disposition in job.dispositions.items():
        signal.signal(sig, disposition)
    signal.pthread_sigmask(signal.SIG_SETMASK, job.mask)
    try:
        os.execvpe(job.cmd[0], job.cmd, job.env)
    except OSError as e:
        warn(f"cannot execute '{job.cmd[0]}': {e.strerror}")
        return EX_NOTFOUND if isinstance(e, FileNotFoundError) else EX_NOEXEC


def reap(child: int) -> int | None:
    # SIGCHLDs coalesce: one may stand for many exits, so collect every ready zombie,
    # orphans included. Returns the child's status, shell-encoded, once it has been reaped.
    status = None
    while True:
        try:
            pid, wstatus = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children at all: the child vanished unseen
            return EX_NOTFOUND if status is None else status
        if pid == 0:
            return status
        if pid == child:
            code = os.waitstatus_to_exitcode(wstatus)
            status = 128 - code if code < 0 else code


def supervise(child: int) -> int:
    # The loop of the init and of the --unshare parent: forward signals to `child`, reap on
    # SIGCHLD, return once `child` has exited. A reaped pid is never signalled (no reuse).
    while True:
        sig = signal.sigwaitinfo(WAITED).si_signo
        if sig != signal.SIGCHLD:
            quietly(os.kill, child, sig)
        elif (status := reap(child)) is not None:
            return status


def kill_namespace() -> None:
    # Only as PID 1, where kill(-1) reaches just our namespace (elsewhere it would hit every
    # process we may signal!). Then reap them all, so that nothing outlives our exit.
    quietly(os.kill, -1, signal.SIGKILL)
    while quietly(os.waitpid, -1, 0):
        pass


def run_init(job: Job, landlock_scope: bool) -> int:
    # Init proper: start the job, supervise it, clear the namespace, pass its status on.
    if landlock_scope:
        try:
            restrict_landlock_scope()
        except OSError as e:
            warn(f"cannot scope abstract sockets and signals with Landlock: {e.strerror}")
            return EX_SHIM
    try:
        child = os.fork()
    except OSError as e:
        warn(f"cannot fork: {e.strerror}")
        return EX_SHIM
    if child == 0:
        in_child(lambda: exec_job(job))
    status = supervise(child)
    if os.getpid() == 1:
        kill_namespace()
    return status


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 if it has none or it is disabled."""
    import ctypes

    abi = ctypes.CDLL(None, use_errno=True).syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET),
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
    )
    return max(int(abi), 0)


def restrict_landlock_scope() -> None:
    # A ruleset that handles no file or network access, only the two scopes: the rest of
    # what the job may do is left to the unit. No new privileges first, as the kernel
    # requires of a process without CAP_SYS_ADMIN (a root job keeps setuid working).
    import ctypes

    lib = ctypes.CDLL(None, use_errno=True)
    scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL
    attr = (ctypes.c_uint64 * 3)(0, 0, scoped)  # handled_access_fs, handled_access_net, scoped
    fd = lib.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET),
        attr,
        ctypes.c_size_t(ctypes.sizeof(attr)),
        ctypes.c_uint32(0),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    try:
        if not has_cap_sys_admin():
            libc("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        restricted = lib.syscall(
            ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0)
        )
        if restricted != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def has_cap_sys_admin() -> bool:
    # CapEff from /proc/self/status: the kernel's own view, no capget needed.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


def libc(name: str, *args: int | bytes | None) -> None:
    # ctypes is imported lazily: it costs milliseconds and PID 1 mode does not need it.
    # Integers go as unsigned long, as mount flags and prctl arguments are.
    import ctypes

    func = getattr(ctypes.CDLL(None, use_errno=True), name)
    if func(*(ctypes.c_ulong(a) if isinstance(a, int) else a for a in args)) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def drop_capabilities() -> None:
    # A job run as a user on systemd < 257 gets CAP_SYS_ADMIN as an ambient capability
    # for our unshare and mount only (AmbientCapabilities=). Once they are done, clear
    # every capability set, so neither pidshim nor the job (forked after this) keeps any.
    # Root's jobs keep root's capabilities: dropping them would change what root can do.
    if os.getuid() == 0:
        return
    import ctypes

    libc("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two of {effective, permitted, inheritable}: all empty
    if ctypes.CDLL(None, use_errno=True).capset(header, data) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def namespace_init(job: Job, opts: Options) -> int:
    # PID 1 of the new namespace, still seeing the host's /proc. Die with the outer process
    # (a tiny window before prctl remains; in a unit, systemd's cgroup kill covers it), keep
    # our mounts from propagating to the host, and mount a proc of this namespace.
    quietly(libc, "prctl", PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        libc("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
        libc("mount", b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    except OSError as e:
        warn(f"cannot mount /proc: {e.strerror}")
        return EX_SHIM
    # A scope has no PrivateTmp= and no /dev/shm mount: fresh tmpfs here.
    private = [b"/tmp", b"/var/tmp"] if opts.private_tmp else []
    private += [b"/dev/shm"] if opts.private_shm else []
    for path in private:
        try:
            libc("mount", b"tmpfs", path, b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=1777")
        except OSError as e:
            warn(f"cannot mount a private {path.decode()}: {e.strerror}")
            return EX_SHIM
    try:
        drop_capabilities()
    except OSError as e:
        warn(f"cannot drop capabilities: {e.strerror}")
        return EX_SHIM
    return run_init(job, opts.landlock_scope)


def run_unshared(job: Job, opts: Options) -> int:
    # --unshare: a new PID namespace applies to our children only, so fork its init and
    # stay outside as the unit's main process, forwarding signals to it.
    try:
        libc("unshare", CLONE_NEWPID | CLONE_NEWNS | (CLONE_NEWIPC if opts.private_ipc else 0))
        init = os.fork()
    except OSError as e:
        warn(f"cannot create a PID namespace: {e.strerror}")
        return EX_SHIM
    if init == 0:
        in_child(lambda: namespace_init(job, opts))
    try:
        drop_capabilities()
    except OSError as e:
        warn(f"cannot drop capabilities: {e.strerror}")
        os.kill(init, signal.SIGKILL)
    return supervise(init)


def main(args: list[str]) -> int:
    opts = parse_args(args)
    job = Job(opts.cmd, *catch_signals(opts.started_blocked))  # signals first: before any fork
    if opts.unshare:
        return run_unshared(job, opts)
    if os.getpid() != 1:  # not an init: a subreaper, so that orphans still come to us
        quietly(libc, "prctl", PR_SET_CHILD_SUBREAPER, 1)
    return run_init(job, opts.landlock_scope)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
