"""The other four Juno tasks on real servers: replica reads, primary writes, stale reads refused.

For each of ``_run_pending_deletes``, ``_instance_usage_audit``,
``_poll_bandwidth_usage`` and ``_poll_volume_usage``:

* its effect on the primary when it reads a caught-up replica (``run_on_replica``
  also proves, from the client trace and the servers' performance_schema, that
  every SELECT went to the replica and only writes to the primary);
* the same effect without ``slave_connection`` (reads served by the primary);
* a run on a stale replica (SQL thread stopped while the primary changes):
  its conditional writes are refused, the primary keeps what was written there,
  and once the replica catches up the next run works from fresh data.
"""

from __future__ import annotations

import dataclasses
import uuid as uuidlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from offload.compute.driver import BandwidthCounters, FakeDriver, VolumeCounters
from offload.compute.manager import ComputeManager
from offload.compute.network import macs_for
from offload.compute.notifier import EVENT_INSTANCE_EXISTS, EVENT_VOLUME_USAGE
from offload.compute.usage import AUDIT_TASK, last_completed_audit_period
from offload.config import ComputeSettings
from offload.db import Database
from offload.pytest import ComputeFactory, DbFactory, WaitForReplication
from offload.schema import (
    CLEAN_ATTEMPTS_KEY,
    BandwidthUsage,
    BlockDeviceMapping,
    Instance,
    InstanceSystemMetadata,
    TaskLog,
    VolumeUsage,
)

from .conftest import ALL_ON, PausedApplier, RunOnReplica, RunWithoutReplica, new_instance

PENDING_DELETES = "_run_pending_deletes"
USAGE_AUDIT = "_instance_usage_audit"
BANDWIDTH = "_poll_bandwidth_usage"
VOLUME_USAGE = "_poll_volume_usage"

#: the managers' clock: the last completed (monthly) audit period is February 2024
NOW = datetime(2024, 3, 15, 12, 30)
FEBRUARY = (datetime(2024, 2, 1), datetime(2024, 3, 1))
#: bw_usage_cache periods as _poll_bandwidth_usage sees them at NOW
PREVIOUS, CURRENT = FEBRUARY
#: above any counter the FakeDriver reports (its first values are below 2**34)
HUGE = 1 << 40


class RecordingDriver(FakeDriver):
    """A FakeDriver that keeps what each counter poll returned, to compute expectations."""

    def __init__(self, host: str = "compute-1", **options: Any) -> None:
        super().__init__(host, **options)
        self.bw_polls: list[list[BandwidthCounters]] = []
        self.volume_polls: list[list[VolumeCounters]] = []

    def get_all_bw_counters(self, instance_uuids: Iterable[str]) -> list[BandwidthCounters]:
        result = super().get_all_bw_counters(instance_uuids)
        self.bw_polls.append(result)
        return result

    def get_all_volume_usage(self, mappings: Iterable[tuple[str, str]]) -> list[VolumeCounters]:
        result = super().get_all_volume_usage(mappings)
        self.volume_polls.append(result)
        return result


def _manager(
    compute_factory: ComputeFactory,
    db: Database,
    driver: FakeDriver | None = None,
    options: ComputeSettings = ALL_ON,
) -> ComputeManager:
    """compute-1's manager with every gate open, the clock at NOW and, if given, ``driver``."""
    manager: ComputeManager = compute_factory(db, options=options)
    manager.compute.now = lambda: NOW
    if driver is not None:
        manager.compute.driver = driver
    return manager


def _deleted(session: Session, *, attempts: int | None = None, **fields: object) -> Instance:
    """A deleted instance (deleted = its id), with a clean_attempts count if given."""
    values: dict[str, Any] = {
        "vm_state": "deleted",
        "power_state": 0,
        "deleted_at": datetime(2024, 3, 1, 8),
        "terminated_at": datetime(2024, 3, 1, 8),
    }
    values.update(fields)
    instance = new_instance(**values)
    session.add(instance)
    session.flush()
    instance.deleted = instance.id
    if attempts is not None:
        session.add(
            InstanceSystemMetadata(
                instance_uuid=instance.uuid, key=CLEAN_ATTEMPTS_KEY, value=str(attempts)
            )
        )
    return instance


