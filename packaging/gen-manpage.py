#!/usr/bin/env python3
"""Write the slotmgr(1) man page, in roff, generated from the click command tree.

Usage:  python3 packaging/gen-manpage.py [-o FILE] [--date YYYY-MM-DD] [MODULE[:OBJECT]]

The page is kept in the repository as packaging/slotmgr.1 (pip installs it with
setup.cfg's data_files, the RPM from there); regenerate it after changing any
option, command or exit code:

    .venv/bin/python packaging/gen-manpage.py -o packaging/slotmgr.1

tests/unit/test_manpage.py fails while the committed page is out of date. The
page comes from the code itself:
  - NAME, SYNOPSIS, DESCRIPTION, OPTIONS and COMMANDS come from the top-level click
    group of `slotmgr.cli.main` (its `main` if that is a click command, else the one click
    group of the module that is nobody's subcommand) and every visible subcommand,
    nested groups included, with their options and help texts (in the sections
    of a slotmgr.cli.help_sections.SectionedCommand, as its --help shows them);
  - EXIT STATUS comes from `slotmgr.errors.ExitCode`: the preface is the ExitCode
    docstring (else the body of the `slotmgr.errors` module docstring), and each
    code's meaning is, in this order, the member's `description` attribute, a
    docstring set on the member, the comment at the end of its line in the source,
    or its name;
  - JOB RECORD lists the result values of `slotmgr.history.record.RESULTS`, each with
    the comment at the end of its line in the source;
  - ENVIRONMENT lists ENVIRONMENT below and the variables options read (`envvar=`);
  - FILES lists the history database, the config files (paths from the code)
    and every unit in `units/` (beside this script's folder) with its Description=.
The date is --date, else the date of the spec's newest %changelog entry (the
release's), so the page changes only with the code.

Needs only the standard library and click; works with click 7.1 and click 8.x.
slotmgr is imported from PYTHONPATH first, else from the source tree this script is in.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib
import importlib.util
import inspect
import io
import os
import re
import sys
import tokenize
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import click

if TYPE_CHECKING:  # only for mypy: the script needs only the standard library and click
    from typing_extensions import TypeAlias, TypeGuard

    # ("para", str) or ("verbatim", [lines]): the body's type follows the kind.
    Block: TypeAlias = tuple[str, Any]

HERE = os.path.dirname(os.path.abspath(__file__))
UNITS_DIR = os.path.join(os.path.dirname(HERE), "units")

# Where the RPM (packaging/rpm/slotmgr.spec) puts things.
CONFIG_FILE = "/etc/slotmgr/slots.conf"
STATE_DIR = "/var/lib/slotmgr/"
UNIT_DIR = "/usr/lib/systemd/system/"

SPEC = os.path.join(HERE, "rpm", "slotmgr.spec")
REGENERATE = ".venv/bin/python packaging/gen-manpage.py -o packaging/slotmgr.1"

# The environment variables slotmgr reads (tests/unit/test_manpage.py checks
# that the code reads no other).
ENVIRONMENT = [
    (
        "SLOTMGR_HISTORY_DB",
        "The history database to write and read instead of the default "
        "(see FILES); ignored as root, except with --user.",
    ),
    (
        "SLOTMGR_SLOTS_CONF",
        "For a non-root (--user) caller, the slot definitions to read "
        "instead of the default (see FILES); ignored as root.",
    ),
    (
        "XDG_STATE_HOME",
        "With --user, the history database is $XDG_STATE_HOME/slotmgr/history.db "
        "(default ~/.local/state).",
    ),
    ("XDG_RUNTIME_DIR", "With --user, where the user manager's socket is (default /run/user/UID)."),
    (
        "DBUS_SYSTEM_BUS_ADDRESS",
        "The system bus (a unix:path= address), which slotmgr uses when "
        "it is not root and for --scope jobs (default "
        "/run/dbus/system_bus_socket).",
    ),
    ("PATH", "Where slotmgr run looks up a COMMAND given without a slash."),
    (
        "SLURM_JOB_ID",
        "Inside Slurm, the default --batch-id: SLURM_JOB_ID.SLURM_STEP_ID.SLURM_PROCID, or "
        "SLURM_JOB_ID.batch for the batch script (no SLURM_STEP_ID).",
    ),
    ("SUDO_UID", "For batch-run (run by sudo): the user the job runs as, whom sudo names."),
    ("SUDO_GID", "For batch-run: the job's group, as sudo names it."),
]

# DESCRIPTION, after the command group's own help.
DESCRIPTION = [
    "Each job is a transient systemd unit, slotmgr-JOBID.service in slotmgr.slice (or in its "
    "batch slot's slice), created over D-Bus: systemd and the kernel's cgroups track every "
    "process of the job, double-forked daemons included, limit it, account for it and kill "
    "all of it when it ends. With --scope the job is a transient scope that slotmgr forks "
    "itself.",
    "Isolation is on by default: the job has its own /tmp and /var/tmp, and a PID namespace "
    "in which it sees only its own processes, with an init that reaps them and forwards "
    "signals; when the job's main process exits, nothing of the job is left.",
    "The job's record (see JOB RECORD) is written by the unit's own ExecStopPost= hook, so it "
    "does not depend on the process that started the job staying alive (a --scope job's, "
    "which systemd runs no hook for, by slotmgr run itself).",
    "Root runs jobs for other users with --uid; a user without root runs jobs under their "
    "own user manager with --user.",
]

EXAMPLES = [
    (
        "Run a simulation with 4 GiB of memory, CPUs 0 to 7 and at most 12 hours:",
        ["slotmgr run --memory-max 4G --cpus 0-7 --runtime-max 12h -- ./simulate input.dat"],
    ),
    (
        "Run a job in batch slot 2, with its record as JSON on stdout:",
        ["slotmgr run --slot 2 --json - -- ./simulate input.dat"],
    ),
    (
        "Any other supported unit property, in systemd's syntax:",
        ["slotmgr run -p MemoryLow=1G -p CPUWeight=50 -- make -j8"],
    ),
    (
        "The running jobs, one of them in full, then stop it:",
        ["slotmgr list", "slotmgr status JOBID", "slotmgr stop JOBID"],
    ),
    (
        "The records of the last hour, and what systemd says of one job:",
        ["slotmgr history --since 1h", "systemctl status slotmgr-JOBID.service"],
    ),
]

SEE_ALSO = [
    ("systemd-run", 1),
    ("systemctl", 1),
    ("systemd-cgls", 1),
    ("journalctl", 1),
    ("systemd.exec", 5),
    ("systemd.resource-control", 5),
    ("systemd.slice", 5),
]


# ---------------------------------------------------------------- roff helpers


def esc(text: str) -> str:
    """Escape plain text for roff (not for use at the start of a request line)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return text


