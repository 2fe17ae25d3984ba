"""The eight Icehouse tasks on real servers: replica reads, primary writes, guarded acts.

For each task: its effect on the primary and on the hypervisor, once reading
the replica (proven from the client trace and the servers' own records) and
once without a replica (the primary serves the reads).  For each task whose
write depends on what it read, a stale replica: the row changes on the primary
while the replica's applier is stopped; the task must refuse to act, leave the
row as it stands and leave the hypervisor alone, and act correctly once the
replica has caught up.

Timeouts are ALL_ON's 60 s: inputs are stamped an hour ago (due) or seconds
ago (not due), so no test waits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from offload.compute.context import RunReport
from offload.compute.driver import FakeDriver, PowerState
from offload.compute.manager import ComputeManager
from offload.compute.network import macs_for
from offload.db import Database
from offload.pytest import ComputeFactory, DbFactory, WaitForReplication
from offload.schema import (
    SHELVED_AT_KEY,
    BlockDeviceMapping,
    Instance,
    InstanceInfoCache,
    InstanceSystemMetadata,
    Migration,
    utcnow,
)

from .conftest import ALL_ON, PausedApplier, Proven, RunOnReplica, RunWithoutReplica, new_instance

SYNC_POWER_STATES = "_sync_power_states"
HEAL_INFO_CACHE = "_heal_instance_info_cache"
POLL_REBOOTING = "_poll_rebooting_instances"
POLL_RESCUED = "_poll_rescued_instances"
POLL_RESIZES = "_poll_unconfirmed_resizes"
POLL_SHELVED = "_poll_shelved_instances"
RECLAIM = "_reclaim_queued_deletes"
CLEANUP_RUNNING_DELETED = "_cleanup_running_deleted_instances"

#: Nova's power state codes, as the instances table stores them
RUNNING, SHUTDOWN, PAUSED, NOSTATE = (
    int(state)
    for state in (PowerState.RUNNING, PowerState.SHUTDOWN, PowerState.PAUSED, PowerState.NOSTATE)
)
#: well past every ALL_ON timeout (60 s) / well within it
LONG_AGO = timedelta(hours=1)
JUST_NOW = timedelta(seconds=5)
#: the task's actions on the hypervisor (``FakeDriver.calls`` also logs plug and set_power_state)
ACTIONS = (
    "power_off",
    "power_on",
    "destroy",
    "poll_rebooting_instances",
    "unrescue",
    "confirm_migration",
    "shelve_offload",
)


def ago(delta: timedelta) -> datetime:
    return utcnow() - delta


def nova_time(moment: datetime) -> str:
    """A time as Nova stores it in system metadata (timeutils.strtime)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


# -- where a task runs ------------------------------------------------------------


@dataclass
class Target:
    """A database and the runner that proves where the task's reads went."""

    db: Database
    run: Callable[[ComputeManager, str], RunReport]


@pytest.fixture(params=["replica", "no_replica"])
def target(
    request: pytest.FixtureRequest,
    offload_db_factory: DbFactory,
    run_on_replica: RunOnReplica,
    run_without_replica: RunWithoutReplica,
) -> Target:
    """(a) reads proven on the replica, writes on the primary; (b) no replica configured."""
    if request.param == "replica":
        return Target(
            offload_db_factory(), lambda manager, task: run_on_replica(manager, task).report
        )
    return Target(offload_db_factory(with_replica=False), run_without_replica)


# -- rows -------------------------------------------------------------------------


def add(session: Session, *rows: object) -> None:
    """Insert rows one by one, so ids follow the order given."""
    for row in rows:
        session.add(row)
        session.flush()


def soft_delete(session: Session, row: Any, at: datetime | None = None) -> None:
    """Mark an inserted row deleted as Nova does: ``deleted`` = its id."""
    session.flush()
    row.deleted = row.id
    row.deleted_at = at or utcnow()


def change(db: Database, model: Any, key: Any, **values: object) -> None:
    """Change rows on the primary (someone else's write)."""
    with db.writer() as session:
        session.execute(update(model).where(key).values(**values))


