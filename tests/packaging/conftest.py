import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: builds or installs something real (seconds to minutes); deselect with -m 'not slow'",
    )