def _added(session: Session, instance: Instance) -> Instance:
    session.add(instance)
    session.flush()
    return instance


# --- _run_pending_deletes ------------------------------------------------------


def _cleanup_state(db: Database, instance: Instance) -> tuple[str | None, int]:
    """(clean_attempts, cleaned) of an instance on the primary."""
    with db.reader() as session:
        attempts = session.scalar(
            select(InstanceSystemMetadata.value).where(
                InstanceSystemMetadata.instance_uuid == instance.uuid,
                InstanceSystemMetadata.key == CLEAN_ATTEMPTS_KEY,
                InstanceSystemMetadata.deleted == 0,
            )
        )
        cleaned = session.scalar(select(Instance.cleaned).where(Instance.uuid == instance.uuid))
    assert cleaned is not None
    return attempts, cleaned


def _deletes_asked(driver: FakeDriver) -> list[str]:
    return sorted(call[1] for call in driver.calls if call[0] == "delete_instance_files")


def test_pending_deletes_count_an_attempt_and_mark_cleaned(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
) -> None:
    assert ALL_ON.maximum_instance_delete_attempts == 5
    with offload_db.writer() as session:
        fresh = _deleted(session)
        retried = _deleted(session, attempts=2)
        exhausted = _deleted(session, attempts=5)
        # Nova's query for deleted, not soft-deleted instances has no vm_state filter
        stateless = _deleted(session, vm_state=None)
        done = _deleted(session, attempts=1, cleaned=1)
        elsewhere = _deleted(session, host="compute-2")
        soft = _added(session, new_instance(vm_state="soft-delete"))
        live = _added(session, new_instance())
    offload_wait_for_replication(offload_db)
    driver = FakeDriver("compute-1", delete_failure_rate=0.0)

    report = run_on_replica(
        _manager(offload_compute_factory, offload_db, driver), PENDING_DELETES
    ).report

    assert _cleanup_state(offload_db, fresh) == ("1", 1)
    assert _cleanup_state(offload_db, retried) == ("3", 1)
    assert _cleanup_state(offload_db, stateless) == ("1", 1)
    assert _cleanup_state(offload_db, exhausted) == ("5", 0)  # at the maximum: given up
    assert _cleanup_state(offload_db, done) == ("1", 1)
    for untouched in (elsewhere, soft, live):
        assert _cleanup_state(offload_db, untouched) == (None, 0)
    assert _deletes_asked(driver) == sorted([fresh.uuid, retried.uuid, stateless.uuid])
    assert (report.items, report.written, report.rejected) == (4, 6, 0)
    assert (report.details["cleaned"], report.details["gave_up"]) == (3, 1)


def test_failed_deletes_are_retried_until_the_maximum(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
) -> None:
    with offload_db.writer() as session:
        instance = _deleted(session)
    driver = FakeDriver("compute-1", delete_failure_rate=1.0)
    options = dataclasses.replace(ALL_ON, maximum_instance_delete_attempts=2)
    manager = _manager(offload_compute_factory, offload_db, driver, options)
    for attempts in ("1", "2"):
        offload_wait_for_replication(offload_db)
        report = run_on_replica(manager, PENDING_DELETES).report
        assert (report.written, report.rejected) == (1, 0)  # the attempt, no cleaned flag
        assert _cleanup_state(offload_db, instance) == (attempts, 0)
    offload_wait_for_replication(offload_db)
    report = run_on_replica(manager, PENDING_DELETES).report
    assert report.details["gave_up"] == 1 and report.written == 0
    assert driver.delete_attempts(instance.uuid) == 2
    assert _cleanup_state(offload_db, instance) == ("2", 0)


def test_pending_deletes_without_slave_connection(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    run_without_replica: RunWithoutReplica,
) -> None:
    db = offload_db_factory(with_replica=False)
    with db.writer() as session:
        instance = _deleted(session, attempts=1)
        soft = _added(session, new_instance(vm_state="soft-delete"))
    driver = FakeDriver("compute-1", delete_failure_rate=0.0)
    report = run_without_replica(_manager(offload_compute_factory, db, driver), PENDING_DELETES)
    assert (report.written, report.rejected) == (2, 0)
    assert _cleanup_state(db, instance) == ("2", 1)
    assert _cleanup_state(db, soft) == (None, 0)