def snapshot(db: Database, model: Any, key: Any) -> dict[str, Any]:
    """Every column of one row, read on the primary."""
    with db.reader() as session:
        return dict(session.execute(select(model.__table__).where(key)).one()._mapping)


def instance(db: Database, uuid: str) -> Instance:
    with db.reader() as session:
        return session.scalars(select(Instance).where(Instance.uuid == uuid)).one()


def migration(db: Database, migration_id: int) -> Migration:
    with db.reader() as session:
        return session.scalars(select(Migration).where(Migration.id == migration_id)).one()


def actions(driver: FakeDriver) -> list[tuple[str, ...]]:
    """What the hypervisor was asked to do (not the test's own plug/set_power_state)."""
    return [call for call in driver.calls if call[0] in ACTIONS]


def acted_on(driver: FakeDriver, uuid: str) -> list[tuple[str, ...]]:
    return [call for call in actions(driver) if uuid in call]


# -- _sync_power_states -------------------------------------------------------------


def test_sync_power_states_records_the_driver_state_of_idle_instances_here(
    target: Target,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
) -> None:
    db = target.db
    powered_off = new_instance(power_state=RUNNING)
    never_synced = new_instance(power_state=None)
    in_sync = new_instance(power_state=RUNNING)
    busy = new_instance(power_state=RUNNING, task_state="powering-off")
    elsewhere = new_instance(host="compute-2", power_state=RUNNING)
    gone = new_instance(power_state=RUNNING)
    with db.writer() as session:
        add(session, powered_off, never_synced, in_sync, busy, elsewhere, gone)
        soft_delete(session, gone)
    offload_wait_for_replication(db)
    manager = offload_compute_factory(db, options=ALL_ON)
    driver = manager.compute.driver
    hypervisor = {
        powered_off: SHUTDOWN,
        never_synced: PAUSED,
        in_sync: RUNNING,
        busy: SHUTDOWN,
        elsewhere: SHUTDOWN,
        gone: SHUTDOWN,
    }
    for row, state in hypervisor.items():
        driver.set_power_state(row.uuid, PowerState(state))

    report = target.run(manager, SYNC_POWER_STATES)

    assert (report.items, report.written, report.rejected) == (4, 2, 0)
    assert instance(db, powered_off.uuid).power_state == SHUTDOWN
    assert instance(db, never_synced.uuid).power_state == PAUSED
    # busy (an operation under way), on another host, deleted: left as they were
    for row in (in_sync, busy, elsewhere, gone):
        assert instance(db, row.uuid).power_state == RUNNING, row.uuid
    assert actions(driver) == []


@pytest.mark.parametrize(
    ("meanwhile", "written_after_catch_up", "power_after"),
    [
        pytest.param({"task_state": "powering-on"}, 0, RUNNING, id="operation-started"),
        pytest.param({"host": "compute-2", "node": "compute-2.node"}, 0, RUNNING, id="moved"),
        pytest.param({"power_state": PAUSED}, 1, SHUTDOWN, id="synced-meanwhile"),
    ],
)
def test_sync_power_states_refuses_a_stale_replica(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
    paused_applier: PausedApplier,
    meanwhile: dict[str, object],
    written_after_catch_up: int,
    power_after: int,
) -> None:
    row = new_instance(power_state=RUNNING)
    with offload_db.writer() as session:
        add(session, row)
    offload_wait_for_replication(offload_db)
    manager = offload_compute_factory(offload_db, options=ALL_ON)
    manager.compute.driver.set_power_state(row.uuid, PowerState.SHUTDOWN)
    key = Instance.uuid == row.uuid
    with paused_applier():
        change(offload_db, Instance, key, **meanwhile)
        written = snapshot(offload_db, Instance, key)
        stale = run_on_replica(manager, SYNC_POWER_STATES).report  # replica: idle, RUNNING
    assert stale.rejected == 1 and stale.written == 0
    assert snapshot(offload_db, Instance, key) == written
    offload_wait_for_replication(offload_db)
    fresh = run_on_replica(manager, SYNC_POWER_STATES).report
    assert (fresh.written, fresh.rejected) == (written_after_catch_up, 0)
    assert instance(offload_db, row.uuid).power_state == power_after
    assert actions(manager.compute.driver) == []


