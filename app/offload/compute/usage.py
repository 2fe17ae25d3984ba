"""Usage tasks: the instance usage audit, bandwidth polling, volume I/O polling.

All three read what they build on from the replica — instances, the cached
counters, the audit's task_log — and write on the primary with
compare-and-set on exactly the values they read, so counters computed from a
stale copy are refused instead of double-counting or losing a delta.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, insert, literal, or_, select, update
from sqlalchemy.sql.expression import exists

from offload.compute.context import Compute, RunReport, insert_unless
from offload.schema import BandwidthUsage, BlockDeviceMapping, Instance, TaskLog, VolumeUsage

__all__ = [
    "AUDIT_TASK",
    "instance_usage_audit",
    "last_completed_audit_period",
    "poll_bandwidth_usage",
    "poll_volume_usage",
]

AUDIT_TASK = "instance_usage_audit"  # Nova's task_log name
#: a RUNNING audit row untouched this long belongs to a worker that died: take it over
AUDIT_STUCK_AFTER = 3600


def last_completed_audit_period(unit: str, now: datetime) -> tuple[datetime, datetime]:
    """(begin, end) of the last whole hour/day/month/year before ``now`` (Nova's rule)."""
    if unit == "hour":
        end = now.replace(minute=0, second=0, microsecond=0)
        return end - timedelta(hours=1), end
    if unit == "day":
        end = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return end - timedelta(days=1), end
    if unit == "year":
        end = datetime(now.year, 1, 1)
        return datetime(now.year - 1, 1, 1), end
    end = datetime(now.year, now.month, 1)
    previous = end - timedelta(days=1)
    return datetime(previous.year, previous.month, 1), end


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _matches(column: Any, value: object) -> ColumnElement[bool]:
    """``column = value`` that also matches NULL to None (MySQL's ``<=>``)."""
    result: ColumnElement[bool] = column.is_not_distinct_from(value)
    return result


# --- _instance_usage_audit ---------------------------------------------------


def _exists_payload(
    instance: Instance, begin: datetime, end: datetime, bandwidth: Mapping[str, dict[str, int]]
) -> dict[str, Any]:
    return {
        "tenant_id": instance.project_id,
        "user_id": instance.user_id,
        "instance_id": instance.uuid,
        "display_name": instance.display_name,
        "instance_type_id": instance.instance_type_id,
        "memory_mb": instance.memory_mb,
        "root_gb": instance.root_gb,
        "ephemeral_gb": instance.ephemeral_gb,
        "disk_gb": (instance.root_gb or 0) + (instance.ephemeral_gb or 0),
        "vcpus": instance.vcpus,
        "host": instance.host,
        "node": instance.node,
        "state": instance.vm_state,
        "state_description": instance.task_state or "",
        "launched_at": _iso(instance.launched_at),
        "terminated_at": _iso(instance.terminated_at),
        "deleted_at": _iso(instance.deleted_at),
        "audit_period_beginning": begin.isoformat(),
        "audit_period_ending": end.isoformat(),
        "bandwidth": dict(bandwidth),
    }


def instance_usage_audit(c: Compute, report: RunReport) -> None:
    """Emit one compute.instance.exists per instance active in the last audit period."""
    if not c.options.instance_usage_audit:
        report.skipped = "instance_usage_audit is false"
        return
    begin, end = last_completed_audit_period(c.options.instance_usage_audit_period, c.now())
    with c.db.reader(allow_replica=True) as session:
        logged = session.execute(
            select(TaskLog.id, TaskLog.state, TaskLog.updated_at, TaskLog.created_at).where(
                TaskLog.task_name == AUDIT_TASK,
                TaskLog.host == c.host,
                TaskLog.period_beginning == begin,
                TaskLog.period_ending == end,
                TaskLog.deleted == 0,
            )
        ).one_or_none()
        stuck = logged is not None and _stuck(
            c, logged.state, logged.id, logged.updated_at or logged.created_at
        )
        if logged is not None and not stuck:
            report.skipped = f"audit of {begin:%Y-%m-%d %H:%M} already {logged.state}"
            return
        # deleted instances count too: they existed during the period
        instances = list(
            session.scalars(
                select(Instance).where(
                    Instance.host == c.host,
                    Instance.launched_at < end,
                    or_(Instance.terminated_at.is_(None), Instance.terminated_at > begin),
                )
            )
        )
        usage: dict[str, dict[str, dict[str, int]]] = {}
        for row in session.scalars(
            select(BandwidthUsage).where(
                BandwidthUsage.uuid.in_([i.uuid for i in instances]),
                BandwidthUsage.start_period == begin,
                BandwidthUsage.deleted == 0,
            )
        ):
            usage.setdefault(row.uuid or "", {})[row.mac or ""] = {
                "bw_in": row.bw_in or 0,
                "bw_out": row.bw_out or 0,
            }
    report.items = len(instances)
    if logged is not None:  # an audit that died RUNNING: take it over, once
        with c.db.writer() as session:
            if not c.guarded(
                session,
                update(TaskLog)
                .where(
                    TaskLog.id == logged.id,
                    TaskLog.state == "RUNNING",
                    TaskLog.updated_at.is_not_distinct_from(logged.updated_at),
                )
                .values(updated_at=c.now(), message="Instance usage audit taken over"),
                report,
                what=f"takeover of the audit for {begin:%Y-%m-%d}",
            ):
                return
        report.details["taken_over"] = logged.id
    else:
        _start_audit(c, report, begin, end, len(instances))
        if report.details.get("audit_started") is None:
            return
    _finish_audit(c, report, begin, end, instances, usage)


def _stuck(c: Compute, state: str, log_id: int, since: datetime | None) -> bool:
    """A RUNNING audit this process started (and crashed in), or one silent for too long."""
    if state != "RUNNING":
        return False
    if log_id in c.memory.get("audit_ids", set()):
        return True
    return since is None or since + timedelta(seconds=AUDIT_STUCK_AFTER) <= c.now()


def _start_audit(c: Compute, report: RunReport, begin: datetime, end: datetime, items: int) -> None:
    with c.db.writer() as session:  # start: unique key (task, host, period) guards it
        claim = select(
            literal(AUDIT_TASK),
            literal("RUNNING"),
            literal(c.host),
            literal(begin),
            literal(end),
            literal("Instance usage audit started"),
            literal(items),
            literal(0),
            literal(c.now()),
            literal(0),
        ).where(
            ~exists().where(
                TaskLog.task_name == AUDIT_TASK,
                TaskLog.host == c.host,
                TaskLog.period_beginning == begin,
                TaskLog.period_ending == end,
            )
        )
        result = c.guarded_result(
            session,
            insert(TaskLog).from_select(
                [
                    "task_name",
                    "state",
                    "host",
                    "period_beginning",
                    "period_ending",
                    "message",
                    "task_items",
                    "errors",
                    "created_at",
                    "deleted",
                ],
                claim,
            ),
            report,
            what=f"start of the audit for {begin:%Y-%m-%d}",
        )
        if result is None:
            return
        started = result.lastrowid  # LAST_INSERT_ID(): no read on the primary
    # remember it: if this process dies mid-audit and retries, the row is ours to finish
    c.memory.setdefault("audit_ids", set()).add(started)
    report.details["audit_started"] = started


def _finish_audit(
    c: Compute,
    report: RunReport,
    begin: datetime,
    end: datetime,
    instances: list[Instance],
    usage: dict[str, dict[str, dict[str, int]]],
) -> None:
    errors = 0
    for instance in instances:
        try:
            c.notify(
                report,
                "compute.instance.exists",
                _exists_payload(instance, begin, end, usage.get(instance.uuid, {})),
            )
        except Exception:  # noqa: BLE001 - Nova counts a failed notification and goes on
            errors += 1
    with c.db.writer() as session:
        c.guarded(
            session,
            update(TaskLog)
            .where(
                TaskLog.task_name == AUDIT_TASK,
                TaskLog.host == c.host,
                TaskLog.period_beginning == begin,
                TaskLog.period_ending == end,
                TaskLog.state == "RUNNING",
            )
            .values(
                state="DONE",
                errors=errors,
                updated_at=c.now(),
                message=f"Instance usage audit ran for host {c.host}, {len(instances)} instances",
            ),
            report,
            what="end of the audit",
        )
    report.details.update(period=[begin.isoformat(), end.isoformat()], errors=errors)


# --- _poll_bandwidth_usage ---------------------------------------------------


def _advance(total: int, last: int | None, counter: int) -> int:
    """Nova's rule: add the counter's growth; after a reset, the whole new counter."""
    if last is None:
        return total  # first sight of this counter: it only sets the baseline
    return total + (counter if counter < last else counter - last)


def poll_bandwidth_usage(c: Compute, report: RunReport) -> None:
    """Fold the hypervisor's per-port byte counters into bw_usage_cache."""
    previous, current = last_completed_audit_period(c.options.instance_usage_audit_period, c.now())
    with c.db.reader(allow_replica=True) as session:
        uuids = list(
            session.scalars(
                select(Instance.uuid).where(Instance.host == c.host, Instance.deleted == 0)
            )
        )
        rows = {
            (r.uuid, r.mac, r.start_period): r
            for r in session.scalars(
                select(BandwidthUsage).where(
                    BandwidthUsage.uuid.in_(uuids),
                    BandwidthUsage.start_period.in_([previous, current]),
                    BandwidthUsage.deleted == 0,
                )
            )
        }
    counters = c.driver.get_all_bw_counters(uuids)
    report.driver_calls += 1
    report.items = len(counters)
    refreshed = c.now()
    with c.db.writer() as session:
        for ctr in counters:
            uuid, mac = ctr["uuid"], ctr["mac_address"]
            row = rows.get((uuid, mac, current))
            base = row or rows.get((uuid, mac, previous))
            last_in = base.last_ctr_in if base else None
            last_out = base.last_ctr_out if base else None
            bw_in = _advance(row.bw_in or 0 if row else 0, last_in, ctr["bw_in"])
            bw_out = _advance(row.bw_out or 0 if row else 0, last_out, ctr["bw_out"])
            values = {
                "bw_in": bw_in,
                "bw_out": bw_out,
                "last_ctr_in": ctr["bw_in"],
                "last_ctr_out": ctr["bw_out"],
                "last_refreshed": refreshed,
            }
            if row is not None:
                statement: Any = (
                    update(BandwidthUsage)
                    .where(
                        BandwidthUsage.id == row.id,
                        BandwidthUsage.deleted == 0,
                        _matches(BandwidthUsage.bw_in, row.bw_in),
                        _matches(BandwidthUsage.bw_out, row.bw_out),
                        _matches(BandwidthUsage.last_ctr_in, row.last_ctr_in),
                        _matches(BandwidthUsage.last_ctr_out, row.last_ctr_out),
                    )
                    .values(updated_at=refreshed, **values)
                )
            else:
                statement = insert_unless(
                    BandwidthUsage,
                    {
                        "uuid": uuid,
                        "mac": mac,
                        "start_period": current,
                        "created_at": refreshed,
                        "deleted": 0,
                        **values,
                    },
                    BandwidthUsage.uuid == uuid,
                    BandwidthUsage.mac == mac,
                    BandwidthUsage.start_period == current,
                    BandwidthUsage.deleted == 0,
                )
            c.guarded(session, statement, report, what=f"bandwidth of {uuid}/{mac}")


# --- _poll_volume_usage ------------------------------------------------------

_CURR = ("curr_reads", "curr_read_bytes", "curr_writes", "curr_write_bytes")
_TOT = ("tot_reads", "tot_read_bytes", "tot_writes", "tot_write_bytes")
_DRIVER = ("rd_req", "rd_bytes", "wr_req", "wr_bytes")


def _volume_values(
    row: VolumeUsage | None, usage: Mapping[str, Any], refreshed: datetime
) -> dict[str, Any]:
    """Nova's vol_usage_update without totals: new counters into curr_*; a reset folds."""
    new = [int(usage[k]) for k in _DRIVER]
    values: dict[str, Any] = dict(zip(_CURR, new, strict=True))
    values["curr_last_refreshed"] = refreshed
    if row is None:
        return values
    old = [getattr(row, k) or 0 for k in _CURR]
    if any(n < o for n, o in zip(new, old, strict=True)):  # the VM restarted: keep what it had
        for tot, prev in zip(_TOT, old, strict=True):
            values[tot] = (getattr(row, tot) or 0) + prev
        values["tot_last_refreshed"] = refreshed
    return values


def _volume_payload(
    instance: Instance, volume_id: str, values: Mapping[str, Any], row: VolumeUsage | None
) -> dict[str, Any]:
    def total(tot: str, curr: str) -> int:
        base = values.get(tot, getattr(row, tot) if row else 0) or 0
        return int(base) + int(values[curr])

    return {
        "volume_id": volume_id,
        "instance_id": instance.uuid,
        "tenant_id": instance.project_id,
        "user_id": instance.user_id,
        "availability_zone": instance.availability_zone,
        "reads": total("tot_reads", "curr_reads"),
        "read_bytes": total("tot_read_bytes", "curr_read_bytes"),
        "writes": total("tot_writes", "curr_writes"),
        "write_bytes": total("tot_write_bytes", "curr_write_bytes"),
        "last_refreshed": values["curr_last_refreshed"].isoformat(),
    }


def poll_volume_usage(c: Compute, report: RunReport) -> None:
    """Record the hypervisor's per-volume I/O counters in volume_usage_cache."""
    if c.options.volume_usage_poll_interval == 0:
        report.skipped = "volume_usage_poll_interval is 0"
        return
    with c.db.reader(allow_replica=True) as session:
        pairs: Sequence[tuple[Instance, str]] = [
            (instance, volume_id)
            for instance, volume_id in session.execute(
                select(Instance, BlockDeviceMapping.volume_id)
                .join(BlockDeviceMapping, BlockDeviceMapping.instance_uuid == Instance.uuid)
                .where(
                    Instance.host == c.host,
                    Instance.deleted == 0,
                    BlockDeviceMapping.deleted == 0,
                    BlockDeviceMapping.destination_type == "volume",
                    BlockDeviceMapping.volume_id.is_not(None),
                )
            )
            if volume_id
        ]
        rows = {
            r.volume_id: r
            for r in session.scalars(
                select(VolumeUsage).where(
                    VolumeUsage.volume_id.in_([v for _, v in pairs]), VolumeUsage.deleted == 0
                )
            )
        }
    if not pairs:
        return
    instances = {i.uuid: i for i, _ in pairs}
    usages = c.driver.get_all_volume_usage([(i.uuid, v) for i, v in pairs])
    report.driver_calls += 1
    report.items = len(usages)
    refreshed = c.now()
    payloads: list[dict[str, Any]] = []
    with c.db.writer() as session:
        for usage in usages:
            volume_id, instance = usage["volume"], instances[usage["instance"]]
            row = rows.get(volume_id)
            values = _volume_values(row, usage, refreshed)
            if row is not None:
                statement: Any = (
                    update(VolumeUsage)
                    .where(
                        VolumeUsage.id == row.id,
                        VolumeUsage.deleted == 0,
                        *(_matches(getattr(VolumeUsage, k), getattr(row, k)) for k in _CURR + _TOT),
                    )
                    .values(updated_at=refreshed, instance_uuid=instance.uuid, **values)
                )
            else:
                statement = insert_unless(
                    VolumeUsage,
                    {
                        "volume_id": volume_id,
                        "instance_uuid": instance.uuid,
                        "project_id": instance.project_id,
                        "user_id": instance.user_id,
                        "availability_zone": instance.availability_zone,
                        "created_at": refreshed,
                        "deleted": 0,
                        **values,
                    },
                    VolumeUsage.volume_id == volume_id,
                    VolumeUsage.deleted == 0,
                )
            if c.guarded(session, statement, report, what=f"I/O counters of {volume_id}"):
                payloads.append(_volume_payload(instance, volume_id, values, row))
    for payload in payloads:  # after the commit: never announce what was not stored
        c.notify(report, "volume.usage", payload)
