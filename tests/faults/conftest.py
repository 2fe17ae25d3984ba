"""Fault tests: servers are killed and broken, so they run on a testbed of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from sqlalchemy import Engine

from offload.db import Database
from offload.pytest import OwnTestbed, WaitForReplication, factories
from offload.testbed.native import NativeTopology
from offload.testing import table_checksums
from offload.tracing import QueryTrace
from offload.waiting import Deadline, wait_for

from ..integration.conftest import new_instance


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


#: servers of the fault tests' own (killed and broken here, never the session's)
faults_testbed = factories.native_testbed(replicas=1, scope="package")
#: the fixtures built on a testbed (offload_db, offload_primary_admin...) use these servers
offload_testbed = factories.testbed("faults_testbed", scope="package")


@pytest.fixture(scope="package")
def topology(faults_testbed: OwnTestbed) -> NativeTopology:
    """The fault tests' servers, to kill and start one."""
    return faults_testbed.topology


@pytest.fixture
def heal(topology: NativeTopology) -> Iterator[None]:
    """Whatever a test broke, the next one starts with both servers up and replicating."""
    yield
    topology.up()


#: ``assert_same_data(db)``: replicated, and the same nova tables on primary and replica
AssertSameData = Callable[[Database], None]


@pytest.fixture
def assert_same_data(
    offload_primary_admin: Engine,
    offload_replica_admin: list[Engine],
    offload_wait_for_replication: WaitForReplication,
) -> AssertSameData:
    """Replication caught up, the nova tables are identical on primary and replica."""

    def check(db: Database) -> None:
        offload_wait_for_replication(db, timeout=60)
        database = db.settings.require_connection().database
        assert database
        expected = table_checksums(offload_primary_admin, database)
        assert all(value is not None for value in expected.values()), expected
        assert wait_for(
            lambda: table_checksums(offload_replica_admin[0], database) == expected,
            Deadline(30),
            interval=0.1,
        ), (expected, table_checksums(offload_replica_admin[0], database))

    return check


def fit(db: Database, name: str = "replica0") -> bool:
    """The guard's reading of ``name``: usable and within max_lag."""
    reading = db.guard.readings().get(name)
    return bool(
        reading
        and reading.usable
        and reading.lag is not None
        and reading.lag <= db.settings.replica.max_lag
    )


def replica_route_targets(trace: QueryTrace, task: str, run: str) -> set[str]:
    """Where the run's replica-route SELECTs really went (``primary`` after a fallback)."""
    return {
        r.target
        for r in trace.for_task(task)
        if r.run == run and r.route == "replica" and r.verb == "SELECT"
    }


def seed_old(db: Database, count: int = 20) -> None:
    """Instances launched long ago: every audit period counts them."""
    with db.writer() as session:
        session.add_all(new_instance(launched_at=datetime(2000, 1, 1)) for _ in range(count))