# -- _heal_instance_info_cache --------------------------------------------------------


def _healed(db: Database, uuid: str) -> bool:
    with db.reader() as session:
        text = session.scalars(
            select(InstanceInfoCache.network_info).where(InstanceInfoCache.instance_uuid == uuid)
        ).one()
    ports = json.loads(text or "[]")
    if not ports:
        return False
    assert [port["address"] for port in ports] == list(macs_for(uuid))
    return True


def test_heal_instance_info_cache_refreshes_one_instance_per_run_round_robin(
    target: Target,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
) -> None:
    db = target.db
    first, second, third = new_instance(), new_instance(), new_instance()
    deleting = new_instance(task_state="deleting")
    building = new_instance(vm_state="building", power_state=NOSTATE)
    elsewhere = new_instance(host="compute-2")
    rows = [first, deleting, second, building, third, elsewhere]
    with db.writer() as session:
        add(session, *rows)
        add(
            session, *(InstanceInfoCache(instance_uuid=row.uuid, network_info="[]") for row in rows)
        )
    offload_wait_for_replication(db)
    manager = offload_compute_factory(db, options=ALL_ON)

    report = target.run(manager, HEAL_INFO_CACHE)
    assert report.details["healed"] == first.uuid
    assert (report.written, report.rejected) == (1, 0)
    assert [_healed(db, row.uuid) for row in rows] == [True, False, False, False, False, False]

    healed = [target.run(manager, HEAL_INFO_CACHE).details["healed"] for _ in range(3)]
    # the one being deleted is passed over; building and elsewhere never queued
    assert healed == [second.uuid, third.uuid, first.uuid]
    assert [_healed(db, row.uuid) for row in rows] == [True, False, True, False, True, False]


# -- _poll_rebooting_instances ----------------------------------------------------------


def test_poll_rebooting_instances_hands_the_stuck_ones_to_the_driver(
    target: Target,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
) -> None:
    db = target.db
    stuck = new_instance(task_state="rebooting", updated_at=ago(LONG_AGO))
    stuck_started = new_instance(task_state="reboot_started", updated_at=ago(LONG_AGO))
    rebooting_now = new_instance(task_state="rebooting", updated_at=ago(JUST_NOW))
    elsewhere = new_instance(host="compute-2", task_state="rebooting", updated_at=ago(LONG_AGO))
    idle = new_instance(updated_at=ago(LONG_AGO))
    with db.writer() as session:
        add(session, stuck, stuck_started, rebooting_now, elsewhere, idle)
    offload_wait_for_replication(db)
    manager = offload_compute_factory(db, options=ALL_ON)

    report = target.run(manager, POLL_REBOOTING)

    assert report.items == 3
    [call] = actions(manager.compute.driver)
    assert call[:2] == ("poll_rebooting_instances", str(ALL_ON.reboot_timeout))
    assert sorted(call[2:]) == sorted([stuck.uuid, stuck_started.uuid])
    assert report.written == 0
    assert instance(db, rebooting_now.uuid).task_state == "rebooting"


# -- _poll_rescued_instances ------------------------------------------------------------


