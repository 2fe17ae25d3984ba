"""``update_available_resource``: recompute each node's usage from what runs on it.

Reads (replica): this host's compute_nodes; instances on each node (live ones);
in-progress migrations into or out of the node.  Writes (primary): the node's
usage columns — compare-and-set on the ``updated_at`` the replica showed, so
usage computed from a stale copy never overwrites a newer record — and the
soft delete of compute nodes the hypervisor no longer reports (conditional on
the row still belonging to this host).  A node the hypervisor reports but the
database lacks is created, as Nova's resource tracker does.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, select, union, update
from sqlalchemy.orm import Session

from offload.compute.context import Compute, RunReport, insert_unless
from offload.schema import ComputeNode, Instance, Migration, soft_delete_values

__all__ = ["IN_PROGRESS_EXCLUDED", "update_available_resource"]

#: migration states Nova's resource tracker does not count as in progress
IN_PROGRESS_EXCLUDED = ("confirmed", "reverted", "error", "failed")
#: instance states that hold no resources on the node
_NOT_CONSUMING = ("deleted", "shelved_offloaded")
#: task states Nova counts as the node's current workload
_WORKLOAD_TASK_STATES = (
    "scheduling",
    "block_device_mapping",
    "networking",
    "spawning",
    "rebuilding",
    "rebuild_spawning",
    "resize_migrating",
    "resize_prep",
    "image_snapshot",
    "image_backup",
)


def _usage(
    instances: Sequence[Instance], incoming: Sequence[Migration], tracked: set[str]
) -> dict[str, int]:
    vcpus = memory = disk = workload = running = 0
    for instance in instances:
        if instance.vm_state in _NOT_CONSUMING:
            continue
        vcpus += instance.vcpus or 0
        memory += instance.memory_mb or 0
        disk += (instance.root_gb or 0) + (instance.ephemeral_gb or 0)
        running += 1
        if instance.task_state in _WORKLOAD_TASK_STATES:
            workload += 1
    # an instance migrating here holds its room before it is listed on this node
    for migration in incoming:
        if migration.instance_uuid not in tracked:
            workload += 1
    return {
        "vcpus_used": vcpus,
        "memory_mb_used": memory,
        "local_gb_used": disk,
        "running_vms": running,
        "current_workload": workload,
    }


def _in_progress_migrations(session: Session, host: str, node: str) -> list[Migration]:
    """The migrations in progress from or to ``host``'s ``node``: Nova's condition
    (``deleted = 0``, status not finished, (source host and node) OR (dest host and
    node)) as a UNION of its two sides, each a range of its own index
    (``migrations_by_src_host_nodes_and_status_idx``, ``..._by_dest_...``).  Written with
    the OR, MySQL 9.7 reads every undeleted migration through the ``deleted`` prefix (1,000
    rows examined at 25,000 instances, growing with the table; `make bench` scaling);
    MariaDB merges the two indexes itself."""
    sides = (
        and_(Migration.source_compute == host, Migration.source_node == node),
        and_(Migration.dest_compute == host, Migration.dest_node == node),
    )
    sides_selects = [
        select(Migration).where(
            Migration.deleted == 0, Migration.status.not_in(IN_PROGRESS_EXCLUDED), side
        )
        for side in sides
    ]
    statement = select(Migration).from_statement(union(*sides_selects))
    return list(session.scalars(statement))


def update_available_resource(c: Compute, report: RunReport) -> None:
    nodes = c.driver.get_available_nodes()
    report.driver_calls += 1
    with c.db.reader(allow_replica=True) as session:
        records = {
            n.hypervisor_hostname: n
            for n in session.scalars(
                select(ComputeNode).where(ComputeNode.host == c.host, ComputeNode.deleted == 0)
            )
        }
        per_node: dict[str, tuple[list[Instance], list[Migration]]] = {}
        for node in nodes:
            instances = list(
                session.scalars(
                    select(Instance).where(
                        Instance.host == c.host, Instance.node == node, Instance.deleted == 0
                    )
                )
            )
            migrations = _in_progress_migrations(session, c.host, node)
            per_node[node] = (instances, migrations)

    reserved_mb = c.options.reserved_host_memory_mb
    reserved_gb = (c.options.reserved_host_disk_mb + 1023) // 1024
    with c.db.writer() as session:
        for node in nodes:
            resources = c.driver.get_available_resource(node)
            report.driver_calls += 1
            instances, migrations = per_node[node]
            report.items += len(instances) + len(migrations)
            tracked = {i.uuid for i in instances}
            incoming = [m for m in migrations if m.dest_compute == c.host]
            usage = _usage(instances, incoming, tracked)
            memory_used = usage["memory_mb_used"] + reserved_mb
            disk_used = usage["local_gb_used"] + reserved_gb
            values = {
                **usage,
                "memory_mb_used": memory_used,
                "local_gb_used": disk_used,
                "vcpus": resources["vcpus"],
                "memory_mb": resources["memory_mb"],
                "local_gb": resources["local_gb"],
                "free_ram_mb": resources["memory_mb"] - memory_used,
                "free_disk_gb": resources["local_gb"] - disk_used,
                "hypervisor_type": resources["hypervisor_type"],
                "hypervisor_version": resources["hypervisor_version"],
                "cpu_info": resources["cpu_info"],
                "disk_available_least": resources["disk_available_least"],
                "updated_at": c.now(),
            }
            record = records.get(node)
            if record is None:  # create it, unless the primary has it already
                c.guarded(
                    session,
                    insert_unless(
                        ComputeNode,
                        {
                            "host": c.host,
                            "hypervisor_hostname": node,
                            "created_at": c.now(),
                            "deleted": 0,
                            **values,
                        },
                        ComputeNode.host == c.host,
                        ComputeNode.hypervisor_hostname == node,
                        ComputeNode.deleted == 0,
                    ),
                    report,
                    what=f"record of node {node}",
                )
                continue
            c.guarded(
                session,
                update(ComputeNode)
                .where(
                    ComputeNode.id == record.id,
                    ComputeNode.deleted == 0,
                    ComputeNode.updated_at.is_not_distinct_from(record.updated_at),
                )
                .values(**values),
                report,
                what=f"usage of node {node}",
            )
        for name, record in records.items():
            if name not in nodes:  # the hypervisor no longer reports it: an orphan
                c.guarded(
                    session,
                    update(ComputeNode)
                    .where(
                        ComputeNode.id == record.id,
                        ComputeNode.host == c.host,
                        ComputeNode.deleted == 0,
                    )
                    .values(**soft_delete_values(ComputeNode.id)),
                    report,
                    what=f"orphan node {name}",
                )
    report.details["nodes"] = len(nodes)