def test_pending_deletes_from_a_stale_replica_are_refused(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
    paused_applier: PausedApplier,
) -> None:
    with offload_db.writer() as session:
        cleaned_meanwhile = _deleted(session, attempts=1)
        cleaned_at_first_attempt = _deleted(session)
        counted_meanwhile = _deleted(session, attempts=1)
        first_counted_meanwhile = _deleted(session)
    offload_wait_for_replication(offload_db)
    driver = FakeDriver("compute-1", delete_failure_rate=0.0)
    manager = _manager(offload_compute_factory, offload_db, driver)
    with paused_applier():
        # meanwhile on the primary: another worker cleaned two and counted attempts on two
        with offload_db.writer() as session:
            session.execute(
                update(Instance)
                .where(Instance.uuid.in_([cleaned_meanwhile.uuid, cleaned_at_first_attempt.uuid]))
                .values(cleaned=1)
            )
            session.execute(
                update(InstanceSystemMetadata)
                .where(
                    InstanceSystemMetadata.instance_uuid == counted_meanwhile.uuid,
                )
                .values(value="2")
            )
            session.add(
                InstanceSystemMetadata(
                    instance_uuid=first_counted_meanwhile.uuid, key=CLEAN_ATTEMPTS_KEY, value="1"
                )
            )
        report = run_on_replica(manager, PENDING_DELETES).report  # reads the stale replica
    assert report.items == 4
    assert (report.rejected, report.written) == (4, 0)
    assert _deletes_asked(driver) == []  # nothing claimed: the hypervisor was not asked
    assert _cleanup_state(offload_db, cleaned_meanwhile) == ("1", 1)
    assert _cleanup_state(offload_db, cleaned_at_first_attempt) == (None, 1)
    assert _cleanup_state(offload_db, counted_meanwhile) == ("2", 0)
    assert _cleanup_state(offload_db, first_counted_meanwhile) == ("1", 0)

    offload_wait_for_replication(offload_db)
    report = run_on_replica(manager, PENDING_DELETES).report  # caught up
    assert (report.items, report.rejected, report.written) == (2, 0, 4)
    assert _cleanup_state(offload_db, cleaned_meanwhile) == ("1", 1)
    assert _cleanup_state(offload_db, cleaned_at_first_attempt) == (None, 1)
    assert _cleanup_state(offload_db, counted_meanwhile) == ("3", 1)
    assert _cleanup_state(offload_db, first_counted_meanwhile) == ("2", 1)
    assert _deletes_asked(driver) == sorted([counted_meanwhile.uuid, first_counted_meanwhile.uuid])


# --- _instance_usage_audit -----------------------------------------------------

AUDIT_MAC = "fa:16:3e:00:00:01"


def _seed_audit(db: Database) -> dict[str, str]:
    """Instances around February 2024; returns the uuids of those active in it, by role."""
    begin, end = FEBRUARY
    with db.writer() as session:
        running = _added(session, new_instance(launched_at=datetime(2024, 1, 10)))
        launched_in = _added(session, new_instance(launched_at=datetime(2024, 2, 20)))
        deleted_in = _deleted(
            session, launched_at=datetime(2024, 1, 5), terminated_at=datetime(2024, 2, 10)
        )
        # outside the window, at its edges, unlaunched, or on another host
        session.add_all(
            [
                new_instance(launched_at=end),
                new_instance(launched_at=datetime(2024, 3, 2)),
                new_instance(launched_at=None, vm_state="building"),
                new_instance(host="compute-2", launched_at=datetime(2024, 1, 1)),
            ]
        )
        _deleted(session, launched_at=datetime(2023, 12, 1), terminated_at=begin)
        _deleted(session, launched_at=datetime(2023, 12, 1), terminated_at=datetime(2024, 1, 9))
        session.add(
            BandwidthUsage(
                uuid=running.uuid,
                mac=AUDIT_MAC,
                start_period=begin,
                bw_in=10,
                bw_out=20,
                last_ctr_in=100,
                last_ctr_out=200,
            )
        )
    return {"running": running.uuid, "launched_in": launched_in.uuid, "deleted_in": deleted_in.uuid}


