"""Two replicas on a testbed of this module's own: a bad replica never blocks the good one."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from offload import replication
from offload.config import ReplicaSettings, ServiceSettings, Settings
from offload.db import Database, session_target
from offload.lag import LagProbe
from offload.pytest import ComputeFactory, DbFactory, OwnTestbed, WaitForReplication, factories
from offload.service import Service
from offload.testbed import TestbedInfo
from offload.testbed.native import NativeTopology
from offload.tracing import QueryTrace
from offload.waiting import Deadline, wait_for

from .conftest import ALL_ON, new_instance

TASK = "_poll_bandwidth_usage"


#: two replicas of this module's own (replica1 is killed here)
two_replicas = factories.native_testbed(replicas=2, scope="module")
offload_testbed = factories.testbed("two_replicas", scope="module")


@pytest.fixture(scope="module")
def topology(two_replicas: OwnTestbed) -> NativeTopology:
    return two_replicas.topology


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
    offload_db_factory: DbFactory,
    offload_replica_admin: list[Engine],
    offload_testbed: TestbedInfo,
    offload_wait_for_replication: WaitForReplication,
) -> None:
    db = offload_db_factory(settings=Settings(replica=ReplicaSettings(max_lag=0.2)))
    offload_wait_for_replication(db)
    assert _targets(db) <= {"replica0", "replica1"}
    _set_applier(offload_replica_admin[0], offload_testbed.flavor, running=False)
    try:
        assert wait_for(
            lambda: _lag_over(db.guard.selector.probes["replica0"], 0.3),
            Deadline(10),
            interval=0.02,
        )
        assert _targets(db, reads=10) == {"replica1"}
        assert db.routing.fallbacks == {}
    finally:
        _set_applier(offload_replica_admin[0], offload_testbed.flavor, running=True)
    offload_wait_for_replication(db)


def test_killed_replica_degrades_then_returns_without_a_restart(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    topology: NativeTopology,
    offload_replica_admin: list[Engine],
    offload_testbed: TestbedInfo,
    offload_wait_for_replication: WaitForReplication,
    offload_trace: QueryTrace,
) -> None:
    db = offload_db_factory(settings=Settings(replica=ReplicaSettings(max_lag=0.2)))
    with db.writer() as session:
        session.add(new_instance())
    offload_wait_for_replication(db)
    database = db.settings.require_connection().database or "nova"
    service = Service(
        offload_testbed.settings(
            database=database,
            base=Settings(
                host="compute-1",
                compute=ALL_ON,
                replica=ReplicaSettings(max_lag=0.2),
                service=ServiceSettings(http_port=0),
            ),
        )
    )
    manager = offload_compute_factory(db, options=ALL_ON)
    try:
        topology.kill("replica1")
        _set_applier(
            offload_replica_admin[0], offload_testbed.flavor, running=False
        )  # and the other lags
        assert wait_for(
            lambda: _lag_over(db.guard.selector.probes["replica0"], 0.3),
            Deadline(10),
            interval=0.02,
        )
        report = manager.run(TASK)  # lag_policy primary: the run completes on the primary
        assert report.error is None
        selects = [
            r
            for r in offload_trace.for_task(TASK)
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
            for r in offload_trace.for_task(TASK)
            if r.run == report.run and r.route == "replica" and r.verb == "SELECT"
        ]
        assert selects and {r.target for r in selects} == {"replica1"}, offload_trace.table(TASK)
        _set_applier(offload_replica_admin[0], offload_testbed.flavor, running=True)
        assert wait_for(lambda: service.health() == (True, []), Deadline(30), interval=0.1)
    finally:
        _set_applier(offload_replica_admin[0], offload_testbed.flavor, running=True)
        service.close()
