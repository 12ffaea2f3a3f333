"""Find the Debian mirror the host's apt already uses.

The mirror is never written into the repository: it is read at run time
from the host's apt configuration, so the test bed follows whatever mirror
(or proxy) the machine is set up for.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import TestbedError

MIRROR_ENV = "SLOTMGR_TESTBED_MIRROR"
_SCHEMES = ("http://", "https://", "file:/")


@dataclass(frozen=True)
class Source:
    """One deb source: a repository URI and the suites it serves."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_deb822(text: str) -> list[Source]:
    """Parse deb822 ``.sources`` text (stanzas separated by blank lines)."""
    sources: list[Source] = []
    for stanza in _stanzas(text):
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        suites = tuple(stanza.get("suites", "").split())
        components = tuple(stanza.get("components", "").split())
        for uri in stanza.get("uris", "").split():
            sources.append(Source(uri, suites, components))
    return sources


def _stanzas(text: str) -> Iterable[dict[str, str]]:
    fields: dict[str, str] = {}
    key: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("#"):
            continue  # comments may sit anywhere, even inside a stanza
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif line[0] in " \t" and key is not None:
            fields[key] += " " + line.strip()  # folded continuation line
        elif ":" in line:
            name, value = line.split(":", 1)
            key = name.strip().lower()
            fields[key] = value.strip()
    if fields:
        yield fields


def parse_one_line(text: str) -> list[Source]:
    """Parse the classic ``sources.list`` format (``deb [opts] uri suite comp...``)."""
    sources: list[Source] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        rest = words[1:]
        if rest[0].startswith("["):  # skip the [ option=value ... ] block
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 2:
            sources.append(Source(rest[0], (rest[1],), tuple(rest[2:])))
    return sources


def choose_mirror(sources: list[Source]) -> str | None:
    """The main archive: the first URI serving a suite that is not -security."""
    for source in sources:
        if not source.uri.startswith(_SCHEMES):
            continue
        if any(not suite.endswith("-security") for suite in source.suites):
            return source.uri.rstrip("/")
    return None


def host_sources(etc_apt: Path = Path("/etc/apt")) -> list[Source]:
    sources: list[Source] = []
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        sources += parse_deb822(path.read_text(errors="replace"))
    one_line = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            sources += parse_one_line(path.read_text(errors="replace"))
    return sources


def mirror_url() -> str:
    """The Debian mirror URL to build root images from."""
    override = os.environ.get(MIRROR_ENV)
    if override:
        return override.rstrip("/")
    mirror = choose_mirror(host_sources())
    if mirror is None:
        raise TestbedError(
            f"no Debian mirror found in the host's apt sources (set {MIRROR_ENV} to a mirror URL)"
        )
    return mirror