def _task_logs(db: Database) -> list[tuple[str, str, datetime, datetime, int | None, int | None]]:
    with db.reader() as session:
        return list(
            session.execute(
                select(
                    TaskLog.state,
                    TaskLog.host,
                    TaskLog.period_beginning,
                    TaskLog.period_ending,
                    TaskLog.task_items,
                    TaskLog.errors,
                ).where(TaskLog.task_name == AUDIT_TASK)
            )
        )


def _exists_sent(manager: ComputeManager) -> list[dict[str, Any]]:
    return [
        n.payload
        for n in manager.compute.notifier.of_type(  # type: ignore[attr-defined]
            EVENT_INSTANCE_EXISTS
        )
    ]


def test_usage_audit_reports_the_last_completed_period(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
) -> None:
    active = _seed_audit(offload_db)
    offload_wait_for_replication(offload_db)
    manager = _manager(offload_compute_factory, offload_db)
    assert (
        last_completed_audit_period(ALL_ON.instance_usage_audit_period, manager.compute.now())
        == FEBRUARY
    )

    report = run_on_replica(manager, USAGE_AUDIT).report

    assert report.skipped is None
    assert (report.items, report.written, report.rejected) == (3, 2, 0)  # RUNNING, then DONE
    assert _task_logs(offload_db) == [("DONE", "compute-1", *FEBRUARY, 3, 0)]
    sent = _exists_sent(manager)
    assert sorted(p["instance_id"] for p in sent) == sorted(active.values())
    assert {(p["audit_period_beginning"], p["audit_period_ending"]) for p in sent} == {
        ("2024-02-01T00:00:00", "2024-03-01T00:00:00")
    }
    assert {p["instance_id"]: p["bandwidth"] for p in sent if p["bandwidth"]} == {
        active["running"]: {AUDIT_MAC: {"bw_in": 10, "bw_out": 20}}
    }

    offload_wait_for_replication(offload_db)
    again = run_on_replica(manager, USAGE_AUDIT).report  # the replica shows the DONE row
    assert again.skipped is not None and "DONE" in again.skipped
    assert (again.written, again.rejected, again.notifications) == (0, 0, 0)
    assert len(_exists_sent(manager)) == 3
    assert _task_logs(offload_db) == [("DONE", "compute-1", *FEBRUARY, 3, 0)]


def test_usage_audit_without_slave_connection(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    run_without_replica: RunWithoutReplica,
) -> None:
    db = offload_db_factory(with_replica=False)
    active = _seed_audit(db)
    manager = _manager(offload_compute_factory, db)
    report = run_without_replica(manager, USAGE_AUDIT)
    assert (report.items, report.written) == (3, 2)
    assert _task_logs(db) == [("DONE", "compute-1", *FEBRUARY, 3, 0)]
    assert sorted(p["instance_id"] for p in _exists_sent(manager)) == sorted(active.values())
    assert run_without_replica(manager, USAGE_AUDIT).skipped is not None


def test_usage_audit_from_a_stale_replica_is_refused(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
    paused_applier: PausedApplier,
) -> None:
    _seed_audit(offload_db)
    offload_wait_for_replication(offload_db)
    manager = _manager(offload_compute_factory, offload_db)
    with paused_applier():
        # meanwhile on the primary: another worker started this period's audit
        with offload_db.writer() as session:
            session.add(
                TaskLog(
                    task_name=AUDIT_TASK,
                    state="RUNNING",
                    host="compute-1",
                    period_beginning=FEBRUARY[0],
                    period_ending=FEBRUARY[1],
                    message="another worker",
                    task_items=99,
                    errors=0,
                )
            )
        report = run_on_replica(manager, USAGE_AUDIT).report  # no task_log on the replica
    assert report.skipped is None
    assert (report.rejected, report.written, report.notifications) == (1, 0, 0)
    assert _exists_sent(manager) == []
    assert _task_logs(offload_db) == [("RUNNING", "compute-1", *FEBRUARY, 99, 0)]

    offload_wait_for_replication(offload_db)
    report = run_on_replica(manager, USAGE_AUDIT).report  # now it sees the other audit
    assert report.skipped is not None and "RUNNING" in report.skipped
    assert (report.rejected, report.written, report.notifications) == (0, 0, 0)
    assert _task_logs(offload_db) == [("RUNNING", "compute-1", *FEBRUARY, 99, 0)]


