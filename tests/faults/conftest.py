"""Fault tests: servers are killed and broken, so they run on a testbed of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from offload.db import Database
from offload.testbed import TestbedInfo
from offload.testbed.native import NativeTopology
from offload.testing import table_checksums
from offload.waiting import Deadline, wait_for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="package")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeTopology]:
    topology = NativeTopology(Path(tmp_path_factory.mktemp("faults")), port=0, bind_to_parent=True)
    topology.up()
    yield topology
    topology.down()


@pytest.fixture(scope="package")
def testbed(topology: NativeTopology) -> TestbedInfo:
    """The fault tests' own testbed (overrides the session's)."""
    return topology.up()


@pytest.fixture
def heal(topology: NativeTopology) -> Iterator[None]:
    """Whatever a test broke, the next one starts with both servers up and replicating."""
    yield
    topology.up()


@pytest.fixture
def assert_same_data(
    primary_admin: Engine, replica_admin: list[Engine], wait_for_replication
) -> Callable[[Database], None]:
    """Replication caught up, the nova tables are identical on primary and replica."""

    def check(db: Database) -> None:
        wait_for_replication(db, timeout=60)
        database = db.settings.require_connection().database
        assert database
        expected = table_checksums(primary_admin, database)
        assert all(value is not None for value in expected.values()), expected
        assert wait_for(
            lambda: table_checksums(replica_admin[0], database) == expected,
            Deadline(30),
            interval=0.1,
        ), (expected, table_checksums(replica_admin[0], database))

    return check
