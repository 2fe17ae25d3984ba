"""Tasks that keep instance state in line with the hypervisor and finish stuck operations.

``_sync_power_states``, ``_heal_instance_info_cache``, ``_poll_rebooting_instances``,
``_poll_rescued_instances``, ``_poll_unconfirmed_resizes``, ``_poll_shelved_instances``.
Candidates come from the replica; every state change is a compare-and-set on
the primary against the state that was read (Nova's ``expected_task_state``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, select, update

from offload.compute.context import Compute, RunReport
from offload.compute.driver import PowerState
from offload.compute.network import macs_for
from offload.schema import (
    SHELVED_AT_KEY,
    Instance,
    InstanceInfoCache,
    InstanceSystemMetadata,
    Migration,
)

__all__ = [
    "REBOOTING_STATES",
    "heal_instance_info_cache",
    "poll_rebooting_instances",
    "poll_rescued_instances",
    "poll_shelved_instances",
    "poll_unconfirmed_resizes",
    "sync_power_states",
]

#: Nova's reboot task states (Juno added the two-step ones)
REBOOTING_STATES = ("rebooting", "reboot_pending", "reboot_started")
_HEAL_SKIP_TASK_STATES = (
    "spawning",
    "scheduling",
    "block_device_mapping",
    "networking",
    "deleting",
)


def _older_than(moment: datetime | None, seconds: int, now: datetime) -> bool:
    return moment is not None and moment + timedelta(seconds=seconds) <= now


def sync_power_states(c: Compute, report: RunReport) -> None:
    """Record the hypervisor's power state of every idle instance on this host."""
    with c.db.reader(allow_replica=True) as session:
        uuids = list(
            session.scalars(
                select(Instance.uuid).where(Instance.host == c.host, Instance.deleted == 0)
            )
        )
        changes: list[tuple[str, int | None, int]] = []
        for uuid in uuids:
            # re-read each one, as Nova does before it syncs an instance
            current = session.execute(
                select(
                    Instance.host,
                    Instance.task_state,
                    Instance.power_state,
                ).where(Instance.uuid == uuid, Instance.deleted == 0)
            ).one_or_none()
            if current is None or current.host != c.host or current.task_state is not None:
                continue  # gone, moved, or an operation is under way
            actual = int(c.driver.get_info(uuid))
            report.driver_calls += 1
            if actual != current.power_state:
                changes.append((uuid, current.power_state, actual))
    report.items = len(uuids)
    if not changes:
        return
    with c.db.writer() as session:
        for uuid, seen, actual in changes:
            c.guarded(
                session,
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.host == c.host,
                    Instance.deleted == 0,
                    Instance.task_state.is_(None),
                    Instance.power_state.is_not_distinct_from(seen),
                )
                .values(power_state=actual, updated_at=c.now()),
                report,
                what=f"power state of {uuid}",
            )


def _network_info(uuid: str) -> str:
    """What the (simulated) network service says about the instance's ports."""
    return json.dumps(
        [
            {
                "id": f"port-{mac[-8:].replace(':', '')}",
                "address": mac,
                "type": "ovs",
                "network": {"label": "private"},
            }
            for mac in macs_for(uuid)
        ]
    )


def heal_instance_info_cache(c: Compute, report: RunReport) -> None:
    """Refresh one instance's network info cache per run, round robin over the host."""
    if c.options.heal_instance_info_cache_interval <= 0:
        report.skipped = "heal_instance_info_cache_interval <= 0"
        return
    queue: list[str] = c.memory.setdefault("heal_queue", [])
    with c.db.reader(allow_replica=True) as session:
        if not queue:
            queue.extend(
                session.scalars(
                    select(Instance.uuid)
                    .where(
                        Instance.host == c.host,
                        Instance.deleted == 0,
                        Instance.vm_state != "building",
                    )
                    .order_by(Instance.id)
                )
            )
        chosen = None
        while queue and chosen is None:
            uuid = queue.pop(0)
            row = session.execute(
                select(Instance.host, Instance.task_state).where(
                    Instance.uuid == uuid, Instance.deleted == 0
                )
            ).one_or_none()
            if (
                row is not None
                and row.host == c.host
                and row.task_state not in _HEAL_SKIP_TASK_STATES
            ):
                chosen = uuid
    if chosen is None:
        return
    report.items = 1
    with c.db.writer() as session:
        # fresh from the network service, not derived from the read: no guard needed,
        # but only while the instance lives
        c.guarded(
            session,
            update(InstanceInfoCache)
            .where(
                InstanceInfoCache.instance_uuid == chosen,
                InstanceInfoCache.deleted == 0,
            )
            .values(network_info=_network_info(chosen), updated_at=c.now()),
            report,
            what=f"info cache of {chosen}",
        )
    report.details["healed"] = chosen