# --- _poll_bandwidth_usage -----------------------------------------------------


def _bw_row(db: Database, uuid: str, start: datetime = CURRENT) -> tuple[int | None, ...] | None:
    """(bw_in, bw_out, last_ctr_in, last_ctr_out) of the live row for ``uuid`` and a period."""
    with db.reader() as session:
        rows = session.execute(
            select(
                BandwidthUsage.bw_in,
                BandwidthUsage.bw_out,
                BandwidthUsage.last_ctr_in,
                BandwidthUsage.last_ctr_out,
            ).where(
                BandwidthUsage.uuid == uuid,
                BandwidthUsage.start_period == start,
                BandwidthUsage.deleted == 0,
            )
        ).all()
    assert len(rows) <= 1, rows
    return tuple(rows[0]) if rows else None


def _only(poll: list[BandwidthCounters], uuid: str) -> BandwidthCounters:
    [counters] = [c for c in poll if c["uuid"] == uuid]
    return counters


def test_bandwidth_counters_accumulate_in_the_current_period(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
) -> None:
    with offload_db.writer() as session:
        polled = _added(session, new_instance())
        elsewhere = _added(session, new_instance(host="compute-2"))
        gone = _deleted(session)
    offload_wait_for_replication(offload_db)
    driver = RecordingDriver(counter_reset_rate=0.0)
    manager = _manager(offload_compute_factory, offload_db, driver)

    # no history: the first poll only sets the baseline
    report = run_on_replica(manager, BANDWIDTH).report
    [first] = driver.bw_polls[-1]  # only the live instance of this host was polled
    assert first["uuid"] == polled.uuid
    assert (report.items, report.written, report.rejected) == (1, 1, 0)
    assert _bw_row(offload_db, polled.uuid) == (0, 0, first["bw_in"], first["bw_out"])
    assert _bw_row(offload_db, elsewhere.uuid) is None and _bw_row(offload_db, gone.uuid) is None

    offload_wait_for_replication(offload_db)
    report = run_on_replica(manager, BANDWIDTH).report  # growth: add exactly the deltas
    [second] = driver.bw_polls[-1]
    grown_in, grown_out = second["bw_in"] - first["bw_in"], second["bw_out"] - first["bw_out"]
    assert grown_in > 0 and grown_out > 0
    assert (report.written, report.rejected) == (1, 0)
    assert _bw_row(offload_db, polled.uuid) == (
        grown_in,
        grown_out,
        second["bw_in"],
        second["bw_out"],
    )

    offload_wait_for_replication(offload_db)
    driver.counter_reset_rate = 1.0  # the VM restarted: its counters start again near 0
    report = run_on_replica(manager, BANDWIDTH).report
    [third] = driver.bw_polls[-1]
    assert driver.counter_resets == [("bw", polled.uuid, first["mac_address"], 2)]
    assert third["bw_in"] < second["bw_in"]
    assert _bw_row(offload_db, polled.uuid) == (
        grown_in + third["bw_in"],
        grown_out + third["bw_out"],
        third["bw_in"],
        third["bw_out"],
    )


def test_bandwidth_baseline_comes_from_the_previous_period(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
) -> None:
    with offload_db.writer() as session:
        grown = _added(session, new_instance())
        restarted = _added(session, new_instance())
        for instance, last in ((grown, 1000), (restarted, HUGE)):
            [mac] = macs_for(instance.uuid)  # the port the driver reports counters for
            session.add(
                BandwidthUsage(
                    uuid=instance.uuid,
                    mac=mac,
                    start_period=PREVIOUS,
                    bw_in=5,
                    bw_out=6,
                    last_ctr_in=last,
                    last_ctr_out=last,
                )
            )
    offload_wait_for_replication(offload_db)
    driver = RecordingDriver(counter_reset_rate=0.0)

    report = run_on_replica(_manager(offload_compute_factory, offload_db, driver), BANDWIDTH).report

    poll = driver.bw_polls[-1]
    assert (report.items, report.written, report.rejected) == (2, 2, 0)
    counters = _only(poll, grown.uuid)  # first counters lie above 1000: growth since then
    assert _bw_row(offload_db, grown.uuid) == (
        counters["bw_in"] - 1000,
        counters["bw_out"] - 1000,
        counters["bw_in"],
        counters["bw_out"],
    )
    counters = _only(poll, restarted.uuid)  # below the last counter: a reset, count it all
    assert _bw_row(offload_db, restarted.uuid) == (
        counters["bw_in"],
        counters["bw_out"],
        counters["bw_in"],
        counters["bw_out"],
    )
    # the previous period is history: left as it was
    assert _bw_row(offload_db, grown.uuid, PREVIOUS) == (5, 6, 1000, 1000)
    assert _bw_row(offload_db, restarted.uuid, PREVIOUS) == (5, 6, HUGE, HUGE)


