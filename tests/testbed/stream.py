"""Splitting the guest's output stream from its end marker.

After the command exits, the guest's runner sends ``<token> <status>\\n``
down the same port. The token is random per run, so command output cannot
fake it; seeing it proves everything before it has arrived.
"""

from __future__ import annotations

import re
import secrets


def new_token() -> str:
    return "testbed-end-" + secrets.token_hex(16)


class EndMarkerScanner:
    """Feed raw chunks; get back the bytes to pass on, until the marker."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._pending = b""  # bytes that might be the start of the marker
        self.status: int | None = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Return the command output in data; hold back a possible partial marker."""
        if self.done:
            return b""
        buf = self._pending + data
        at = buf.find(self._token)
        if at >= 0:
            match = re.match(rb" (\d+)\n", buf[at + len(self._token) :])
            if match is None:
                if b"\n" in buf[at:]:  # malformed: treat as output, keep going
                    self._pending = b""
                    return buf
                self._pending = buf[at:]  # marker not complete yet
                return buf[:at]
            self.status = int(match.group(1))
            self.done = True
            self._pending = b""
            return buf[:at]
        keep = self._partial_suffix(buf)
        self._pending = buf[len(buf) - keep :] if keep else b""
        return buf[: len(buf) - keep]

    def _partial_suffix(self, buf: bytes) -> int:
        """Length of the longest tail of buf that starts the token."""
        for length in range(min(len(buf), len(self._token) - 1), 0, -1):
            if self._token.startswith(buf[-length:]):
                return length
        return 0

    def flush(self) -> bytes:
        """Whatever was held back, once no more data will come."""
        rest, self._pending = self._pending, b""
        return rest