def poll_rebooting_instances(c: Compute, report: RunReport) -> None:
    """Hand instances stuck rebooting longer than ``reboot_timeout`` to the hypervisor."""
    timeout = c.options.reboot_timeout
    if timeout <= 0:
        report.skipped = "reboot_timeout is 0"
        return
    with c.db.reader(allow_replica=True) as session:
        rows = session.execute(
            select(Instance.uuid, Instance.updated_at).where(
                Instance.host == c.host,
                Instance.deleted == 0,
                Instance.task_state.in_(REBOOTING_STATES),
            )
        ).all()
    now = c.now()
    stuck = [uuid for uuid, updated in rows if _older_than(updated, timeout, now)]
    report.items = len(rows)
    c.driver.poll_rebooting_instances(timeout, stuck)
    report.driver_calls += 1
    report.details["stuck"] = stuck


def poll_rescued_instances(c: Compute, report: RunReport) -> None:
    """Unrescue instances left in rescue longer than ``rescue_timeout``."""
    timeout = c.options.rescue_timeout
    if timeout <= 0:
        report.skipped = "rescue_timeout is 0"
        return
    with c.db.reader(allow_replica=True) as session:
        rows = session.execute(
            select(Instance.uuid, Instance.launched_at).where(
                Instance.host == c.host,
                Instance.deleted == 0,
                Instance.vm_state == "rescued",
                Instance.task_state.is_(None),
            )
        ).all()
    now = c.now()
    due = [uuid for uuid, launched in rows if _older_than(launched, timeout, now)]
    report.items = len(rows)
    for uuid in due:
        with c.db.writer() as session:
            if not c.guarded(
                session,
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.deleted == 0,
                    Instance.vm_state == "rescued",
                    Instance.task_state.is_(None),
                    Instance.host == c.host,
                )
                .values(task_state="unrescuing", updated_at=c.now()),
                report,
                what=f"unrescue of {uuid}",
            ):
                continue
        c.driver.unrescue(uuid)
        report.driver_calls += 1
        with c.db.writer() as session:
            c.guarded(
                session,
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.task_state == "unrescuing",
                )
                .values(
                    vm_state="active",
                    task_state=None,
                    power_state=int(PowerState.RUNNING),
                    updated_at=c.now(),
                ),
                report,
                what=f"end of unrescue of {uuid}",
            )


def _instance_still(
    uuid: str | None, state: tuple[str | None, str | None] | None
) -> ColumnElement[bool]:
    """On the primary, the instance is still in ``state`` (vm_state, task_state), or still gone."""
    live = exists().where(Instance.uuid == uuid, Instance.deleted == 0)
    if state is None:
        return ~live
    vm_state, task_state = state
    return live.where(
        Instance.vm_state.is_not_distinct_from(vm_state),
        Instance.task_state.is_not_distinct_from(task_state),
    )


def _fail_migration(
    c: Compute, report: RunReport, migration_id: int, instance_as_read: ColumnElement[bool]
) -> None:
    with c.db.writer() as session:
        c.guarded(
            session,
            update(Migration)
            .where(
                Migration.id == migration_id,
                Migration.status == "finished",
                instance_as_read,
            )
            .values(status="error", updated_at=c.now()),
            report,
            what=f"error state of migration {migration_id}",
        )


