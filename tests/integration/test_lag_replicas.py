"""Two replicas on a testbed of this module's own: a bad replica never blocks the good one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from offload import replication
from offload.config import ReplicaSettings, ServiceSettings, Settings
from offload.db import Database, session_target
from offload.lag import LagProbe
from offload.service import Service
from offload.testbed import TestbedInfo
from offload.testbed.native import NativeTopology
from offload.tracing import QueryTrace
from offload.waiting import Deadline, wait_for

from .conftest import ALL_ON, new_instance

TASK = "_poll_bandwidth_usage"


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeTopology]:
    topology = NativeTopology(
        Path(tmp_path_factory.mktemp("two-replicas")), port=0, replicas=2, bind_to_parent=True
    )
    topology.up()
    yield topology
    topology.down()


@pytest.fixture(scope="module")
def testbed(topology: NativeTopology) -> TestbedInfo:
    """This module's testbed (overrides the session's one-replica testbed)."""
    return topology.up()


def _lag_over(probe: LagProbe, seconds: float) -> bool:
    reading = probe.read()
    return reading.lag is None or reading.lag > seconds


def _set_applier(engine: Engine, flavor: replication.Flavor, *, running: bool) -> None:
    with engine.connect() as conn:
        if running:
            replication.start_replica(conn, flavor, sql_thread_only=True)
        else:
            replication.stop_replica(conn, flavor, sql_thread_only=True)


def _targets(db: Database, reads: int = 5) -> set[str]:
    targets = set()
    for _ in range(reads):
        with db.reader(allow_replica=True) as session:
            targets.add(session_target(session).name)
    return targets


def test_reads_prefer_a_fit_replica_and_avoid_a_paused_one(
    db_factory,
    replica_admin: list[Engine],
    testbed: TestbedInfo,
    wait_for_replication,
) -> None:
    db = db_factory(settings=Settings(replica=ReplicaSettings(max_lag=0.2)))
    wait_for_replication(db)
    assert _targets(db) <= {"replica0", "replica1"}
    _set_applier(replica_admin[0], testbed.flavor, running=False)
    try:
        assert wait_for(
            lambda: _lag_over(db.guard.selector.probes["replica0"], 0.3),
            Deadline(10),
            interval=0.02,
        )
        assert _targets(db, reads=10) == {"replica1"}
        assert db.routing.fallbacks == {}
    finally:
        _set_applier(replica_admin[0], testbed.flavor, running=True)
    wait_for_replication(db)


def test_killed_replica_degrades_then_returns_without_a_restart(
    db_factory,
    compute_factory,
    topology: NativeTopology,
    replica_admin: list[Engine],
    testbed: TestbedInfo,
    wait_for_replication,
    trace: QueryTrace,
) -> None:
    db = db_factory(settings=Settings(replica=ReplicaSettings(max_lag=0.2)))
    with db.writer() as session:
        session.add(new_instance())
    wait_for_replication(db)
    database = db.settings.require_connection().database or "nova"
    service = Service(
        testbed.settings(
            database=database,
            base=Settings(
                host="compute-1",
                compute=ALL_ON,
                replica=ReplicaSettings(max_lag=0.2),
                service=ServiceSettings(http_port=0),
            ),
        )
    )
    manager = compute_factory(db, options=ALL_ON)
    try:
        topology.kill("replica1")
        _set_applier(replica_admin[0], testbed.flavor, running=False)  # and the other lags
        assert wait_for(
            lambda: _lag_over(db.guard.selector.probes["replica0"], 0.3),
            Deadline(10),
            interval=0.02,
        )
        report = manager.run(TASK)  # lag_policy primary: the run completes on the primary
        assert report.error is None
        selects = [
            r
            for r in trace.for_task(TASK)
            if r.run == report.run and r.route == "replica" and r.verb == "SELECT"
        ]
        assert selects and {r.target for r in selects} == {"primary"}
        assert report.details["routing"]["fallbacks"] == {"lag": 1}  # one reader session
        healthy, reasons = service.health()
        assert healthy and any("replica1 unreachable" in r for r in reasons), reasons

        topology.start("replica1")  # its data and replication position survive
        probe = db.guard.selector.probes["replica1"]
        assert wait_for(lambda: not _lag_over(probe, 0.1), Deadline(60), interval=0.05)
        report = manager.run(TASK)
        selects = [
            r
            for r in trace.for_task(TASK)
            if r.run == report.run and r.route == "replica" and r.verb == "SELECT"
        ]
        assert selects and {r.target for r in selects} == {"replica1"}, trace.table(TASK)
        _set_applier(replica_admin[0], testbed.flavor, running=True)
        assert wait_for(lambda: service.health() == (True, []), Deadline(30), interval=0.1)
    finally:
        _set_applier(replica_admin[0], testbed.flavor, running=True)
        service.close()
