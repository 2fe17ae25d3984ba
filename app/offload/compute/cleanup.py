"""Tasks that finish deletions: pending file deletes, queued deletes, running deleted VMs.

Each follows the same shape: read candidates on the replica; claim each one on
the primary with a conditional write (so a stale replica copy cannot make the
task act twice or act on a row that changed); only then ask the hypervisor;
then record the result, again conditionally.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, literal, select, update
from sqlalchemy.sql.expression import exists

from offload.compute.context import Compute, RunReport
from offload.compute.driver import PowerState
from offload.schema import (
    CLEAN_ATTEMPTS_KEY,
    BlockDeviceMapping,
    Instance,
    InstanceSystemMetadata,
    soft_delete_values,
)

__all__ = ["cleanup_running_deleted_instances", "reclaim_queued_deletes", "run_pending_deletes"]

SOFT_DELETED = "soft-delete"


def _claim_attempt(c: Compute, report: RunReport, uuid: str, seen: str | None) -> bool:
    """Count one more clean attempt on the primary, if the count is still ``seen``."""
    attempts = str(int(seen or "0") + 1)
    # ...and only while the primary still shows the instance waiting for its cleanup:
    # a stale replica copy must not count an attempt on (nor re-delete) a cleaned one
    pending = exists().where(
        Instance.uuid == uuid, Instance.deleted == Instance.id, Instance.cleaned == 0
    )
    statement: Any
    with c.db.writer() as session:
        if seen is None:  # no row yet: insert unless one appeared meanwhile
            already = exists().where(
                InstanceSystemMetadata.instance_uuid == uuid,
                InstanceSystemMetadata.key == CLEAN_ATTEMPTS_KEY,
                InstanceSystemMetadata.deleted == 0,
            )
            source = select(
                literal(uuid),
                literal(CLEAN_ATTEMPTS_KEY),
                literal(attempts),
                literal(c.now()),
                literal(0),
            ).where(~already, pending)
            statement = insert(InstanceSystemMetadata).from_select(
                ["instance_uuid", "key", "value", "created_at", "deleted"], source
            )
        else:
            statement = (
                update(InstanceSystemMetadata)
                .where(
                    InstanceSystemMetadata.instance_uuid == uuid,
                    InstanceSystemMetadata.key == CLEAN_ATTEMPTS_KEY,
                    InstanceSystemMetadata.deleted == 0,
                    InstanceSystemMetadata.value == seen,
                    pending,
                )
                .values(value=attempts, updated_at=c.now())
            )
        return c.guarded(session, statement, report, what=f"clean attempt of {uuid}")


def run_pending_deletes(c: Compute, report: RunReport) -> None:
    """Delete the files of deleted instances whose cleanup has not succeeded yet."""
    limit = c.options.maximum_instance_delete_attempts
    with c.db.reader(allow_replica=True) as session:
        candidates = session.execute(
            select(Instance.uuid, InstanceSystemMetadata.value)
            .outerjoin(
                InstanceSystemMetadata,
                (InstanceSystemMetadata.instance_uuid == Instance.uuid)
                & (InstanceSystemMetadata.key == CLEAN_ATTEMPTS_KEY)
                & (InstanceSystemMetadata.deleted == 0),
            )
            # Nova's filters: deleted == id (NULL is not deleted), cleaned == 0 (NULL
            # is not waiting); Nova also cleans deleted instances whose vm_state is NULL
            .where(
                Instance.host == c.host,
                Instance.deleted == Instance.id,
                Instance.cleaned == 0,
                Instance.vm_state.is_distinct_from(SOFT_DELETED),
            )
        ).all()
    report.items = len(candidates)
    gave_up = cleaned = 0
    for uuid, seen in candidates:
        if int(seen or "0") >= limit:
            gave_up += 1
            continue
        if not _claim_attempt(c, report, uuid, seen):
            continue
        report.driver_calls += 1
        if not c.driver.delete_instance_files(uuid):
            continue
        with c.db.writer() as session:
            if c.guarded(
                session,
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.deleted == Instance.id,
                    Instance.cleaned == 0,
                )
                .values(cleaned=1, updated_at=c.now()),
                report,
                what=f"cleaned flag of {uuid}",
            ):
                cleaned += 1
    report.details.update(cleaned=cleaned, gave_up=gave_up)


def _old_enough(deleted_at: datetime | None, now: datetime, seconds: int) -> bool:
    # Nova: an instance with no deleted_at counts as old enough
    return deleted_at is None or deleted_at + timedelta(seconds=seconds) <= now


def reclaim_queued_deletes(c: Compute, report: RunReport) -> None:
    """Really delete soft-deleted instances older than ``reclaim_instance_interval``."""
    interval = c.options.reclaim_instance_interval
    if interval <= 0:
        report.skipped = "reclaim_instance_interval is 0 (soft delete off)"
        return
    with c.db.reader(allow_replica=True) as session:
        rows = session.execute(
            select(Instance.id, Instance.uuid, Instance.deleted_at).where(
                Instance.host == c.host,
                Instance.deleted == 0,
                Instance.vm_state == SOFT_DELETED,
                Instance.task_state.is_(None),
            )
        ).all()
    now = c.now()
    due = [(u, at) for _i, u, at in rows if _old_enough(at, now, interval)]
    report.items = len(rows)
    reclaimed = 0
    for uuid, seen_deleted_at in due:
        # claim: still soft-deleted, idle, here, and since the same moment (not
        # restored and soft-deleted again) on the primary
        with c.db.writer() as session:
            if not c.guarded(
                session,
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.deleted == 0,
                    Instance.host == c.host,
                    Instance.vm_state == SOFT_DELETED,
                    Instance.task_state.is_(None),
                    Instance.deleted_at.is_not_distinct_from(seen_deleted_at),
                )
                .values(task_state="deleting", updated_at=c.now()),
                report,
                what=f"reclaim of {uuid}",
            ):
                continue
        c.driver.destroy(uuid)
        report.driver_calls += 1
        with c.db.writer() as session:
            if c.guarded(
                session,
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.task_state == "deleting",
                    Instance.deleted == 0,
                )
                .values(
                    vm_state="deleted",
                    task_state=None,
                    power_state=int(PowerState.NOSTATE),
                    terminated_at=c.now(),
                    **soft_delete_values(Instance.id),
                ),
                report,
                what=f"delete of {uuid}",
            ):
                reclaimed += 1
                session.connection().execute(
                    update(BlockDeviceMapping)
                    .where(
                        BlockDeviceMapping.instance_uuid == uuid,
                        BlockDeviceMapping.deleted == 0,
                    )
                    .values(**soft_delete_values(BlockDeviceMapping.id))
                )
    report.details["reclaimed"] = reclaimed


def cleanup_running_deleted_instances(c: Compute, report: RunReport) -> None:
    """Act on VMs the hypervisor still runs for instances deleted in the database."""
    action = c.options.running_deleted_instance_action
    if action == "noop":
        report.skipped = "running_deleted_instance_action is noop"
        return
    running = c.driver.list_instance_uuids()
    report.driver_calls += 1
    if not running:
        return
    with c.db.reader(allow_replica=True) as session:
        rows = session.execute(
            select(Instance.uuid, Instance.deleted_at).where(
                # Nova's filter is deleted == id; a NULL vm_state must not drop the row
                Instance.host == c.host,
                Instance.deleted == Instance.id,
                (Instance.vm_state != SOFT_DELETED) | Instance.vm_state.is_(None),
                Instance.uuid.in_(running),
            )
        ).all()
    now = c.now()
    timeout = c.options.running_deleted_instance_timeout
    found = [uuid for uuid, at in rows if _old_enough(at, now, timeout)]
    report.items = len(found)
    for uuid in found:
        if action == "shutdown":
            c.driver.power_off(uuid)
        elif action == "reap":
            c.driver.destroy(uuid)
        report.driver_calls += action != "log"
    report.details.update(action=action, found=found)
