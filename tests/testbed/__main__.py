"""Command line: build the cache, run a command in a guest, or open a shell.

Exit status of ``run``: the command's own exit status; 3 when the test bed
itself failed (with one ``testbed: guest NAME failed: WHY`` line on stderr);
2 for a usage error. A command that itself exits 3 is told apart only by
that stderr line.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from . import EXIT_TESTBED_FAILURE, GUESTS, TestbedError
from .build import build
from .job import parse_env_pairs
from .runner import DEFAULT_BOOT_TIMEOUT, DEFAULT_MEMORY_MIB, DEFAULT_TIMEOUT, run_in_guest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m tests.testbed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p_build = commands.add_parser("build", help="build or refresh the cached guest parts")
    p_build.add_argument("--guest", choices=[*GUESTS, "all"], default="all")
    p_build.add_argument(
        "--keep-stale", action="store_true", help="do not delete superseded artifacts"
    )

    p_run = commands.add_parser("run", help="run a command as root in a fresh guest")
    p_run.add_argument("--guest", choices=list(GUESTS), required=True)
    p_run.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds for the whole run, boot included (default %(default)s)",
    )
    p_run.add_argument(
        "--boot-timeout",
        type=float,
        default=DEFAULT_BOOT_TIMEOUT,
        help="seconds until the command must have started (default %(default)s)",
    )
    p_run.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the command (repeatable)",
    )
    p_run.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MIB, metavar="MiB")
    p_run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")

    p_shell = commands.add_parser("shell", help="interactive root shell in a fresh guest")
    p_shell.add_argument("--guest", choices=list(GUESTS), required=True)
    p_shell.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p_shell.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MIB, metavar="MiB")
    return parser


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(args: list[str] | None = None) -> int:
    parser = _parser()
    opts = parser.parse_args(args)
    try:
        env = parse_env_pairs(getattr(opts, "env", []))
    except ValueError as exc:
        parser.error(str(exc))
    if opts.command == "build":
        names = list(GUESTS) if opts.guest == "all" else [opts.guest]
        started = time.monotonic()
        try:
            build(names, prune=not opts.keep_stale)
        except (TestbedError, OSError, ValueError) as exc:
            print(f"testbed: build failed: {exc}", file=sys.stderr)
            return EXIT_TESTBED_FAILURE
        print(f"testbed: build done in {time.monotonic() - started:.1f} s")
        return 0
    if opts.command == "shell":
        from .shell import run_shell

        return run_shell(opts.guest, opts.memory, env)
    argv = opts.argv[1:] if opts.argv[:1] == ["--"] else opts.argv
    if not argv:
        parser.error("run: no command given (use: run --guest N -- COMMAND [ARGS...])")
    # On SIGTERM (a CI timeout), unwind normally so QEMU is killed and the
    # run's temporary files are removed.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(opts, argv, env)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(opts: argparse.Namespace, argv: list[str], env: dict[str, str]) -> int:
    try:
        return run_in_guest(
            opts.guest,
            argv,
            env,
            opts.timeout,
            memory_mib=opts.memory,
            boot_timeout=opts.boot_timeout,
        )
    except TestbedError as exc:
        message = str(exc)
        if not message.startswith("testbed: "):  # a build step failed before boot
            message = f"testbed: guest {opts.guest} failed: {message}"
        print(message, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"testbed: guest {opts.guest} failed: interrupted", file=sys.stderr, flush=True)
    except Exception as exc:  # any crash of the test bed is still exit 3, never 0
        print(
            f"testbed: guest {opts.guest} failed: {type(exc).__name__}: {exc}",
            file=sys.stderr,
            flush=True,
        )
    return EXIT_TESTBED_FAILURE


if __name__ == "__main__":
    sys.exit(main())
