"""The one exception type the test bed raises for its own failures."""

from __future__ import annotations


class TestbedError(RuntimeError):
    """The test bed itself failed (build, boot, timeout, lost status).

    Distinct from the command's own failure, which is just a non-zero exit
    status: callers must never mistake this for a passing or skipped run.
    """

    # Tell pytest this is not a test class despite the name.
    __test__ = False