def test_poll_rescued_instances_unrescues_the_ones_rescued_too_long(
    target: Target,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
) -> None:
    db = target.db
    due = new_instance(vm_state="rescued", launched_at=ago(LONG_AGO), power_state=SHUTDOWN)
    rescued_now = new_instance(vm_state="rescued", launched_at=ago(JUST_NOW))
    busy = new_instance(vm_state="rescued", task_state="unrescuing", launched_at=ago(LONG_AGO))
    elsewhere = new_instance(host="compute-2", vm_state="rescued", launched_at=ago(LONG_AGO))
    active = new_instance(launched_at=ago(LONG_AGO))
    with db.writer() as session:
        add(session, due, rescued_now, busy, elsewhere, active)
    offload_wait_for_replication(db)
    manager = offload_compute_factory(db, options=ALL_ON)

    report = target.run(manager, POLL_RESCUED)

    assert report.rejected == 0
    unrescued = instance(db, due.uuid)
    assert (unrescued.vm_state, unrescued.task_state, unrescued.power_state) == (
        "active",
        None,
        RUNNING,
    )
    assert actions(manager.compute.driver) == [("unrescue", due.uuid)]
    assert instance(db, rescued_now.uuid).vm_state == "rescued"
    assert (instance(db, busy.uuid).vm_state, instance(db, busy.uuid).task_state) == (
        "rescued",
        "unrescuing",
    )
    assert instance(db, elsewhere.uuid).vm_state == "rescued"


@pytest.mark.parametrize(
    "meanwhile",
    [
        pytest.param({"vm_state": "active"}, id="unrescued-by-the-user"),
        pytest.param({"task_state": "unrescuing"}, id="operation-started"),
        pytest.param({"host": "compute-2", "node": "compute-2.node"}, id="evacuated"),
    ],
)
def test_poll_rescued_instances_refuses_a_stale_replica(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
    paused_applier: PausedApplier,
    meanwhile: dict[str, object],
) -> None:
    row = new_instance(vm_state="rescued", launched_at=ago(LONG_AGO))
    with offload_db.writer() as session:
        add(session, row)
    offload_wait_for_replication(offload_db)
    manager = offload_compute_factory(offload_db, options=ALL_ON)
    key = Instance.uuid == row.uuid
    with paused_applier():
        change(offload_db, Instance, key, **meanwhile)
        written = snapshot(offload_db, Instance, key)
        stale = run_on_replica(manager, POLL_RESCUED).report  # replica: rescued, idle, here
    assert stale.rejected >= 1 and stale.written == 0
    assert snapshot(offload_db, Instance, key) == written
    assert acted_on(manager.compute.driver, row.uuid) == []
    offload_wait_for_replication(offload_db)
    fresh = run_on_replica(manager, POLL_RESCUED).report
    assert (fresh.written, fresh.rejected) == (0, 0)
    assert snapshot(offload_db, Instance, key) == written
    assert acted_on(manager.compute.driver, row.uuid) == []


# -- _poll_unconfirmed_resizes ------------------------------------------------------------


def _resize(
    session: Session,
    instance_fields: Mapping[str, object],
    *,
    dest: str = "compute-1",
    status: str = "finished",
    updated: timedelta = LONG_AGO,
) -> tuple[Instance, Migration]:
    """An instance resized from compute-0 to ``dest`` and its migration record."""
    row = new_instance(host=dest, **instance_fields)
    add(session, row)
    record = Migration(
        instance_uuid=row.uuid,
        source_compute="compute-0",
        dest_compute=dest,
        source_node="compute-0.node",
        dest_node=f"{dest}.node",
        status=status,
        updated_at=ago(updated),
    )
    add(session, record)
    return row, record


def test_poll_unconfirmed_resizes_confirms_old_ones_and_fails_inconsistent_ones(
    target: Target,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
) -> None:
    db = target.db
    resized = {"vm_state": "resized"}
    with db.writer() as session:
        ok, ok_migration = _resize(session, resized)
        _, recent = _resize(session, resized, updated=JUST_NOW)
        _, other_dest = _resize(session, resized, dest="compute-2")
        _, confirmed = _resize(session, {"vm_state": "active"}, status="confirmed")
        _, errored = _resize(session, {"vm_state": "error"})
        _, reverting = _resize(session, {"vm_state": "resized", "task_state": "resize_reverting"})
        gone, gone_migration = _resize(session, resized)
        soft_delete(session, gone)
    offload_wait_for_replication(db)
    manager = offload_compute_factory(db, options=ALL_ON)

    report = target.run(manager, POLL_RESIZES)

    assert report.items == 4
    assert report.details["confirmed"] == 1 and report.rejected == 0
    assert migration(db, ok_migration.id).status == "confirmed"
    assert (instance(db, ok.uuid).vm_state, instance(db, ok.uuid).task_state) == ("active", None)
    assert actions(manager.compute.driver) == [("confirm_migration", str(ok_migration.id), ok.uuid)]
    for failed in (errored, reverting, gone_migration):  # not RESIZED/None, or gone
        assert migration(db, failed.id).status == "error", failed.id
    for untouched in (recent, other_dest):
        assert migration(db, untouched.id).status == "finished", untouched.id
    assert migration(db, confirmed.id).status == "confirmed"


