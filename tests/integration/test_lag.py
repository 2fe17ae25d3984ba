"""Lag-aware replica reads on a real replica: heartbeat lag, the guard's policies, causal reads."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select, text

from offload import replication
from offload.compute.manager import ComputeManager
from offload.config import LagPolicy, ReplicaSettings, ServiceSettings, Settings
from offload.db import Database, session_target
from offload.lag import LagProbe
from offload.pytest import ComputeFactory, DbFactory, WaitForReplication
from offload.schema import Instance
from offload.service import Service
from offload.testbed import TestbedInfo
from offload.tracing import QueryTrace, task_scope
from offload.waiting import Deadline, wait_for

from .conftest import ALL_ON, PausedApplier, new_instance

TASK = "_poll_bandwidth_usage"
SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "status.schema.json"


def _probe(db: Database, name: str = "replica0") -> LagProbe:
    return db.guard.selector.probes[name]


def _lag_under(probe: LagProbe, seconds: float) -> bool:
    reading = probe.read()
    return reading.lag is not None and reading.lag < seconds


def _settings(**replica: object) -> Settings:
    return Settings(replica=ReplicaSettings(**replica))  # type: ignore[arg-type]


def test_heartbeat_lag_grows_at_wall_clock_rate_and_recovers(
    offload_db: Database, paused_applier: PausedApplier
) -> None:
    probe = _probe(offload_db)
    assert wait_for(lambda: _lag_under(probe, 0.05), Deadline(10))
    with paused_applier():  # the heartbeat keeps writing on the primary meanwhile
        # each reading bracketed by the clock: the probe's own round trip may be slow
        latest: list[tuple[float, float, float]] = []

        def lag_over(threshold: float) -> bool:
            before = time.monotonic()
            reading = probe.read()
            after = time.monotonic()
            assert reading.lag is not None
            latest[:] = [(reading.lag, before, after)]
            return reading.lag > threshold

        # lag counts from the first heartbeat the replica lacks: once one is missing
        # (lag > 0), the reference is fixed and the lag grows with the clock exactly
        assert wait_for(lambda: lag_over(0.0), Deadline(10), interval=0.01)
        first, first_before, first_after = latest[0]
        assert wait_for(lambda: lag_over(first + 1.0), Deadline(10), interval=0.02)
        lag, last_before, last_after = latest[0]
        # the lag grew by the time between the two readings, which lies between the
        # brackets' inner and outer ends
        growth = lag - first
        shortest, longest = last_before - first_after, last_after - first_before
        assert shortest - 0.001 <= growth <= longest + 0.001, (growth, shortest, longest)
    resumed = time.monotonic()
    assert wait_for(lambda: _lag_under(probe, 0.010), Deadline(10), interval=0.01)
    assert time.monotonic() - resumed < 5


#: ``lagging(policy)`` → (db, manager): max_lag 0.2, one instance, replicated
Lagging = Callable[[LagPolicy], tuple[Database, ComputeManager]]


@pytest.fixture
def lagging(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    offload_wait_for_replication: WaitForReplication,
    paused_applier: PausedApplier,
) -> Lagging:
    """(policy) → (db, manager, pause): max_lag 0.2, one instance on compute-1, replicated."""

    def make(policy: LagPolicy) -> tuple[Database, ComputeManager]:
        db = offload_db_factory(settings=_settings(max_lag=0.2, lag_policy=policy))
        with db.writer() as session:
            session.add(new_instance())
        offload_wait_for_replication(db)
        return db, offload_compute_factory(db, options=ALL_ON)

    return make


@pytest.mark.parametrize("policy", list(LagPolicy))
def test_lag_policy_applies_beyond_max_lag_and_the_replica_returns(
    policy: LagPolicy,
    lagging: Lagging,
    paused_applier: PausedApplier,
    offload_wait_for_replication: WaitForReplication,
    offload_trace: QueryTrace,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db, manager = lagging(policy)
    probe = _probe(db)
    with paused_applier(), caplog.at_level(logging.WARNING, logger="offload.staleness"):
        assert wait_for(lambda: not _lag_under(probe, 0.3), Deadline(10), interval=0.02)
        report = manager.run(TASK)
        selects = [
            r
            for r in offload_trace.for_task(TASK)
            if r.run == report.run and r.verb == "SELECT" and r.route == "replica"
        ]
        routing = report.details["routing"]
        if policy is LagPolicy.PRIMARY:
            assert selects and all(r.target == "primary" for r in selects), offload_trace.table(
                TASK
            )
            assert routing["fallbacks"].get("lag", 0) >= 1
        elif policy is LagPolicy.SKIP:
            assert report.skipped and "no replica fit" in report.skipped
            assert selects == []
            assert routing["skips"] == {"lag": 1}
        else:
            assert selects and all(r.target == "replica0" for r in selects), offload_trace.table(
                TASK
            )
            assert routing["stale_reads"] >= 1
            assert "stale read: replica0" in caplog.text
    offload_wait_for_replication(db)  # resumed and caught up: the very next run is on the replica
    report = manager.run(TASK)
    selects = [
        r
        for r in offload_trace.for_task(TASK)
        if r.run == report.run and r.verb == "SELECT" and r.route == "replica"
    ]
    assert selects and all(r.target == "replica0" for r in selects), offload_trace.table(TASK)
    assert report.details["routing"]["fallbacks"] == {}


def _restart_applier_later(
    engine: Engine, flavor: replication.Flavor, delay: float
) -> threading.Thread:
    """Start the applier ``delay`` seconds after a causal wait shows up on the replica.

    Counted from the moment the replica runs the wait (not from the call), so the
    wait lasts at least ``delay`` however slow the client is to get there.
    """
    function = replication.sql_for(flavor).wait_function

    def waiting() -> bool:
        with engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    "WHERE INFO LIKE :pattern AND INFO NOT LIKE '%PROCESSLIST%'"
                ),
                {"pattern": f"%{function}%"},
            ).scalar_one()
        return bool(found)

    def start() -> None:
        try:
            wait_for(waiting, Deadline(10), interval=0.01)
            threading.Event().wait(delay)  # the injected pause: how long the applier stays off
        finally:
            with engine.connect() as conn:
                replication.start_replica(conn, flavor, sql_thread_only=True)

    thread = threading.Thread(target=start, name="restart-applier")
    thread.start()
    return thread


def _own_row_visible(db: Database, uuid: str) -> tuple[str, bool]:
    with db.reader(allow_replica=True) as session:
        found = session.scalar(select(Instance.id).where(Instance.uuid == uuid)) is not None
        return session_target(session).name, found


def test_causal_read_waits_for_the_tasks_own_write(
    offload_db_factory: DbFactory,
    offload_replica_admin: list[Engine],
    offload_testbed: TestbedInfo,
) -> None:
    db = offload_db_factory(settings=_settings(causal_timeout=2.0))
    _probe(db)  # heartbeat on before the pause
    with offload_replica_admin[0].connect() as conn:
        replication.stop_replica(conn, offload_testbed.flavor, sql_thread_only=True)
    timer = None
    try:
        with task_scope("causal_probe"):
            instance = new_instance()
            with db.writer() as session:
                session.add(instance)
            timer = _restart_applier_later(offload_replica_admin[0], offload_testbed.flavor, 0.3)
            target, found = _own_row_visible(db, instance.uuid)
    finally:
        if timer is not None:
            timer.join()
        with offload_replica_admin[0].connect() as conn:  # idempotent if the timer ran
            replication.start_replica(conn, offload_testbed.flavor, sql_thread_only=True)
    assert (target, found) == ("replica0", True)
    stats = db.routing.for_task("causal_probe")
    assert stats["causal_waits"] == 1 and stats["fallbacks"] == {}
    assert 0.2 <= float(stats["causal_wait_seconds"]) < 2.0  # type: ignore[arg-type]


def test_causal_read_goes_to_the_primary_after_causal_timeout(
    offload_db_factory: DbFactory,
    paused_applier: PausedApplier,
) -> None:
    db = offload_db_factory(settings=_settings(causal_timeout=0.3))
    _probe(db)
    with paused_applier(), task_scope("causal_probe"):
        instance = new_instance()
        with db.writer() as session:
            session.add(instance)
        assert _own_row_visible(db, instance.uuid) == ("primary", True)
    stats = db.routing.for_task("causal_probe")
    assert stats["fallbacks"] == {"causal_timeout": 1}
    assert 0.3 <= float(stats["causal_wait_seconds"]) < 1.0  # type: ignore[arg-type]


def test_without_causal_reads_the_replica_answers_stale(
    offload_db_factory: DbFactory, paused_applier: PausedApplier
) -> None:
    db = offload_db_factory(settings=_settings(causal_reads=False))
    _probe(db)
    with paused_applier(), task_scope("causal_probe"):
        instance = new_instance()
        with db.writer() as session:
            session.add(instance)
        assert _own_row_visible(db, instance.uuid) == ("replica0", False)
    assert db.routing.for_task("causal_probe")["causal_waits"] == 0


def test_metrics_parse_and_status_matches_its_schema(
    offload_db_factory: DbFactory, offload_testbed: TestbedInfo
) -> None:
    db = offload_db_factory()
    database = db.settings.require_connection().database
    settings = offload_testbed.settings(
        database=database or "nova",
        base=Settings(host="compute-1", compute=ALL_ON, service=ServiceSettings(http_port=0)),
    )
    service = Service(settings)
    try:
        service.manager.run(TASK)
        families = {f.name: f for f in text_string_to_metric_families(service.metrics().decode())}
        status = service.status()
    finally:
        service.close()
    assert "offload_replica_lag_seconds" in families
    assert "offload_causal_wait_seconds" in families
    assert any(s.labels.get("task") == TASK for s in families["offload_statements"].samples)
    jsonschema.validate(status, json.loads(SCHEMA.read_text()))
    assert status["health"] == "ok"
    assert status["replicas"][0]["io_running"] == "Yes"
    assert json.loads(json.dumps(status)) == status
    with db.reader() as session:
        assert session.execute(text("SELECT 1")).scalar_one() == 1


def _target_now(db: Database) -> tuple[str, float, float]:
    """Where a replica read goes now, and the monotonic times before and after its session."""
    started = time.monotonic()
    with db.reader(allow_replica=True) as session:
        name = session_target(session).name
    return name, started, time.monotonic()


def test_the_guard_falls_back_within_one_heartbeat_interval_of_lag_crossing_max_lag(
    offload_db_factory: DbFactory, paused_applier: PausedApplier
) -> None:
    interval, max_lag = 0.2, 0.5
    db = offload_db_factory(
        settings=_settings(max_lag=max_lag, heartbeat_interval=interval, lag_policy="primary")
    )
    probe = _probe(db)
    assert wait_for(lambda: _lag_under(probe, 0.05), Deadline(10))
    assert _target_now(db)[0] == "replica0"
    with db.reader() as session:  # the primary's pool holds a connection: no connect timed
        session.execute(text("SELECT 1")).scalar_one()
    with paused_applier():
        fell_back: list[tuple[float, float]] = []

        def on_primary() -> bool:
            name, started, ended = _target_now(db)
            if name == "primary":
                fell_back.append((started, ended))
            return bool(fell_back)

        # a tight loop of real read sessions: the first one sent to the primary is the moment
        assert wait_for(on_primary, Deadline(10), interval=0.002)
        # still paused: the heartbeat the replica lacks was written at (reading time - lag)
        before = time.monotonic()
        reading = probe.read()
        after = time.monotonic()
        assert reading.lag is not None and reading.lag > max_lag
    earliest_crossing = before - reading.lag + max_lag
    latest_crossing = after - reading.lag + max_lag
    started, ended = fell_back[0]
    assert ended >= earliest_crossing  # never before the lag crossed max_lag
    # the session that fell back began at most one interval after the crossing (the one
    # before it, begun earlier, still went to the replica)
    assert started - latest_crossing <= interval, (
        f"fell back {started - latest_crossing:.3f}s after the crossing "
        f"(heartbeat interval {interval}s)"
    )


def test_a_read_session_ends_with_one_rollback(offload_db: Database) -> None:
    """The session joins the connection's transaction: one ROLLBACK, none from the pool."""

    def rollbacks() -> tuple[int, int]:
        with offload_db.reader(allow_replica=True) as session:
            conn_id = int(session.execute(text("SELECT CONNECTION_ID()")).scalar_one())
            row = session.execute(text("SHOW SESSION STATUS LIKE 'Com_rollback'")).one()
            return conn_id, int(row[1])

    first_id, first = rollbacks()
    sessions = 20
    for _ in range(sessions - 1):
        with offload_db.reader(allow_replica=True) as session:
            session.execute(text("SELECT 1")).scalar_one()
    last_id, last = rollbacks()
    assert last_id == first_id  # the same pooled connection all along
    assert last - first == sessions


