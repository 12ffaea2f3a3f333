"""The man page kept in the repository (packaging/slotmgr.1) is the one
packaging/gen-manpage.py makes from the code now, and says what it must."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import cast

import click

from slotmgr.cli.help_sections import SectionedCommand
from slotmgr.cli.main import cli, run
from slotmgr.errors import ExitCode
from slotmgr.history import record

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "packaging" / "slotmgr.1"
GENERATOR = REPO / "packaging" / "gen-manpage.py"
REGENERATE = ".venv/bin/python packaging/gen-manpage.py -o packaging/slotmgr.1"


def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


def _section(name: str) -> str:
    text = _page()
    head = f'\n.SH "{name}"\n' if " " in name else f"\n.SH {name}\n"
    assert head in text, f"no {name} section"
    return text.split(head, 1)[1].split("\n.SH ", 1)[0]


def _plain(roff: str) -> str:
    return roff.replace("\\-", "-").replace("\\fB", "").replace("\\fI", "").replace("\\fR", "")


def test_the_committed_page_is_current() -> None:
    made = subprocess.run(
        [sys.executable, str(GENERATOR)], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout == _page(), (
        f"packaging/slotmgr.1 is out of date with the code: regenerate it with {REGENERATE}"
    )


def test_the_page_has_every_section() -> None:
    text = _page()
    assert text.startswith('.\\"') and "\n.TH SLOTMGR 1 " in text
    heads = re.findall(r"^\.SH (.+)$", text, re.MULTILINE)
    assert heads == [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        '"EXIT STATUS"',
        '"JOB RECORD"',
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
        '"SEE ALSO"',
    ]


def test_every_command_and_run_option_is_documented() -> None:
    ctx = click.Context(cli, info_name="slotmgr")
    for name in cli.list_commands(ctx):
        assert f'\n.SS "slotmgr {name}"\n' in _page(), name
    commands = _plain(_section("COMMANDS"))
    run_part = commands.split("slotmgr run [OPTIONS]", 1)[1].split('.SS "slotmgr ', 1)[0]
    for param in run.params:
        # A hidden option is batch-run's own plumbing (--as-step-task), not the user's.
        if isinstance(param, click.Option) and "--help" not in param.opts and not param.hidden:
            for flag in param.opts:
                assert re.search(rf"(^|[ ,]){re.escape(flag)}\b", run_part, re.MULTILINE), flag
    for title in dict.fromkeys(cast(SectionedCommand, run).sections.values()):
        assert f"\n{title}:\n" in run_part, title


def test_exit_status_lists_every_code() -> None:
    section = _section("EXIT STATUS")
    for code in ExitCode:
        assert f"\\fB{int(code)}\\fR ({code.name})" in section, code


def test_job_record_lists_every_result_with_its_meaning() -> None:
    section = _plain(_section("JOB RECORD"))
    for result in record.RESULTS:
        item = re.search(rf"^\.TP\n{re.escape(result)}\n(.+)$", section, re.MULTILINE)
        assert item, result
        assert item.group(1) != result.replace("-", " "), f"{result} has no meaning"


def test_environment_names_every_variable_the_code_reads() -> None:
    read = set()
    for source in (REPO / "slotmgr").rglob("*.py"):
        text = source.read_text()
        read |= set(re.findall(r'environ(?:\.get)?[\[(]"([A-Z_]+)"', text))
        read |= set(re.findall(r'getenv\("([A-Z_]+)"', text))
        read |= set(re.findall(r'^[A-Z_]*ENV[A-Z_]* = "([A-Z_]+)"', text, re.MULTILINE))
    assert {"SLOTMGR_HISTORY_DB", "SLOTMGR_SLOTS_CONF"} <= read
    documented = set(
        re.findall(r"^\.TP\n\\fB([A-Z_]+)\\fR$", _section("ENVIRONMENT"), re.MULTILINE)
    )
    assert read <= documented, f"not in ENVIRONMENT: {read - documented}"


def test_files_names_the_history_and_the_config() -> None:
    section = _plain(_section("FILES"))
    from slotmgr.history import store as history
    from slotmgr.node import slots

    for path in (history.SYSTEM_DB, slots.DEFAULT_CONF):
        assert f"\n{path}\n" in section, path
    if importlib.util.find_spec("slotmgr.node.config") is not None:
        assert "slotmgr.conf\n" in section


def test_examples_and_see_also() -> None:
    examples = _plain(_section("EXAMPLES"))
    assert "slotmgr run --memory-max 4G" in examples
    see_also = _section("SEE ALSO")
    for ref in ("systemd-run (1)", "systemctl (1)", "systemd.resource-control (5)"):
        assert f".BR {ref}" in see_also, ref


def test_groff_renders_the_page_without_warnings() -> None:
    proc = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(PAGE)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
