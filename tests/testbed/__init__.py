"""Real-systemd test bed: throwaway QEMU guests whose PID 1 is systemd.

CLI: ``python3 -m tests.testbed {build,run,shell}`` (see __main__.py).
API: ``run_in_guest(guest, argv, env, timeout) -> int`` raises TestbedError
when the test bed itself fails; the CLI turns that into exit status 3.
"""

from __future__ import annotations

from .build import ensure_built
from .errors import TestbedError
from .guests import GUESTS
from .runner import run_in_guest

# Exit status of the CLI when the test bed itself failed (no boot, timeout,
# no status). The guest command's own status is passed through unchanged.
EXIT_TESTBED_FAILURE = 3

__all__ = ["EXIT_TESTBED_FAILURE", "GUESTS", "TestbedError", "ensure_built", "run_in_guest"]
