"""Tests of the compose stack itself: they run with ``--testbed=compose`` only."""

from __future__ import annotations

import pytest

from offload.pytest import RunOptions


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    compose = RunOptions.of(config).backend == "compose"  # --testbed or its ini twin
    skip = pytest.mark.skip(
        reason="the compose stack: `make test-compose` (pytest --testbed=compose)"
    )
    # role changes move the stack's servers (the last one leaves a diverged server): last
    items.sort(key=lambda item: "tests/compose/test_roles.py" in str(item.fspath))
    for item in items:
        if "tests/compose" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if not compose:
                item.add_marker(skip)