def line(text: str) -> str:
    """A text line: escaped, and protected if it starts with a control character."""
    text = esc(text)
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def quoted_arg(text: str) -> str:
    """A request argument in double quotes (roff doubles an inner quote)."""
    return '"' + esc(text).replace('"', '""') + '"'


def usage_words(pieces: Iterable[str]) -> str:
    """Render click usage pieces: `[OPTIONS]`, `COMMAND [ARGS]...` with metavars in italics."""
    out = []
    for piece in pieces:
        parts = re.split(r"([\[\]|.\s]+)", piece)
        out.append(
            "".join(
                esc(p) if re.fullmatch(r"[\[\]|.\s]+", p) or not p else "\\fI" + esc(p) + "\\fR"
                for p in parts
            )
        )
    return " ".join(out)


def option_label(opts: str) -> str:
    """Render a click help record's left column: option names bold, metavars italic."""
    out = []
    for tok in re.split(r"(\s+|,|/)", opts):
        if not tok or re.fullmatch(r"\s+|,|/", tok):
            out.append(esc(tok))
        elif tok.startswith("-"):
            out.append("\\fB" + esc(tok) + "\\fR")
        else:
            out.append("\\fI" + esc(tok) + "\\fR")
    return "".join(out)


def help_blocks(text: str | None) -> list[Block]:
    """Split click help text into ("para", str) and ("verbatim", [lines]) blocks.

    Mirrors what click does: the text after a form feed is not shown, and a
    paragraph that starts with a lone backspace line (\\b) is not rewrapped.
    """
    text = inspect.cleandoc(text or "").split("\f", 1)[0].strip()
    blocks = []
    for para in re.split(r"\n[ \t]*\n", text):
        if not para.strip():
            continue
        if para.startswith("\b"):
            lines = para[1:].lstrip("\n").splitlines()
            blocks.append(("verbatim", lines))
        else:
            blocks.append(("para", " ".join(para.split())))
    return blocks