def test_bandwidth_without_slave_connection(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    run_without_replica: RunWithoutReplica,
) -> None:
    db = offload_db_factory(with_replica=False)
    with db.writer() as session:
        polled = _added(session, new_instance())
    driver = RecordingDriver(counter_reset_rate=0.0)
    manager = _manager(offload_compute_factory, db, driver)
    run_without_replica(manager, BANDWIDTH)
    [first] = driver.bw_polls[-1]
    assert _bw_row(db, polled.uuid) == (0, 0, first["bw_in"], first["bw_out"])
    report = run_without_replica(manager, BANDWIDTH)
    [second] = driver.bw_polls[-1]
    assert (report.written, report.rejected) == (1, 0)
    assert _bw_row(db, polled.uuid) == (
        second["bw_in"] - first["bw_in"],
        second["bw_out"] - first["bw_out"],
        second["bw_in"],
        second["bw_out"],
    )


def test_bandwidth_from_a_stale_replica_is_refused(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
    paused_applier: PausedApplier,
) -> None:
    with offload_db.writer() as session:
        polled = _added(session, new_instance())
    driver = RecordingDriver(counter_reset_rate=0.0)
    manager = _manager(offload_compute_factory, offload_db, driver)
    run_on_replica(manager, BANDWIDTH)  # the baseline row
    [first] = driver.bw_polls[-1]
    offload_wait_for_replication(offload_db)
    # meanwhile on the primary: another poller counted 777/888 bytes and moved the baseline
    elsewhere = (777, 888, first["bw_in"] + 1, first["bw_out"] + 1)
    with paused_applier():
        with offload_db.writer() as session:
            session.execute(
                update(BandwidthUsage)
                .where(BandwidthUsage.uuid == polled.uuid)
                .values(bw_in=777, bw_out=888, last_ctr_in=elsewhere[2], last_ctr_out=elsewhere[3])
            )
        report = run_on_replica(manager, BANDWIDTH).report  # reads the stale baseline
    assert (report.rejected, report.written) == (1, 0)
    assert _bw_row(offload_db, polled.uuid) == elsewhere  # nothing counted twice

    offload_wait_for_replication(offload_db)
    report = run_on_replica(manager, BANDWIDTH).report  # fresh: builds on the other poll
    [latest] = driver.bw_polls[-1]
    assert (report.rejected, report.written) == (0, 1)
    assert _bw_row(offload_db, polled.uuid) == (
        777 + latest["bw_in"] - elsewhere[2],
        888 + latest["bw_out"] - elsewhere[3],
        latest["bw_in"],
        latest["bw_out"],
    )


# --- _poll_volume_usage --------------------------------------------------------

CURR = ("curr_reads", "curr_read_bytes", "curr_writes", "curr_write_bytes")
TOT = ("tot_reads", "tot_read_bytes", "tot_writes", "tot_write_bytes")


def _volume_bdm(instance: Instance, volume_id: str | None = None) -> BlockDeviceMapping:
    return BlockDeviceMapping(
        instance_uuid=instance.uuid,
        source_type="volume",
        destination_type="volume",
        device_name="/dev/vdb",
        volume_id=volume_id or str(uuidlib.uuid4()),
    )


def _volume_row(db: Database, volume_id: str) -> VolumeUsage | None:
    with db.reader() as session:
        rows = session.scalars(
            select(VolumeUsage).where(VolumeUsage.volume_id == volume_id, VolumeUsage.deleted == 0)
        ).all()
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def _counters(row: VolumeUsage | None, names: tuple[str, ...]) -> tuple[int | None, ...]:
    assert row is not None
    return tuple(getattr(row, name) for name in names)


