"""Replica killed, primary restarted, replication broken: the tasks survive, nothing is lost."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pytest
from sqlalchemy import Engine, select, text

from offload import replication
from offload.compute.driver import FakeDriver
from offload.compute.notifier import MemoryNotifier
from offload.compute.usage import AUDIT_TASK
from offload.config import ComputeSettings, LagPolicy, ReplicaSettings, Settings
from offload.db import Database
from offload.errors import ConnectionLost
from offload.monitor import replica_views
from offload.pytest import ComputeFactory, DbFactory, WaitForReplication
from offload.schema import BandwidthUsage, Instance, TaskLog
from offload.testbed import TestbedInfo
from offload.testbed.native import NativeTopology
from offload.tracing import QueryTrace, task_scope
from offload.waiting import Deadline, wait_for

from .conftest import AssertSameData, fit, replica_route_targets, seed_old

BANDWIDTH = "_poll_bandwidth_usage"
ALL_ON = ComputeSettings(instance_usage_audit=True, volume_usage_poll_interval=60)


def test_replica_killed_mid_read_then_restarted(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    topology: NativeTopology,
    offload_replica_admin: list[Engine],
    offload_wait_for_replication: WaitForReplication,
    offload_trace: QueryTrace,
    heal: None,
    assert_same_data: AssertSameData,
) -> None:
    db = offload_db_factory(settings=Settings(replica=ReplicaSettings(max_lag=0.5)))
    seed_old(db)
    offload_wait_for_replication(db)
    failure: list[BaseException] = []

    def slow_read() -> None:
        try:
            with task_scope("slow_read"), db.reader(allow_replica=True) as session:
                session.execute(text("SELECT SLEEP(20)"))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
            failure.append(exc)

    reader = threading.Thread(target=slow_read)
    reader.start()

    def sleeping_on_replica() -> bool:
        with offload_replica_admin[0].connect() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                        "WHERE INFO LIKE '/* offload task=slow_read%'"
                    )
                ).scalar()
            )

    assert wait_for(sleeping_on_replica, Deadline(10), interval=0.02)
    topology.kill("replica0")
    reader.join(30)
    assert not reader.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], ConnectionLost), failure
    assert db.replicas[0].engine.pool.checkedout() == 0  # type: ignore[attr-defined]

    manager = offload_compute_factory(db, options=ALL_ON)
    report = manager.run(BANDWIDTH)  # lag_policy primary: the run completes
    assert report.error is None
    assert replica_route_targets(offload_trace, BANDWIDTH, report.run) == {"primary"}
    assert report.details["routing"]["fallbacks"] == {"unreachable": 1}

    topology.start("replica0")
    assert wait_for(lambda: fit(db), Deadline(60), interval=0.05)
    report = manager.run(BANDWIDTH)
    assert replica_route_targets(offload_trace, BANDWIDTH, report.run) == {"replica0"}
    assert db.primary.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert_same_data(db)


class _CrashingNotifier(MemoryNotifier):
    """Kills the primary at the first notification — mid-audit — and restarts it."""

    def __init__(self, host: str, topology: NativeTopology) -> None:
        super().__init__(host)
        self.topology = topology
        self.restarter: threading.Thread | None = None

    def notify(self, event_type: str, payload: Mapping[str, object]) -> None:
        if self.restarter is None:
            self.topology.kill("primary")
            self.restarter = threading.Thread(target=self.topology.start, args=("primary",))
            self.restarter.start()
        super().notify(event_type, payload)


def test_primary_killed_mid_audit_leaves_one_done_row(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    topology: NativeTopology,
    offload_wait_for_replication: WaitForReplication,
    heal: None,
    assert_same_data: AssertSameData,
) -> None:
    db = offload_db_factory()
    seed_old(db, 5)
    offload_wait_for_replication(db)
    manager = offload_compute_factory(db, options=ALL_ON)
    notifier = _CrashingNotifier("compute-1", topology)
    manager.compute.notifier = notifier
    report = manager.run("_instance_usage_audit")
    assert notifier.restarter is not None
    notifier.restarter.join(60)
    assert report.error is None and report.details["attempts"] >= 2, report.as_dict()
    with db.reader() as session:
        rows = session.execute(select(TaskLog.state).where(TaskLog.task_name == AUDIT_TASK)).all()
    assert [tuple(r) for r in rows] == [("DONE",)]
    offload_wait_for_replication(db, timeout=60)
    again = manager.run("_instance_usage_audit")  # the period is done: nothing to redo
    assert again.skipped and "DONE" in again.skipped
    assert_same_data(db)


def test_primary_restarted_during_bandwidth_polls_neither_loses_nor_doubles(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    topology: NativeTopology,
    offload_wait_for_replication: WaitForReplication,
    heal: None,
    assert_same_data: AssertSameData,
) -> None:
    db = offload_db_factory()
    seed_old(db, 30)
    offload_wait_for_replication(db)
    manager = offload_compute_factory(db, options=ALL_ON)
    manager.compute.driver = FakeDriver("compute-1", seed=7, counter_reset_rate=0.0)
    baseline = {
        (c["uuid"], c["mac_address"]): c["bw_in"]  # the counters' first values
        for c in FakeDriver("compute-1", seed=7, counter_reset_rate=0.0).get_all_bw_counters(
            _uuids(db)
        )
    }
    manager.run(BANDWIDTH)  # baselines
    offload_wait_for_replication(db)
    done = threading.Event()
    reports = []

    def poll() -> None:
        while not done.is_set():
            reports.append(manager.run(BANDWIDTH))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        assert wait_for(lambda: len(reports) >= 2, Deadline(30), interval=0.01)
        topology.kill("primary")
        topology.start("primary")
        seen = len(reports)
        assert wait_for(lambda: len(reports) >= seen + 2, Deadline(90), interval=0.05)
    finally:
        done.set()
        poller.join(120)
    assert all(r.error is None for r in reports)
    assert any(r.details["attempts"] > 1 for r in reports), [r.details for r in reports]
    offload_wait_for_replication(db, timeout=60)
    with db.reader() as session:
        rows = session.scalars(select(BandwidthUsage)).all()
    assert rows
    for row in rows:  # growth since the baseline, counted exactly once
        assert row.uuid and row.mac
        assert row.bw_in == (row.last_ctr_in or 0) - baseline[(row.uuid, row.mac)], row.uuid
    assert_same_data(db)


def _uuids(db: Database) -> list[str]:
    with db.reader() as session:
        return list(session.scalars(select(Instance.uuid).where(Instance.deleted == 0)))


def test_broken_replication_is_reported_and_the_tasks_fall_back(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    offload_testbed: TestbedInfo,
    offload_replica_admin: list[Engine],
    offload_wait_for_replication: WaitForReplication,
    offload_trace: QueryTrace,
    heal: None,
    assert_same_data: AssertSameData,
) -> None:
    db = offload_db_factory(settings=Settings(replica=ReplicaSettings(max_lag=0.3)))
    seed_old(db, 3)
    offload_wait_for_replication(db)
    database = db.settings.require_connection().database
    with db.reader() as session:
        next_id = int(session.scalar(select(Instance.id).order_by(Instance.id.desc())) or 0) + 1
    with (
        offload_replica_admin[0].connect() as conn,
        replication.admin_writes(conn, offload_testbed.flavor),
    ):
        conn.execute(text("SET SESSION sql_log_bin = 0"))  # a row written on the replica
        conn.execute(
            text(
                f"INSERT INTO `{database}`.instances (id, uuid, deleted) "
                f"VALUES ({next_id}, 'written-on-the-replica', 0)"
            )
        )
        conn.commit()
    seed_old(db, 1)  # the primary's row with that id stops the replica's applier

    def applier_stopped() -> bool:
        with offload_replica_admin[0].connect() as conn:
            found = replication.replica_status(conn, offload_testbed.flavor)
        return found is not None and found.sql_running == "No"

    assert wait_for(applier_stopped, Deadline(30), interval=0.05)
    views = replica_views(db, offload_testbed.replica_admin_urls())
    assert views[0]["sql_running"] == "No" and "Duplicate entry" in (views[0]["last_error"] or "")
    assert wait_for(lambda: not fit(db), Deadline(10), interval=0.05)
    manager = offload_compute_factory(db, options=ALL_ON)
    report = manager.run(BANDWIDTH)
    assert report.error is None and replica_route_targets(offload_trace, BANDWIDTH, report.run) == {
        "primary"
    }

    with offload_replica_admin[0].connect() as conn:  # the operator's repair
        with replication.admin_writes(conn, offload_testbed.flavor):
            conn.execute(text("SET SESSION sql_log_bin = 0"))
            conn.execute(
                text(f"DELETE FROM `{database}`.instances WHERE uuid = 'written-on-the-replica'")
            )
            conn.commit()
        replication.start_replica(conn, offload_testbed.flavor, sql_thread_only=True)
    assert_same_data(db)
    assert wait_for(lambda: fit(db), Deadline(10), interval=0.05)
    report = manager.run(BANDWIDTH)
    assert replica_route_targets(offload_trace, BANDWIDTH, report.run) == {"replica0"}


@pytest.mark.parametrize("policy", ["primary", "skip"])
def test_long_pause_holds_the_guard_and_catches_up(
    policy: str,
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    offload_testbed: TestbedInfo,
    offload_replica_admin: list[Engine],
    offload_wait_for_replication: WaitForReplication,
    heal: None,
    assert_same_data: AssertSameData,
) -> None:
    db = offload_db_factory(
        settings=Settings(replica=ReplicaSettings(max_lag=0.3, lag_policy=LagPolicy(policy)))
    )
    seed_old(db, 10)
    offload_wait_for_replication(db)
    manager = offload_compute_factory(db, options=ALL_ON)
    with offload_replica_admin[0].connect() as conn:
        replication.stop_replica(conn, offload_testbed.flavor, sql_thread_only=True)
    try:
        for _ in range(3):  # writes keep coming while the replica is paused
            seed_old(db, 5)
            assert wait_for(lambda: not fit(db), Deadline(10), interval=0.05)
            report = manager.run(BANDWIDTH)
            assert report.error is None
            routing = report.details["routing"]
            assert routing["fallbacks"] or routing["skips"], routing
    finally:
        with offload_replica_admin[0].connect() as conn:
            replication.start_replica(conn, offload_testbed.flavor, sql_thread_only=True)
    assert_same_data(db)
    assert wait_for(lambda: fit(db), Deadline(10), interval=0.05)