def render_blocks(blocks: list[Block], out: list[str], ticks: bool = False) -> None:
    """Render help_blocks(); with ticks, `code` in a paragraph is set in bold."""
    for kind, body in blocks:
        out.append(".PP")
        if kind == "para":
            text = line(body)
            if ticks:
                text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
            out.append(text)
        else:
            out.append(".nf")
            out.extend(line(x) if x else "" for x in body)
            out.append(".fi")


# ---------------------------------------------------------------- click helpers


def is_group(cmd: click.Command) -> TypeGuard[click.Group]:
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def make_ctx(
    cmd: click.Command, name: str | None, parent: click.Context | None = None
) -> click.Context:
    # A bare Context (no argument parsing, so no callbacks, no required-option
    # errors), with the command's context_settings as make_context() would apply.
    return click.Context(cmd, info_name=name, parent=parent, **(cmd.context_settings or {}))


def subcommands(group: click.Group, ctx: click.Context) -> Iterator[tuple[str, click.Command]]:
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or getattr(cmd, "hidden", False):
            continue
        yield name, cmd


def is_help_option(param: click.Parameter, ctx: click.Context) -> bool:
    names = set(getattr(param, "opts", [])) | set(getattr(param, "secondary_opts", []))
    return bool(names) and names <= set(ctx.help_option_names) and param.is_eager


def option_records(
    cmd: click.Command, ctx: click.Context, include_help: bool
) -> Iterator[tuple[str, str]]:
    for param in cmd.get_params(ctx):
        # Arguments are in the usage line (click 8.5 gives them help records too).
        if getattr(param, "hidden", False) or not isinstance(param, click.Option):
            continue
        if not include_help and is_help_option(param, ctx):
            continue
        record = param.get_help_record(ctx)
        if record is not None:
            yield record


def option_groups(
    cmd: click.Command, ctx: click.Context
) -> list[tuple[str | None, list[tuple[str, str]]]]:
    """[(title or None, records)]: a SectionedCommand's sections, else one list."""
    if not hasattr(cmd, "option_sections"):
        return [(None, list(option_records(cmd, ctx, include_help=False)))]
    help_records = {
        p.get_help_record(ctx)
        for p in cmd.get_params(ctx)
        if isinstance(p, click.Option) and is_help_option(p, ctx)
    }
    groups = [
        (title, [r for r in rows if r not in help_records])
        for title, rows in cmd.option_sections(ctx)
    ]
    return [(title, rows) for title, rows in groups if rows]


def usage_pieces(cmd: click.Command, ctx: click.Context) -> list[str]:
    """The usage line's words after the command path, the same under click 7.1 and 8."""
    if is_group(cmd):
        sub = "COMMAND [ARGS]..."
        if getattr(cmd, "invoke_without_command", False):
            sub = "[COMMAND] [ARGS]..."
        # click sets a group's options_metavar ("[OPTIONS]" by default).
        return [cast(str, cmd.options_metavar), sub]
    return cmd.collect_usage_pieces(ctx)


