"""Guest console logs: where they go and how to quote their end."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .paths import log_dir

KEEP_LOGS = 20  # console logs kept per guest
TAIL_LINES = 25
# Colour codes, cursor queries and other escape sequences systemd writes.
_ANSI = re.compile(r"\x1b(\[[0-9;?!]*[ -/]*[@-~]|\][^\x07]*\x07|[@-~])")


def new_console_log(guest: str) -> Path:
    """A fresh log path; the oldest logs of the guest beyond KEEP_LOGS go."""
    logs = log_dir()
    old = sorted(logs.glob(f"console-{guest}-*.log"))
    for stale in old[: max(0, len(old) - KEEP_LOGS + 1)]:
        stale.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return logs / f"console-{guest}-{stamp}-{os.getpid()}.log"


def console_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last non-empty lines of a console log, as plain text."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    text = _ANSI.sub("", text)
    cleaned = ["".join(ch for ch in line if ch.isprintable()) for line in text.splitlines()]
    return [line for line in cleaned if line.strip()][-lines:]
