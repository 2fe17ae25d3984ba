"""update_available_resource on real servers: replica reads, primary writes, guarded usage."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from offload.db import Database
from offload.pytest import ComputeFactory, DbFactory, WaitForReplication
from offload.schema import ComputeNode, Instance, Migration

from .conftest import ALL_ON, PausedApplier, RunOnReplica, RunWithoutReplica, new_instance

TASK = "update_available_resource"


def _seed(db: Database) -> None:
    with db.writer() as session:
        session.add_all(
            [
                new_instance(memory_mb=2048, vcpus=2, root_gb=20, ephemeral_gb=5),
                new_instance(memory_mb=1024, vcpus=1, root_gb=10),
                new_instance(host="compute-2", memory_mb=4096, vcpus=4, root_gb=40),
            ]
        )


def _node(db: Database) -> ComputeNode:
    with db.reader() as session:
        return session.scalars(select(ComputeNode).where(ComputeNode.host == "compute-1")).one()


def test_usage_is_recomputed_from_replica_reads(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
) -> None:
    _seed(offload_db)
    manager = offload_compute_factory(offload_db, options=ALL_ON)
    first = run_on_replica(manager, TASK)  # creates the node record
    assert first.report.written == 1
    offload_wait_for_replication(offload_db)
    second = run_on_replica(manager, TASK)
    assert second.report.written == 1 and second.report.rejected == 0
    node = _node(offload_db)
    reserved = ALL_ON.reserved_host_memory_mb
    assert (node.vcpus_used, node.memory_mb_used, node.local_gb_used) == (3, 3072 + reserved, 35)
    assert node.running_vms == 2
    assert node.free_ram_mb == node.memory_mb - node.memory_mb_used


def test_without_slave_connection_reads_hit_the_primary(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    run_without_replica: RunWithoutReplica,
) -> None:
    db = offload_db_factory(with_replica=False)
    _seed(db)
    report = run_without_replica(offload_compute_factory(db, options=ALL_ON), TASK)
    assert report.written == 1
    assert _node(db).running_vms == 2


def test_usage_from_a_stale_replica_is_refused(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    paused_applier: PausedApplier,
) -> None:
    manager = offload_compute_factory(offload_db, options=ALL_ON)
    with offload_db.writer() as session:
        session.add(new_instance(memory_mb=512))
    manager.run(TASK)
    offload_wait_for_replication(offload_db)  # the replica holds the node record and the instance
    with paused_applier():
        # meanwhile on the primary: the instance grows and the record is rewritten
        with offload_db.writer() as session:
            session.execute(update(Instance).values(memory_mb=8192))
            session.execute(
                update(ComputeNode).values(memory_mb_used=9999, updated_at=datetime(2030, 1, 1))
            )
        report = manager.run(TASK)  # reads the stale replica
    assert report.rejected == 1 and report.written == 0
    assert _node(offload_db).memory_mb_used == 9999  # the stale usage did not overwrite it
    offload_wait_for_replication(offload_db)
    report = manager.run(TASK)  # caught up: the next run corrects the record
    assert report.written == 1 and report.rejected == 0
    assert _node(offload_db).memory_mb_used == 8192 + ALL_ON.reserved_host_memory_mb


def test_in_progress_migrations_from_and_to_the_node_count_once(
    offload_db: Database,
    offload_wait_for_replication: WaitForReplication,
    offload_compute_factory: ComputeFactory,
    run_on_replica: RunOnReplica,
) -> None:
    """Both sides of Nova's condition (the query is a UNION of them): an incoming and an
    outgoing migration each read once, a resize on the same node once, not twice; finished,
    deleted and other nodes' migrations not at all.  Incoming ones of instances not
    listed here yet are the node's workload."""

    instances: list[Instance] = []

    def migration(source: str, dest: str, **fields: object) -> Migration:
        # its instance listed on no node of compute-1 yet
        instances.append(new_instance(host="compute-9"))
        values: dict[str, object] = {
            "instance_uuid": instances[-1].uuid,
            "source_compute": source,
            "dest_compute": dest,
            "source_node": f"{source}.node",
            "dest_node": f"{dest}.node",
            "status": "migrating",
        }
        values.update(fields)
        return Migration(**values)

    _seed(offload_db)
    migrations = [
        migration("compute-2", "compute-1"),  # incoming: workload
        migration("compute-1", "compute-2"),  # outgoing
        migration("compute-1", "compute-1", status="post-migrating"),  # both sides
        migration("compute-2", "compute-1", status="confirmed"),  # finished
        migration("compute-2", "compute-1", deleted=1),  # deleted
        migration("compute-2", "compute-3"),  # another node's
    ]
    with offload_db.writer() as session:
        session.add_all(instances)
        session.flush()
        session.add_all(migrations)
    manager = offload_compute_factory(offload_db, options=ALL_ON)
    run_on_replica(manager, TASK)  # creates the node record
    offload_wait_for_replication(offload_db)
    run = run_on_replica(manager, TASK)
    assert run.report.items == 2 + 3  # compute-1's instances + its migrations in progress
    assert _node(offload_db).current_workload == 2  # incoming, and the same-node resize