@dataclass(frozen=True)
class StaleResize:
    """An instance and migration as written, a change on the primary, the outcome once caught up."""

    before: dict[str, object]
    instance_meanwhile: dict[str, object]
    migration_meanwhile: dict[str, object]
    status_after_catch_up: str
    confirmed_after_catch_up: bool


STALE_RESIZES = [
    # the user confirmed it: confirming again would be wrong
    pytest.param(
        StaleResize(
            {"vm_state": "resized"},
            {"vm_state": "active"},
            {"status": "confirmed"},
            "confirmed",
            False,
        ),
        id="user-confirmed",
    ),
    # the instance was deleted: confirming a resize of a deleted instance would be wrong
    pytest.param(
        StaleResize(
            {"vm_state": "resized"},
            {"deleted": Instance.id, "vm_state": "deleted"},
            {},
            "error",
            False,
        ),
        id="instance-deleted",
    ),
    # the replica shows the resize still finishing, the primary shows it finished:
    # failing the migration on the stale state would be wrong
    pytest.param(
        StaleResize(
            {"vm_state": "active", "task_state": "resize_finish"},
            {"vm_state": "resized", "task_state": None},
            {},
            "confirmed",
            True,
        ),
        id="resize-finished",
    ),
]


@pytest.mark.parametrize("case", STALE_RESIZES)
def test_poll_unconfirmed_resizes_refuses_a_stale_replica(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
    paused_applier: PausedApplier,
    case: StaleResize,
) -> None:
    with offload_db.writer() as session:
        row, record = _resize(session, case.before)
    offload_wait_for_replication(offload_db)
    manager = offload_compute_factory(offload_db, options=ALL_ON)
    instance_key, migration_key = Instance.uuid == row.uuid, Migration.id == record.id
    with paused_applier():
        change(offload_db, Instance, instance_key, **case.instance_meanwhile)
        if case.migration_meanwhile:
            change(offload_db, Migration, migration_key, **case.migration_meanwhile)
        written = (
            snapshot(offload_db, Instance, instance_key),
            snapshot(offload_db, Migration, migration_key),
        )
        stale = run_on_replica(manager, POLL_RESIZES).report
    assert stale.rejected >= 1 and stale.written == 0
    assert (
        snapshot(offload_db, Instance, instance_key),
        snapshot(offload_db, Migration, migration_key),
    ) == written
    assert acted_on(manager.compute.driver, row.uuid) == []
    offload_wait_for_replication(offload_db)
    fresh = run_on_replica(manager, POLL_RESIZES).report
    assert fresh.rejected == 0
    assert migration(offload_db, record.id).status == case.status_after_catch_up
    confirms = acted_on(manager.compute.driver, row.uuid)
    assert confirms == (
        [("confirm_migration", str(record.id), row.uuid)] if case.confirmed_after_catch_up else []
    )


# -- _poll_shelved_instances -----------------------------------------------------------------


def _shelved(
    session: Session,
    *,
    host: str = "compute-1",
    shelved: timedelta | None = LONG_AGO,
    **fields: object,
) -> Instance:
    row = new_instance(host=host, vm_state="shelved", power_state=SHUTDOWN, **fields)
    add(session, row)
    if shelved is not None:
        add(
            session,
            InstanceSystemMetadata(
                instance_uuid=row.uuid, key=SHELVED_AT_KEY, value=nova_time(ago(shelved))
            ),
        )
    return row