def _driver_counters(usage: VolumeCounters) -> tuple[int, int, int, int]:
    return usage["rd_req"], usage["rd_bytes"], usage["wr_req"], usage["wr_bytes"]


def _by_volume(poll: list[VolumeCounters]) -> dict[str, tuple[int, int, int, int]]:
    return {usage["volume"]: _driver_counters(usage) for usage in poll}


def _volume_sent(manager: ComputeManager) -> list[dict[str, Any]]:
    return [
        n.payload
        for n in manager.compute.notifier.of_type(  # type: ignore[attr-defined]
            EVENT_VOLUME_USAGE
        )
    ]


def _payload_totals(payload: dict[str, Any]) -> tuple[int, int, int, int]:
    return payload["reads"], payload["read_bytes"], payload["writes"], payload["write_bytes"]


def _seed_volumes(db: Database) -> tuple[Instance, list[str]]:
    """compute-1's instance with two volumes, among BDMs and instances the poll skips."""
    with db.writer() as session:
        instance = _added(
            session, new_instance(project_id="p1", user_id="u1", availability_zone="nova")
        )
        gone = _deleted(session)
        elsewhere = _added(session, new_instance(host="compute-2"))
        volumes = [_volume_bdm(instance), _volume_bdm(instance)]
        detached = _volume_bdm(instance)
        session.add_all(
            [
                *volumes,
                detached,
                _volume_bdm(gone),
                _volume_bdm(elsewhere),
                BlockDeviceMapping(
                    instance_uuid=instance.uuid,
                    source_type="image",
                    destination_type="local",
                    boot_index=0,
                ),
            ]
        )
        session.flush()
        detached.deleted = detached.id
    return instance, sorted(str(bdm.volume_id) for bdm in volumes)


def test_volume_counters_are_cached_and_folded_on_a_reset(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
) -> None:
    instance, volumes = _seed_volumes(offload_db)
    offload_wait_for_replication(offload_db)
    driver = RecordingDriver(counter_reset_rate=0.0)
    manager = _manager(offload_compute_factory, offload_db, driver)

    report = run_on_replica(manager, VOLUME_USAGE).report  # first sight: rows created
    first = _by_volume(driver.volume_polls[-1])
    assert sorted(first) == volumes
    assert (report.items, report.written, report.rejected) == (2, 2, 0)
    for volume_id in volumes:
        row = _volume_row(offload_db, volume_id)
        assert _counters(row, CURR) == first[volume_id]
        assert _counters(row, TOT) == (0, 0, 0, 0)
        assert row is not None and row.instance_uuid == instance.uuid
        assert (row.project_id, row.user_id, row.availability_zone) == ("p1", "u1", "nova")
        assert row.curr_last_refreshed == NOW
    sent = _volume_sent(manager)
    assert {p["volume_id"]: _payload_totals(p) for p in sent} == first
    assert {p["instance_id"] for p in sent} == {instance.uuid}

    offload_wait_for_replication(offload_db)
    report = run_on_replica(manager, VOLUME_USAGE).report  # growth: curr_* replaced
    second = _by_volume(driver.volume_polls[-1])
    assert (report.written, report.rejected) == (2, 0)
    for volume_id in volumes:
        assert _counters(_volume_row(offload_db, volume_id), CURR) == second[volume_id]
        assert _counters(_volume_row(offload_db, volume_id), TOT) == (0, 0, 0, 0)

    offload_wait_for_replication(offload_db)
    driver.counter_reset_rate = 1.0  # the VM restarted: lower counters
    report = run_on_replica(manager, VOLUME_USAGE).report
    third = _by_volume(driver.volume_polls[-1])
    assert (report.written, report.rejected) == (2, 0)
    for volume_id in volumes:
        row = _volume_row(offload_db, volume_id)
        assert _counters(row, CURR) == third[volume_id]
        assert _counters(row, TOT) == second[volume_id]  # what the VM had before it restarted
        assert row is not None and row.tot_last_refreshed == NOW
    latest = {p["volume_id"]: _payload_totals(p) for p in _volume_sent(manager)[-2:]}
    assert latest == {
        v: tuple(a + b for a, b in zip(second[v], third[v], strict=True)) for v in volumes
    }
    assert len(_volume_sent(manager)) == 6  # one per volume per run


