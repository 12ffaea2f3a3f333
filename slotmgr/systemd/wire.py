"""The (name, signature, value) triples of a unit's property list.

Kept apart from `slotmgr.systemd.messages` so that building and checking properties
(the CLI's whole option table) does not import jeepney: every `slotmgr`
invocation pays for what it imports, and under emulation that adds up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Property:
    """One (name, D-Bus signature, value) triple of a unit's property list."""

    name: str
    signature: str
    value: Any

    def __post_init__(self) -> None:
        if not self.name or not self.name[0].isupper() or not self.name.isalnum():
            raise ValueError(f"not a systemd property name: {self.name!r}")

    def as_variant(self) -> tuple[str, tuple[str, Any]]:
        return (self.name, (self.signature, self.value))