def test_poll_shelved_instances_offloads_the_ones_shelved_too_long(
    target: Target,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
) -> None:
    db = target.db
    with db.writer() as session:
        due = _shelved(session)
        shelved_now = _shelved(session, shelved=JUST_NOW)
        unshelving = _shelved(session, task_state="unshelving")
        no_stamp = _shelved(session, shelved=None)
        elsewhere = _shelved(session, host="compute-2")
    offload_wait_for_replication(db)
    manager = offload_compute_factory(db, options=ALL_ON)
    manager.init_host()  # the shelved VMs still exist on this host
    driver = manager.compute.driver

    report = target.run(manager, POLL_SHELVED)

    assert report.details["offloaded"] == 1 and report.rejected == 0
    offloaded = instance(db, due.uuid)
    assert (
        offloaded.vm_state,
        offloaded.task_state,
        offloaded.host,
        offloaded.node,
        offloaded.power_state,
    ) == ("shelved_offloaded", None, None, None, NOSTATE)
    assert actions(driver) == [("shelve_offload", due.uuid)]
    assert not driver.instance_exists(due.uuid)
    for kept in (shelved_now, unshelving, no_stamp):
        row = instance(db, kept.uuid)
        assert (row.vm_state, row.host) == ("shelved", "compute-1"), kept.uuid
        assert driver.instance_exists(kept.uuid)
    assert instance(db, elsewhere.uuid).host == "compute-2"


@pytest.mark.parametrize(
    "meanwhile",
    [
        pytest.param({"task_state": "unshelving"}, id="unshelve-started"),
        pytest.param({"vm_state": "active", "power_state": RUNNING}, id="unshelved"),
        pytest.param({"shelved_at": JUST_NOW}, id="unshelved-and-shelved-again"),
    ],
)
def test_poll_shelved_instances_refuses_a_stale_replica(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
    paused_applier: PausedApplier,
    meanwhile: dict[str, Any],
) -> None:
    with offload_db.writer() as session:
        row = _shelved(session)
    offload_wait_for_replication(offload_db)
    manager = offload_compute_factory(offload_db, options=ALL_ON)
    manager.init_host()
    key = Instance.uuid == row.uuid
    stamp_key = (InstanceSystemMetadata.instance_uuid == row.uuid) & (
        InstanceSystemMetadata.key == SHELVED_AT_KEY
    )
    with paused_applier():
        if "shelved_at" in meanwhile:
            change(
                offload_db,
                InstanceSystemMetadata,
                stamp_key,
                value=nova_time(ago(meanwhile["shelved_at"])),
            )
            change(offload_db, Instance, key, updated_at=utcnow())
        else:
            change(offload_db, Instance, key, **meanwhile)
        written = (
            snapshot(offload_db, Instance, key),
            snapshot(offload_db, InstanceSystemMetadata, stamp_key),
        )
        stale = run_on_replica(manager, POLL_SHELVED).report  # replica: shelved an hour ago
    assert stale.rejected >= 1 and stale.written == 0 and stale.details["offloaded"] == 0
    assert (
        snapshot(offload_db, Instance, key),
        snapshot(offload_db, InstanceSystemMetadata, stamp_key),
    ) == written
    assert acted_on(manager.compute.driver, row.uuid) == []
    assert manager.compute.driver.instance_exists(row.uuid)
    offload_wait_for_replication(offload_db)
    fresh = run_on_replica(manager, POLL_SHELVED).report
    assert (fresh.written, fresh.rejected) == (0, 0)
    assert snapshot(offload_db, Instance, key) == written[0]
    assert acted_on(manager.compute.driver, row.uuid) == []


# -- _reclaim_queued_deletes -----------------------------------------------------------------