def test_any_lower_volume_counter_folds_every_counter(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
) -> None:
    with offload_db.writer() as session:
        instance = _added(session, new_instance())
        bdm = _volume_bdm(instance)
        session.add(bdm)
        # history: only curr_reads lies above anything the driver reports
        session.add(
            VolumeUsage(
                volume_id=bdm.volume_id,
                instance_uuid=instance.uuid,
                curr_reads=HUGE,
                curr_read_bytes=5,
                curr_writes=5,
                curr_write_bytes=5,
                tot_reads=10,
                tot_read_bytes=20,
                tot_writes=30,
                tot_write_bytes=40,
            )
        )
    offload_wait_for_replication(offload_db)
    driver = RecordingDriver(counter_reset_rate=0.0)
    manager = _manager(offload_compute_factory, offload_db, driver)

    report = run_on_replica(manager, VOLUME_USAGE).report

    assert (report.written, report.rejected) == (1, 0)
    [new] = _by_volume(driver.volume_polls[-1]).values()
    row = _volume_row(offload_db, str(bdm.volume_id))
    assert _counters(row, CURR) == new
    assert _counters(row, TOT) == (10 + HUGE, 25, 35, 45)
    [payload] = _volume_sent(manager)
    assert _payload_totals(payload) == (10 + HUGE + new[0], 25 + new[1], 35 + new[2], 45 + new[3])


def test_volume_usage_without_slave_connection(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    run_without_replica: RunWithoutReplica,
) -> None:
    db = offload_db_factory(with_replica=False)
    _instance, volumes = _seed_volumes(db)
    driver = RecordingDriver(counter_reset_rate=0.0)
    manager = _manager(offload_compute_factory, db, driver)
    report = run_without_replica(manager, VOLUME_USAGE)
    first = _by_volume(driver.volume_polls[-1])
    assert sorted(first) == volumes
    assert (report.written, report.rejected, report.notifications) == (2, 0, 2)
    for volume_id in volumes:
        assert _counters(_volume_row(db, volume_id), CURR) == first[volume_id]
        assert _counters(_volume_row(db, volume_id), TOT) == (0, 0, 0, 0)


def test_volume_usage_from_a_stale_replica_is_refused(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
    paused_applier: PausedApplier,
) -> None:
    with offload_db.writer() as session:
        instance = _added(session, new_instance())
        bdm = _volume_bdm(instance)
        session.add(bdm)
    volume_id = str(bdm.volume_id)
    driver = RecordingDriver(counter_reset_rate=0.0)
    manager = _manager(offload_compute_factory, offload_db, driver)
    run_on_replica(manager, VOLUME_USAGE)  # the row with the first counters
    [first] = _by_volume(driver.volume_polls[-1]).values()
    offload_wait_for_replication(offload_db)
    # meanwhile on the primary: another poller stored newer counters
    elsewhere = tuple(value + 1 for value in first)
    with paused_applier():
        with offload_db.writer() as session:
            session.execute(
                update(VolumeUsage)
                .where(VolumeUsage.volume_id == volume_id)
                .values(dict(zip(CURR, elsewhere, strict=True)))
            )
        report = run_on_replica(manager, VOLUME_USAGE).report  # reads the stale counters
    assert (report.rejected, report.written, report.notifications) == (1, 0, 0)
    assert len(_volume_sent(manager)) == 1  # only the first run's
    assert _counters(_volume_row(offload_db, volume_id), CURR) == elsewhere
    assert _counters(_volume_row(offload_db, volume_id), TOT) == (0, 0, 0, 0)

    offload_wait_for_replication(offload_db)
    report = run_on_replica(manager, VOLUME_USAGE).report  # fresh: no reset, no rejection
    [latest] = _by_volume(driver.volume_polls[-1]).values()
    assert (report.rejected, report.written, report.notifications) == (0, 1, 1)
    assert _counters(_volume_row(offload_db, volume_id), CURR) == latest
    assert _counters(_volume_row(offload_db, volume_id), TOT) == (0, 0, 0, 0)
    assert _payload_totals(_volume_sent(manager)[-1]) == latest