def test_causal_gtid_is_asked_only_when_a_replica_read_follows(
    offload_db: Database, offload_trace: QueryTrace
) -> None:
    _probe(offload_db)

    def causal(run: str) -> list[str]:
        return [
            r.verb
            for r in offload_trace.for_task("causal_lookup")
            if r.run == run and r.route == "causal"
        ]

    with task_scope("causal_lookup") as writes_only:
        for _ in range(3):
            with offload_db.writer() as session:
                session.add(new_instance())
    assert causal(writes_only.run) == []  # no read follows: nothing more on the primary
    with task_scope("causal_lookup") as write_then_read:
        instance = new_instance()
        with offload_db.writer() as session:
            session.add(instance)
        for _ in range(2):  # the second read reuses the position the first one asked for
            assert _own_row_visible(offload_db, instance.uuid) == ("replica0", True)
    assert causal(write_then_read.run) == ["SELECT"]


def test_back_to_back_read_sessions_send_no_ping(offload_db: Database) -> None:
    """A connection checked in moments ago is trusted at checkout: no COM_PING round trip."""

    def pings(*, ping_once: bool = False) -> tuple[int, int]:
        with offload_db.reader(allow_replica=True) as session:
            conn = session.connection()
            if ping_once:  # the positive control: this server counts a ping here
                dbapi = conn.connection.dbapi_connection
                assert dbapi is not None
                dbapi.ping(reconnect=False)
            conn_id = int(session.execute(text("SELECT CONNECTION_ID()")).scalar_one())
            row = session.execute(text("SHOW SESSION STATUS LIKE 'Com_admin_commands'")).one()
            return conn_id, int(row[1])

    first_id, first = pings()
    control_id, control = pings(ping_once=True)
    assert control_id == first_id and control - first == 1
    for _ in range(20):
        last_id, last = pings()
    assert last_id == first_id  # the same pooled connection all along
    assert last == control