def poll_unconfirmed_resizes(c: Compute, report: RunReport) -> None:
    """Confirm resizes left unconfirmed longer than ``resize_confirm_window``."""
    window = c.options.resize_confirm_window
    if window <= 0:
        report.skipped = "resize_confirm_window is 0"
        return
    cutoff = c.now() - timedelta(seconds=window)
    with c.db.reader(allow_replica=True) as session:
        migrations = session.execute(
            select(Migration.id, Migration.instance_uuid).where(
                Migration.deleted == 0,
                Migration.status == "finished",
                Migration.dest_compute == c.host,
                Migration.updated_at <= cutoff,
            )
        ).all()
        states = {
            uuid: (vm, task)
            for uuid, vm, task in session.execute(
                select(Instance.uuid, Instance.vm_state, Instance.task_state).where(
                    Instance.uuid.in_([m.instance_uuid for m in migrations]), Instance.deleted == 0
                )
            )
        }
    report.items = len(migrations)
    confirmed = 0
    for migration_id, uuid in migrations:
        state = states.get(uuid or "")
        if state is None or state != ("resized", None):
            # gone, or not RESIZED/None: unless the primary shows otherwise
            _fail_migration(c, report, migration_id, _instance_still(uuid, state))
            continue
        with c.db.writer() as session:
            if not c.guarded(
                session,
                update(Migration)
                .where(
                    Migration.id == migration_id,
                    Migration.status == "finished",
                    _instance_still(uuid, state),
                )
                .values(status="confirming", updated_at=c.now()),
                report,
                what=f"confirm of migration {migration_id}",
            ):
                continue
        c.driver.confirm_migration(migration_id, uuid or "")
        report.driver_calls += 1
        with c.db.writer() as session:
            session.connection().execute(
                update(Migration)
                .where(
                    Migration.id == migration_id,
                    Migration.status == "confirming",
                )
                .values(status="confirmed", updated_at=c.now())
            )
            if c.guarded(
                session,
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.vm_state == "resized",
                    Instance.task_state.is_(None),
                )
                .values(vm_state="active", updated_at=c.now()),
                report,
                what=f"resize state of {uuid}",
            ):
                confirmed += 1
    report.details["confirmed"] = confirmed


def _shelved_at(values: Sequence[tuple[str, str | None]]) -> dict[str, datetime]:
    parsed: dict[str, datetime] = {}
    for uuid, text in values:
        try:
            parsed[uuid] = datetime.fromisoformat(text or "").replace(tzinfo=None)
        except ValueError:
            continue  # Nova skips an instance whose shelved_at does not parse
    return parsed


def poll_shelved_instances(c: Compute, report: RunReport) -> None:
    """Offload instances shelved longer than ``shelved_offload_time``."""
    keep = c.options.shelved_offload_time
    if keep <= 0:
        report.skipped = "shelved_offload_time <= 0"
        return
    with c.db.reader(allow_replica=True) as session:
        uuids = list(
            session.scalars(
                select(Instance.uuid).where(
                    Instance.host == c.host,
                    Instance.deleted == 0,
                    Instance.vm_state == "shelved",
                    Instance.task_state.is_(None),
                )
            )
        )
        seen = session.execute(
            select(
                InstanceSystemMetadata.instance_uuid,
                InstanceSystemMetadata.value,
            ).where(
                InstanceSystemMetadata.instance_uuid.in_(uuids),
                InstanceSystemMetadata.key == SHELVED_AT_KEY,
                InstanceSystemMetadata.deleted == 0,
            )
        ).all()
    pairs = [(uuid, value) for uuid, value in seen]
    stamps, texts = _shelved_at(pairs), dict(pairs)
    now = c.now()
    due = [u for u in uuids if u in stamps and _older_than(stamps[u], keep, now)]
    report.items = len(uuids)
    offloaded = 0
    for uuid in due:
        with c.db.writer() as session:
            # claim: still shelved, idle and here, and since the same moment (not
            # unshelved and shelved again) on the primary
            if not c.guarded(
                session,
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.deleted == 0,
                    Instance.vm_state == "shelved",
                    Instance.task_state.is_(None),
                    Instance.host == c.host,
                    exists().where(
                        InstanceSystemMetadata.instance_uuid == uuid,
                        InstanceSystemMetadata.key == SHELVED_AT_KEY,
                        InstanceSystemMetadata.deleted == 0,
                        InstanceSystemMetadata.value == texts[uuid],
                    ),
                )
                .values(task_state="shelving_offloading", updated_at=c.now()),
                report,
                what=f"offload of {uuid}",
            ):
                continue
        c.driver.shelve_offload(uuid)
        report.driver_calls += 1
        with c.db.writer() as session:
            offloaded += c.guarded(
                session,
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.task_state == "shelving_offloading",
                )
                .values(
                    vm_state="shelved_offloaded",
                    task_state=None,
                    host=None,
                    node=None,
                    power_state=int(PowerState.NOSTATE),
                    updated_at=c.now(),
                ),
                report,
                what=f"end of offload of {uuid}",
            )
    report.details["offloaded"] = offloaded
