"""Help in sections: `slotmgr run --help` groups its many options by topic.

click (7.1 and 8) prints one "Options:" list; click-option-group would add a
dependency. A `SectionedCommand` takes a mapping option flag -> section title
and writes one list per section, in the mapping's order of first appearance.
An option the mapping does not name (one added later) lands in the default
section, so a new option never breaks the help; the man page generator
(packaging/gen-manpage.py) uses the same sections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

DEFAULT_SECTION = "Other options"


def option_key(param: click.Parameter) -> str:
    """The name an option is known by in a section mapping: its first long flag."""
    flags = [*param.opts, *param.secondary_opts]
    return next((f for f in flags if f.startswith("--")), flags[0] if flags else param.name or "")


class SectionedCommand(click.Command):
    """A click command whose options are listed in sections (see the module doc)."""

    def __init__(self, *args: Any, sections: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sections = dict(sections)

    def section_of(self, param: click.Parameter) -> str:
        return self.sections.get(option_key(param), DEFAULT_SECTION)

    def option_sections(self, ctx: click.Context) -> list[tuple[str, list[tuple[str, str]]]]:
        """[(title, [(options, help), ...]), ...] in the order the help shows them."""
        order = list(dict.fromkeys(self.sections.values()))
        if DEFAULT_SECTION not in order:
            order.append(DEFAULT_SECTION)
        grouped: dict[str, list[tuple[str, str]]] = {title: [] for title in order}
        for param in self.get_params(ctx):
            if not isinstance(param, click.Option):
                continue  # arguments are in the usage line (click 8.5 gives them records)
            record = param.get_help_record(ctx)
            if record is not None:
                grouped[self.section_of(param)].append(record)
        return [(title, rows) for title, rows in grouped.items() if rows]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections = self.option_sections(ctx)
        # One column width across the sections, so they line up as one table.
        width = _first_column_width([row for _, rows in sections for row in rows])
        for title, rows in sections:
            with formatter.section(title):
                formatter.write_dl([(first.ljust(width), second) for first, second in rows])


def _first_column_width(rows: Sequence[tuple[str, str]], col_max: int = 30) -> int:
    # click's write_dl puts a longer first column on a line of its own.
    return min(max((len(first) for first, _ in rows), default=0), col_max)