def short_description(cmd: click.Command, fallback: str) -> str:
    text = cmd.short_help
    if not text:
        blocks = help_blocks(cmd.help)
        text = blocks[0][1] if blocks and blocks[0][0] == "para" else fallback
        text = re.split(r"(?<=[^.])\.(\s|$)", text, maxsplit=1)[0]
    text = text.strip().rstrip(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text


def find_root_command(spec: str) -> click.Command:
    modname, _, attr = spec.partition(":")
    module = importlib.import_module(modname)
    if attr:
        named: click.Command = getattr(module, attr)
        return named
    main = getattr(module, "main", None)
    if isinstance(main, click.Command):
        return main
    groups = [v for v in vars(module).values() if isinstance(v, click.Command) and is_group(v)]
    nested = {id(c) for g in groups for c in getattr(g, "commands", {}).values()}
    roots = [g for g in groups if id(g) not in nested]
    if len(roots) != 1:
        sys.exit(
            f"gen-manpage: expected one top-level click group in {modname}, found "
            f"{len(roots)}; name it as {modname}:OBJECT"
        )
    return roots[0]


# ---------------------------------------------------------------- exit codes


def enum_line_comments(enum_cls: type) -> dict[str, str]:
    """{member name: trailing comment} from the class's source, if it can be read."""
    try:
        source = inspect.getsource(enum_cls)
    except (OSError, TypeError):
        return {}
    comments, first_name = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        row = tok.start[0]
        if tok.type == tokenize.NAME and row not in first_name:
            first_name[row] = tok.string
        elif tok.type == tokenize.COMMENT and row in first_name:
            comments[first_name[row]] = tok.string.lstrip("#").strip()
    return comments


def exit_status_section(out: list[str]) -> None:
    try:
        errors = importlib.import_module("slotmgr.errors")
        codes = errors.ExitCode
    except (ImportError, AttributeError):
        return
    out.append('.SH "EXIT STATUS"')
    preface = codes.__dict__.get("__doc__")
    if not preface or preface == "An enumeration.":  # Python < 3.11's default
        doc = inspect.cleandoc(errors.__doc__ or "")
        preface = doc.split("\n\n", 1)[1] if "\n\n" in doc else ""
    render_blocks(help_blocks(preface), out, ticks=True)
    comments = enum_line_comments(codes)
    for member in sorted(codes, key=int):
        meaning = getattr(member, "description", None)
        if not isinstance(meaning, str):
            meaning = vars(member).get("__doc__") or comments.get(member.name)
        if not meaning:
            meaning = "success" if int(member) == 0 else member.name.replace("_", " ").lower()
        out.append(".TP")
        out.append(f"\\fB{int(member)}\\fR ({esc(member.name)})")
        out.append(line(meaning))


def sequence_line_comments(module: ModuleType, name: str) -> dict[str, str]:
    """{string item: trailing comment} of the tuple `name = (...)` in module's source."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return {}
    comments, item_on_row, inside, depth = {}, {}, False, 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if not inside:
            inside = tok.type == tokenize.NAME and tok.string == name and tok.start[1] == 0
            continue
        if tok.type == tokenize.OP and tok.string in "([":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]":
            depth -= 1
            if depth == 0:
                break
        elif tok.type == tokenize.STRING and depth == 1:
            item_on_row[tok.start[0]] = ast.literal_eval(tok.string)
        elif tok.type == tokenize.COMMENT and tok.start[0] in item_on_row:
            comments[item_on_row[tok.start[0]]] = tok.string.lstrip("#").strip()
    return comments


def record_section(out: list[str]) -> None:
    try:
        record = importlib.import_module("slotmgr.history.record")
        results = record.RESULTS
    except (ImportError, AttributeError):
        return
    out.append('.SH "JOB RECORD"')
    out.append(".PP")
    out.append(
        line(
            "When a job ends, its record goes into the history (see FILES): the job id, "
            "unit, slice and slot, user, command, start and end time, result, exit "
            "status, wall and CPU time, peak memory and its source, I/O bytes, peak "
            "tasks and IP bytes. slotmgr run prints it as a summary on stderr, or as "
            "JSON with --json; slotmgr status and slotmgr history show it later."
        )
    )
    out.append(".PP")
    out.append(line("Its result says how the job ended:"))
    comments = sequence_line_comments(record, "RESULTS")
    for value in results:
        out.append(".TP")
        out.append(f"\\fB{esc(value)}\\fR")
        out.append(line(comments.get(value) or value.replace("-", " ")))


def code_constant(module_name: str, attr: str, default: str) -> str:
    """A path the code defines, so the page says what the code does."""
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return default
    return value if isinstance(value, str) else default


def files(prog: str) -> list[tuple[str, str]]:
    history_db = code_constant("slotmgr.history.store", "SYSTEM_DB", "/var/lib/slotmgr/history.db")
    slots_conf = code_constant("slotmgr.node.slots", "DEFAULT_CONF", CONFIG_FILE)
    node_conf = code_constant("slotmgr.node.config", "DEFAULT_CONF", "/etc/slotmgr/slotmgr.conf")
    entries = [
        (
            history_db,
            "The history: one record per run of a job of the system manager "
            "(SQLite, written as root by each job's ExecStopPost= hook), root's alone "
            "(0600, as are its -wal, -shm and " + history_db + ".lock, on which "
            "writers take turns). A writer that cannot get the lock in 15 s leaves "
            "its record in " + history_db + ".spool/ for the next one; a corrupt "
            "database is moved to " + history_db + ".corrupt-TIME.",
        ),
        (
            os.path.join(os.path.dirname(history_db), "users", "UID.jsonl"),
            "A copy of each record of user UID's jobs, which only that user can read: what "
            "slotmgr history and status show a user who is not root.",
        ),
        (
            "/run/slotmgr/stops",
            "Notes slotmgr stop, slotmgr kill and a signalled slotmgr run "
            "leave for the recorder, so that a stopped job is recorded as "
            "cancelled with what stopped it (root's alone).",
        ),
        (
            "~/.local/state/slotmgr/history.db",
            "The history of --user jobs ($XDG_STATE_HOME/slotmgr/history.db).",
        ),
        (
            slots_conf,
            "Slot definitions: an INI file with one [slotN] section per slot and "
            "resource-control keys such as MemoryMax, AllowedCPUs, IOWeight and "
            "TasksMax, which apply to the slot's slice and so bound all its jobs "
            "together, and jobs = N, how many jobs it holds at a time (default 1). "
            "As root only this file counts, and only while root alone may write it. "
            "Installed fully commented out.",
        ),
    ]
    if importlib.util.find_spec("slotmgr.node.config") is not None:
        entries.append(
            (node_conf, "The node's own settings for " + prog + ", owned by root (INI).")
        )
    entries.append((STATE_DIR, f"State directory of {prog}."))
    for unit, desc in unit_descriptions():
        entries.append((UNIT_DIR + unit, desc or "systemd unit shipped with " + prog + "."))
    return entries


# ---------------------------------------------------------------- the page


def unit_descriptions() -> list[tuple[str, str]]:
    units = []
    if os.path.isdir(UNITS_DIR):
        for name in sorted(os.listdir(UNITS_DIR)):
            desc = ""
            with open(os.path.join(UNITS_DIR, name), encoding="utf-8") as f:
                for text in f:
                    if text.startswith("Description="):
                        desc = text.split("=", 1)[1].strip()
                        break
            units.append((name, desc))
    return units


def command_section(
    name: str,
    cmd: click.Command,
    parent_ctx: click.Context,
    out: list[str],
    envvars: dict[str, str],
) -> None:
    ctx = make_ctx(cmd, name, parent_ctx)
    out.append(".SS " + quoted_arg(ctx.command_path))
    out.append(".PP")
    out.append("\\fB" + esc(ctx.command_path) + "\\fR " + usage_words(usage_pieces(cmd, ctx)))
    if getattr(cmd, "deprecated", False):
        out.append(".PP")
        out.append("(Deprecated.)")
    render_blocks(help_blocks(cmd.help or cmd.short_help), out)
    collect_envvars(cmd, ctx, envvars)
    for title, records in option_groups(cmd, ctx):
        if title:
            out.append(".PP")
            out.append("\\fI" + esc(title) + ":\\fR")
        for opts, text in records:
            out.append(".TP")
            out.append(option_label(opts))
            out.append(line(text) if text else "")
    if is_group(cmd):
        for sub_name, sub in subcommands(cmd, ctx):
            command_section(sub_name, sub, ctx, out, envvars)


def collect_envvars(cmd: click.Command, ctx: click.Context, envvars: dict[str, str]) -> None:
    for param in cmd.get_params(ctx):
        names = param.envvar if isinstance(param.envvar, (list, tuple)) else [param.envvar]
        for var in filter(None, names):
            label = "/".join(getattr(param, "opts", []))
            envvars.setdefault(var, f"{ctx.command_path} {label}".strip())


def render(root: click.Command, prog: str, version: str, date: str, summary_fallback: str) -> str:
    ctx = make_ctx(root, prog)
    out = [
        '.\\" Generated from the click command tree; do not edit. Regenerate with:',
        '.\\" ' + REGENERATE,
        f'.TH {prog.upper()} 1 "{date}" {quoted_arg(prog + " " + version)} "User Commands"',
        ".nh",  # no hyphenation: option names and paths must stay whole
        ".ad l",
        ".SH NAME",
        f"{esc(prog)} \\- {line(short_description(root, summary_fallback))}",
        ".SH SYNOPSIS",
        ".PP",
        f"\\fB{esc(prog)}\\fR " + usage_words(usage_pieces(root, ctx)),
    ]
    commands = list(subcommands(root, ctx)) if is_group(root) else []
    for name, cmd in commands:
        sub_ctx = make_ctx(cmd, name, ctx)
        out.append(".br")
        out.append(
            "\\fB" + esc(sub_ctx.command_path) + "\\fR " + usage_words(usage_pieces(cmd, sub_ctx))
        )
    out.append(".SH DESCRIPTION")
    render_blocks(help_blocks(root.help), out)
    for text in DESCRIPTION:
        out.append(".PP")
        out.append(line(text))

    envvars: dict[str, str] = {}
    collect_envvars(root, ctx, envvars)
    out.append(".SH OPTIONS")
    out.append(".PP")
    out.append(
        line(
            "These options go before the command name. Every command also takes "
            + "/".join(ctx.help_option_names)
            + "."
        )
    )
    for opts, text in option_records(root, ctx, include_help=True):
        out.append(".TP")
        out.append(option_label(opts))
        out.append(line(text) if text else "")

    if commands:
        out.append(".SH COMMANDS")
        for name, cmd in commands:
            command_section(name, cmd, ctx, out, envvars)

    exit_status_section(out)
    record_section(out)

    out.append(".SH ENVIRONMENT")
    for var, text in ENVIRONMENT:
        out.append(".TP")
        out.append(f"\\fB{esc(var)}\\fR")
        out.append(line(text))
    for var, where in sorted(envvars.items()):
        if var not in dict(ENVIRONMENT):
            out.append(".TP")
            out.append(f"\\fB{esc(var)}\\fR")
            out.append(line(f"Default for {where}."))

    out.append(".SH FILES")
    for path, text in files(prog):
        out.append(".TP")
        out.append(f"\\fI{esc(path)}\\fR")
        out.append(line(text))

    out.append(".SH EXAMPLES")
    for text, example_commands in EXAMPLES:
        out.append(".PP")
        out.append(line(text))
        out.append(".PP")
        out.append(".RS 4")
        out.append(".nf")
        out.extend("\\fB" + line(c) + "\\fR" for c in example_commands)
        out.append(".fi")
        out.append(".RE")

    out.append('.SH "SEE ALSO"')
    out.append(",\n".join(f".BR {page} ({sec})" for page, sec in SEE_ALSO))
    return "\n".join(out) + "\n"


def release_date() -> str:
    """The date of the spec's newest %changelog entry: "* Mon Nov 23 2026 ..."."""
    with open(SPEC, encoding="utf-8") as f:
        text = f.read()
    changelog = text.split("%changelog", 1)[-1]
    match = re.search(r"^\* \w{3} (\w{3} +\d{1,2} \d{4})", changelog, re.MULTILINE)
    if not match:
        sys.exit(f"gen-manpage: no dated %changelog entry in {SPEC}; pass --date")
    when = datetime.datetime.strptime(" ".join(match.group(1).split()), "%b %d %Y")
    return when.strftime("%Y-%m-%d")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "command",
        nargs="?",
        default="slotmgr.cli.main",
        help="MODULE[:OBJECT] holding the click group (default: slotmgr.cli.main)",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the page to FILE (default: stdout)"
    )
    parser.add_argument(
        "--date", help="date for the page footer (default: the spec's newest %%changelog)"
    )
    parser.add_argument("--prog", default="slotmgr", help="program name (default: slotmgr)")
    args = parser.parse_args()
    sys.path.append(os.path.dirname(HERE))  # the source tree, after PYTHONPATH

    root = find_root_command(args.command)
    package = importlib.import_module(args.command.split(".", 1)[0].split(":", 1)[0])
    version = getattr(package, "__version__", "")
    summary = (package.__doc__ or "").split(":", 1)[-1].strip()
    page = render(root, args.prog, version, args.date or release_date(), summary)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(page)
    else:
        sys.stdout.write(page)


if __name__ == "__main__":
    main()