def _soft_deleted(
    session: Session,
    *,
    host: str = "compute-1",
    deleted: timedelta | None = LONG_AGO,
    volumes: int = 0,
    **fields: object,
) -> Instance:
    """An instance in Nova's soft delete: vm_state soft-delete, row still live."""
    row = new_instance(
        host=host,
        vm_state="soft-delete",
        power_state=SHUTDOWN,
        deleted_at=ago(deleted) if deleted is not None else None,
        **fields,
    )
    add(session, row)
    add(
        session,
        *(
            BlockDeviceMapping(
                instance_uuid=row.uuid,
                source_type="volume",
                destination_type="volume",
                volume_id=f"vol-{i}",
                device_name=f"/dev/vd{'bcd'[i]}",
            )
            for i in range(volumes)
        ),
    )
    return row


def _volumes(db: Database, uuid: str) -> list[tuple[int, int, datetime | None]]:
    """(id, deleted, deleted_at) of the instance's block device mappings."""
    with db.reader() as session:
        rows = session.execute(
            select(BlockDeviceMapping.id, BlockDeviceMapping.deleted, BlockDeviceMapping.deleted_at)
            .where(BlockDeviceMapping.instance_uuid == uuid)
            .order_by(BlockDeviceMapping.id)
        )
        return [(r.id, r.deleted, r.deleted_at) for r in rows]


def test_reclaim_queued_deletes_deletes_instances_soft_deleted_long_ago(
    target: Target,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
) -> None:
    db = target.db
    with db.writer() as session:
        due = _soft_deleted(session, volumes=2)
        no_stamp = _soft_deleted(session, deleted=None)  # Nova: counts as old enough
        deleted_now = _soft_deleted(session, deleted=JUST_NOW, volumes=1)
        restoring = _soft_deleted(session, task_state="restoring", volumes=1)
        elsewhere = _soft_deleted(session, host="compute-2", volumes=1)
        active = new_instance()
        add(session, active, BlockDeviceMapping(instance_uuid=active.uuid, volume_id="vol-a"))
    offload_wait_for_replication(db)
    manager = offload_compute_factory(db, options=ALL_ON)
    manager.init_host()

    report = target.run(manager, RECLAIM)

    assert report.details["reclaimed"] == 2 and report.rejected == 0
    for reclaimed in (due, no_stamp):
        row = instance(db, reclaimed.uuid)
        assert row.deleted == row.id and row.deleted_at is not None, reclaimed.uuid
        assert (row.vm_state, row.task_state, row.power_state) == ("deleted", None, NOSTATE)
        assert row.terminated_at is not None
    assert [(d == i, at is not None) for i, d, at in _volumes(db, due.uuid)] == [(True, True)] * 2
    assert sorted(actions(manager.compute.driver)) == sorted(
        [("destroy", due.uuid), ("destroy", no_stamp.uuid)]
    )
    for kept in (deleted_now, restoring, elsewhere, active):
        row = instance(db, kept.uuid)
        assert row.deleted == 0 and row.terminated_at is None, kept.uuid
        assert [d for _, d, _ in _volumes(db, kept.uuid)] == [0], kept.uuid
    assert instance(db, restoring.uuid).task_state == "restoring"


@pytest.mark.parametrize(
    "meanwhile",
    [
        pytest.param({"vm_state": "active", "deleted_at": None}, id="restored"),
        pytest.param({"task_state": "deleting"}, id="force-delete-started"),
        pytest.param({"deleted_at": JUST_NOW}, id="restored-and-soft-deleted-again"),
    ],
)
def test_reclaim_queued_deletes_refuses_a_stale_replica(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
    paused_applier: PausedApplier,
    meanwhile: dict[str, Any],
) -> None:
    with offload_db.writer() as session:
        row = _soft_deleted(session, volumes=1)
    offload_wait_for_replication(offload_db)
    manager = offload_compute_factory(offload_db, options=ALL_ON)
    manager.init_host()
    key = Instance.uuid == row.uuid
    if isinstance(meanwhile.get("deleted_at"), timedelta):
        meanwhile = {**meanwhile, "deleted_at": ago(meanwhile["deleted_at"])}
    with paused_applier():
        change(offload_db, Instance, key, **meanwhile)
        written = (snapshot(offload_db, Instance, key), _volumes(offload_db, row.uuid))
        stale = run_on_replica(manager, RECLAIM).report  # replica: soft-deleted an hour ago
    assert stale.rejected >= 1 and stale.written == 0 and stale.details["reclaimed"] == 0
    assert (snapshot(offload_db, Instance, key), _volumes(offload_db, row.uuid)) == written
    assert acted_on(manager.compute.driver, row.uuid) == []
    assert manager.compute.driver.instance_exists(row.uuid)
    offload_wait_for_replication(offload_db)
    fresh = run_on_replica(manager, RECLAIM).report
    assert (fresh.written, fresh.rejected) == (0, 0)
    assert (snapshot(offload_db, Instance, key), _volumes(offload_db, row.uuid)) == written
    assert acted_on(manager.compute.driver, row.uuid) == []


