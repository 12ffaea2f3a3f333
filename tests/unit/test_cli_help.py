"""`slotmgr run --help` in sections (slotmgr.cli.help_sections), under click 7.1 and 8."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import cast

import click
from click.testing import CliRunner

from slotmgr.cli.help_sections import DEFAULT_SECTION, SectionedCommand, option_key
from slotmgr.cli.main import RUN_OPTION_SECTIONS, run
from slotmgr.systemd.properties import LIMIT_OPTIONS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIMITS = "Limits (systemd's syntax)"

# Which option is in which section. Options added later and not named in
# RUN_OPTION_SECTIONS are in DEFAULT_SECTION (checked below, not listed here).
EXPECTED = {
    "Job": ["--unit", "--job-id", "--slice", "--scope", "--slot", "--wait-for-slot"],
    LIMITS: [*(opt.flag for opt in LIMIT_OPTIONS), "--property"],
    "Isolation (on by default)": ["--no-private-tmp", "--no-private-pids"],
    "Identity and environment": ["--setenv", "--working-directory", "--uid", "--gid"],
    "Output": ["--output", "--error", "--append", "--quiet", "--verbose"],
    "Accounting": ["--json"],
    DEFAULT_SECTION: ["--help"],
}


def _sections() -> dict[str, list[str]]:
    ctx = click.Context(run, info_name="run")
    by_section: dict[str, list[str]] = {}
    for param in run.get_params(ctx):
        if isinstance(param, click.Option):
            by_section.setdefault(cast(SectionedCommand, run).section_of(param), []).append(
                option_key(param)
            )
    return by_section


def _help(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "slotmgr", *args, "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_each_option_is_in_its_section() -> None:
    sections = _sections()
    for title, flags in EXPECTED.items():
        assert [f for f in sections.get(title, []) if f in flags] == flags, title
    # Whatever the mapping does not name is in the default section, nowhere else.
    unnamed = [
        option_key(p)
        for p in run.params
        if isinstance(p, click.Option) and option_key(p) not in RUN_OPTION_SECTIONS
    ]
    assert sorted(sections[DEFAULT_SECTION]) == sorted(["--help", *unnamed])


def test_the_mapping_names_only_real_options() -> None:
    flags = {option_key(p) for p in run.params if isinstance(p, click.Option)}
    assert set(RUN_OPTION_SECTIONS) <= flags, set(RUN_OPTION_SECTIONS) - flags


def test_every_limit_option_is_a_limit() -> None:
    for opt in LIMIT_OPTIONS:
        assert RUN_OPTION_SECTIONS[opt.flag] == LIMITS, opt.flag


def test_run_help_shows_the_sections_in_order_and_each_option_once() -> None:
    text = _help("run")
    headings = re.findall(r"^(\S[^:\n]*):$", text, re.MULTILINE)
    assert headings == [t for t in dict.fromkeys(RUN_OPTION_SECTIONS.values())] + [DEFAULT_SECTION]
    assert "Options:" not in text
    # Each option under its own heading, once in the whole help.
    blocks = dict(zip(headings, re.split(r"^\S[^:\n]*:$", text, flags=re.MULTILINE)[1:]))
    for title, flags in EXPECTED.items():
        for flag in flags:
            assert re.search(rf"^  (-\w, )?{re.escape(flag)}\b", blocks[title], re.MULTILINE), (
                title,
                flag,
            )
            assert len(re.findall(rf"^  (-\w, )?{re.escape(flag)}\b", text, re.MULTILINE)) == 1


def test_an_option_nobody_mapped_lands_in_the_default_section() -> None:
    @click.command(cls=SectionedCommand, sections={"--alpha": "First"})
    @click.option("--alpha", is_flag=True, help="Mapped.")
    @click.option("--brand-new", metavar="X", help="Added later, not mapped.")
    @click.argument("args", nargs=-1)
    def cmd(alpha: bool, brand_new: str | None, args: tuple[str, ...]) -> None:
        """A command."""

    result = CliRunner().invoke(cmd, ["--help"])
    assert result.exit_code == 0, result.output
    assert re.search(
        r"First:\n  --alpha +Mapped\.\n\nOther options:\n  --brand-new X +Added later",
        result.output,
    ), result.output
    assert "ARGS" not in result.output.split("Other options:")[1]


def test_the_columns_line_up_across_sections() -> None:
    text = _help("run")
    starts = {
        m.start(2) - m.start(0)
        for m in re.finditer(r"^(  -\S.{0,28}?) {2,}(\S)", text, re.MULTILINE)
    }
    assert len(starts) == 1, starts
