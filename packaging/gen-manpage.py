#!/usr/bin/env python3
"""Print the slotmgr(1) man page, in roff, generated from the click command tree.

Usage:  python3 packaging/gen-manpage.py [--date YYYY-MM-DD] [MODULE[:OBJECT]] > slotmgr.1

The page is built at package build time from the code itself, so it cannot drift:
  - NAME, SYNOPSIS, DESCRIPTION, OPTIONS and COMMANDS come from the top-level click
    group of `slotmgr.cli` (its `main` if that is a click command, else the one click
    group of the module that is nobody's subcommand) and every visible subcommand,
    nested groups included, with their options and help texts;
  - EXIT STATUS comes from `slotmgr.errors.ExitCode`: the preface is the ExitCode
    docstring (else the body of the `slotmgr.errors` module docstring), and each
    code's meaning is, in this order, the member's `description` attribute, a
    docstring set on the member, the comment at the end of its line in the source,
    or its name;
  - ENVIRONMENT lists the environment variables that options read (`envvar=`);
  - FILES lists the config file, the state directory and every unit in `units/`
    (beside this script's folder) with the unit's Description=.
The date is --date, else SOURCE_DATE_EPOCH (reproducible builds), else today (UTC).

Needs only the standard library and click; works with click 7.1 and click 8.x.
slotmgr is imported from PYTHONPATH first, else from the source tree this script is in.
"""

import argparse
import datetime
import importlib
import inspect
import io
import os
import re
import sys
import tokenize

import click

HERE = os.path.dirname(os.path.abspath(__file__))
UNITS_DIR = os.path.join(os.path.dirname(HERE), "units")

# Where the RPM (packaging/rpm/slotmgr.spec) puts things.
CONFIG_FILE = "/etc/slotmgr/slots.conf"
STATE_DIR = "/var/lib/slotmgr/"
UNIT_DIR = "/usr/lib/systemd/system/"

SEE_ALSO = [
    ("systemd-run", 1),
    ("systemctl", 1),
    ("systemd.resource-control", 5),
    ("systemd.slice", 5),
]


# ---------------------------------------------------------------- roff helpers