# -- _cleanup_running_deleted_instances -----------------------------------------------------

#: what each action asks of the hypervisor for a deleted instance whose VM still runs
CLEANUP_ACTIONS = {"reap": "destroy", "shutdown": "power_off", "log": None}


@pytest.mark.parametrize("action", list(CLEANUP_ACTIONS))
def test_cleanup_running_deleted_instances_acts_on_vms_of_deleted_instances(
    target: Target,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    action: str,
) -> None:
    db = target.db
    long_deleted = new_instance(vm_state="deleted")
    no_vm_state = new_instance(vm_state=None)  # Nova's filter is deleted == id, nothing more
    deleted_now = new_instance(vm_state="deleted")
    elsewhere = new_instance(host="compute-2", vm_state="deleted")
    not_running = new_instance(vm_state="deleted")
    live = new_instance()
    with db.writer() as session:
        add(session, long_deleted, no_vm_state, deleted_now, elsewhere, not_running, live)
        for row in (long_deleted, no_vm_state, elsewhere, not_running):
            soft_delete(session, row, ago(LONG_AGO))
        soft_delete(session, deleted_now, ago(JUST_NOW))
    offload_wait_for_replication(db)
    options = replace(
        ALL_ON, running_deleted_instance_action=action, running_deleted_instance_timeout=60
    )
    manager = offload_compute_factory(db, options=options)
    driver = manager.compute.driver
    for row in (long_deleted, no_vm_state, deleted_now, live, elsewhere):
        driver.plug(row.uuid, PowerState.RUNNING)  # still running here, whatever the database says

    report = target.run(manager, CLEANUP_RUNNING_DELETED)

    assert sorted(report.details["found"]) == sorted([long_deleted.uuid, no_vm_state.uuid])
    assert report.written == 0
    verb = CLEANUP_ACTIONS[action]
    expected = [] if verb is None else [(verb, long_deleted.uuid), (verb, no_vm_state.uuid)]
    assert sorted(actions(driver)) == sorted(expected)
    gone = action == "reap"
    for row in (long_deleted, no_vm_state):
        assert driver.instance_exists(row.uuid) is not gone
        assert (
            driver.get_info(row.uuid)
            == {"reap": NOSTATE, "shutdown": SHUTDOWN, "log": RUNNING}[action]
        )
    for row in (deleted_now, live, elsewhere):
        assert driver.instance_exists(row.uuid) and driver.get_info(row.uuid) == RUNNING


def test_cleanup_running_deleted_instances_reaps_by_default(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
) -> None:
    gone = new_instance(vm_state="deleted")
    with offload_db.writer() as session:
        add(session, gone)
        soft_delete(session, gone, ago(JUST_NOW))  # default timeout 0: any deleted instance
    offload_wait_for_replication(offload_db)
    manager = offload_compute_factory(offload_db, options=ALL_ON)
    manager.compute.driver.plug(gone.uuid)
    proven: Proven = run_on_replica(manager, CLEANUP_RUNNING_DELETED)
    assert proven.report.details["action"] == "reap"
    assert actions(manager.compute.driver) == [("destroy", gone.uuid)]
    assert manager.compute.driver.list_instance_uuids() == []