def esc(text):
    """Escape plain text for roff (not for use at the start of a request line)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return text


def line(text):
    """A text line: escaped, and protected if it starts with a control character."""
    text = esc(text)
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def quoted_arg(text):
    """A request argument in double quotes (roff doubles an inner quote)."""
    return '"' + esc(text).replace('"', '""') + '"'


def usage_words(pieces):
    """Render click usage pieces: `[OPTIONS]`, `COMMAND [ARGS]...` with metavars in italics."""
    out = []
    for piece in pieces:
        parts = re.split(r"([\[\]|.\s]+)", piece)
        out.append("".join(esc(p) if re.fullmatch(r"[\[\]|.\s]+", p) or not p
                           else "\\fI" + esc(p) + "\\fR" for p in parts))
    return " ".join(out)


def option_label(opts):
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


def help_blocks(text):
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


def render_blocks(blocks, out, ticks=False):
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

def is_group(cmd):
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def make_ctx(cmd, name, parent=None):
    # A bare Context (no argument parsing, so no callbacks, no required-option
    # errors), with the command's context_settings as make_context() would apply.
    return click.Context(cmd, info_name=name, parent=parent, **(cmd.context_settings or {}))


def subcommands(group, ctx):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or getattr(cmd, "hidden", False):
            continue
        yield name, cmd


def is_help_option(param, ctx):
    names = set(getattr(param, "opts", [])) | set(getattr(param, "secondary_opts", []))
    return bool(names) and names <= set(ctx.help_option_names) and param.is_eager


def option_records(cmd, ctx, include_help):
    for param in cmd.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if not include_help and is_help_option(param, ctx):
            continue
        record = param.get_help_record(ctx)
        if record is not None:
            yield record


def short_description(cmd, fallback):
    text = cmd.short_help
    if not text:
        blocks = help_blocks(cmd.help)
        text = blocks[0][1] if blocks and blocks[0][0] == "para" else fallback
        text = re.split(r"(?<=[^.])\.(\s|$)", text, maxsplit=1)[0]
    text = text.strip().rstrip(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text


def find_root_command(spec):
    modname, _, attr = spec.partition(":")
    module = importlib.import_module(modname)
    if attr:
        return getattr(module, attr)
    main = getattr(module, "main", None)
    if isinstance(main, click.Command):
        return main
    groups = [v for v in vars(module).values() if isinstance(v, click.Command) and is_group(v)]
    nested = {id(c) for g in groups for c in getattr(g, "commands", {}).values()}
    roots = [g for g in groups if id(g) not in nested]
    if len(roots) != 1:
        sys.exit(f"gen-manpage: expected one top-level click group in {modname}, found "
                 f"{len(roots)}; name it as {modname}:OBJECT")
    return roots[0]


# ---------------------------------------------------------------- exit codes

def enum_line_comments(enum_cls):
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


def exit_status_section(out):
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


# ---------------------------------------------------------------- the page

def unit_descriptions():
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


def command_section(name, cmd, parent_ctx, out, envvars):
    ctx = make_ctx(cmd, name, parent_ctx)
    out.append(".SS " + quoted_arg(ctx.command_path))
    out.append(".PP")
    out.append("\\fB" + esc(ctx.command_path) + "\\fR "
               + usage_words(cmd.collect_usage_pieces(ctx)))
    if getattr(cmd, "deprecated", False):
        out.append(".PP")
        out.append("(Deprecated.)")
    render_blocks(help_blocks(cmd.help or cmd.short_help), out)
    collect_envvars(cmd, ctx, envvars)
    for opts, text in option_records(cmd, ctx, include_help=False):
        out.append(".TP")
        out.append(option_label(opts))
        out.append(line(text) if text else "")
    if is_group(cmd):
        for sub_name, sub in subcommands(cmd, ctx):
            command_section(sub_name, sub, ctx, out, envvars)


def collect_envvars(cmd, ctx, envvars):
    for param in cmd.get_params(ctx):
        names = param.envvar if isinstance(param.envvar, (list, tuple)) else [param.envvar]
        for var in filter(None, names):
            label = "/".join(getattr(param, "opts", []))
            envvars.setdefault(var, f"{ctx.command_path} {label}".strip())


def render(root, prog, version, date, summary_fallback):
    ctx = make_ctx(root, prog)
    out = [
        '.\\" Generated by packaging/gen-manpage.py from the click command tree; do not edit.',
        f'.TH {prog.upper()} 1 "{date}" {quoted_arg(prog + " " + version)} "User Commands"',
        ".nh",  # no hyphenation: option names and paths must stay whole
        ".ad l",
        ".SH NAME",
        f"{esc(prog)} \\- {line(short_description(root, summary_fallback))}",
        ".SH SYNOPSIS",
        ".PP",
        f"\\fB{esc(prog)}\\fR " + usage_words(root.collect_usage_pieces(ctx)),
    ]
    commands = list(subcommands(root, ctx)) if is_group(root) else []
    for name, cmd in commands:
        sub_ctx = make_ctx(cmd, name, ctx)
        out.append(".br")
        out.append("\\fB" + esc(sub_ctx.command_path) + "\\fR "
                   + usage_words(cmd.collect_usage_pieces(sub_ctx)))
    out.append(".SH DESCRIPTION")
    render_blocks(help_blocks(root.help), out)

    envvars = {}
    collect_envvars(root, ctx, envvars)
    out.append(".SH OPTIONS")
    out.append(".PP")
    out.append(line("These options go before the command name. Every command also takes "
                    + "/".join(ctx.help_option_names) + "."))
    for opts, text in option_records(root, ctx, include_help=True):
        out.append(".TP")
        out.append(option_label(opts))
        out.append(line(text) if text else "")

    if commands:
        out.append(".SH COMMANDS")
        for name, cmd in commands:
            command_section(name, cmd, ctx, out, envvars)

    exit_status_section(out)

    if envvars:
        out.append(".SH ENVIRONMENT")
        for var, where in sorted(envvars.items()):
            out.append(".TP")
            out.append(f"\\fB{esc(var)}\\fR")
            out.append(line(f"Default for {where}."))

    out.append(".SH FILES")
    out.append(".TP")
    out.append(f"\\fI{esc(CONFIG_FILE)}\\fR")
    out.append(line("Slot definitions: an INI file with one [slotN] section per slot and "
                    "resource-control keys such as MemoryMax, AllowedCPUs, IOWeight and "
                    "TasksMax. Installed fully commented out."))
    out.append(".TP")
    out.append(f"\\fI{esc(STATE_DIR)}\\fR")
    out.append(line(f"State directory of {prog}."))
    for unit, desc in unit_descriptions():
        out.append(".TP")
        out.append(f"\\fI{esc(UNIT_DIR + unit)}\\fR")
        out.append(line(desc or "systemd unit shipped with " + prog + "."))

    out.append('.SH "SEE ALSO"')
    out.append(",\n".join(f".BR {page} ({sec})" for page, sec in SEE_ALSO))
    return "\n".join(out) + "\n"


def page_date(arg):
    if arg:
        return arg
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc) if epoch
            else datetime.datetime.now(tz=datetime.timezone.utc))
    return when.strftime("%Y-%m-%d")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", nargs="?", default="slotmgr.cli",
                        help="MODULE[:OBJECT] holding the click group (default: slotmgr.cli)")
    parser.add_argument("--date",
                        help="date for the page footer (default: SOURCE_DATE_EPOCH or today)")
    parser.add_argument("--prog", default="slotmgr", help="program name (default: slotmgr)")
    args = parser.parse_args()
    sys.path.append(os.path.dirname(HERE))  # the source tree, after PYTHONPATH

    root = find_root_command(args.command)
    package = importlib.import_module(args.command.split(".", 1)[0].split(":", 1)[0])
    version = getattr(package, "__version__", "")
    summary = (package.__doc__ or "").split(":", 1)[-1].strip()
    sys.stdout.write(render(root, args.prog, version, page_date(args.date), summary))


if __name__ == "__main__":
    main()
