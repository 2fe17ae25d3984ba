"""offload.seed on a real primary with a GTID replica."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, text

from offload import schema
from offload.db import Database
from offload.pytest import WaitForReplication
from offload.seed import Kind, SeedSummary, host_names, instance_kind, node_name, plan, seed

NOW = datetime(2025, 3, 10, 12, 30, 0)
TABLES = [name for name in schema.NOVA_TABLES if name != "heartbeat"]


def table_counts(db: Database, *, allow_replica: bool) -> dict[str, int]:
    with db.reader(allow_replica=allow_replica) as session:
        return {
            name: int(
                session.execute(
                    select(func.count()).select_from(schema.metadata.tables[name])
                ).scalar_one()
            )
            for name in TABLES
        }


def test_seed_writes_the_plan_on_the_primary_and_it_replicates(
    offload_db: Database, offload_wait_for_replication: WaitForReplication
) -> None:
    summary = seed(offload_db, instances=2000, hosts=4, seed=11, now=NOW, batch=500)

    assert isinstance(summary, SeedSummary)
    assert summary.instances == 2000
    assert summary.hosts == tuple(host_names(4))
    assert summary.elapsed > 0
    primary = table_counts(offload_db, allow_replica=False)
    assert primary == dict(summary.rows)

    with offload_db.reader() as session:
        deleted = session.execute(
            text(
                "SELECT COUNT(*), SUM(deleted = id), SUM(cleaned = 0) FROM instances "
                "WHERE vm_state = 'deleted'"
            )
        ).one()
        live_with_deleted_id = session.execute(
            text("SELECT COUNT(*) FROM instances WHERE vm_state <> 'deleted' AND deleted <> 0")
        ).scalar_one()
        per_host = {
            host: count
            for host, count in session.execute(
                text("SELECT host, COUNT(*) FROM instances GROUP BY host")
            )
        }
        nodes = [
            tuple(row)
            for row in session.execute(
                text(
                    "SELECT n.host, n.hypervisor_hostname, s.host FROM compute_nodes n "
                    "JOIN services s ON s.id = n.service_id ORDER BY n.id"
                )
            )
        ]
        updated_kept = session.execute(
            text(
                "SELECT COUNT(*) FROM instances WHERE vm_state = 'deleted' "
                "AND updated_at <> terminated_at"
            )
        ).scalar_one()
    expected_deleted = summary.kinds[Kind.DELETED] + summary.kinds[Kind.CLEANED]
    assert deleted[0] == expected_deleted > 0
    assert int(deleted[1]) == expected_deleted  # deleted = the row's own id
    assert int(deleted[2]) == summary.kinds[Kind.DELETED]
    assert live_with_deleted_id == 0
    assert per_host == {host: sum(c.values()) for host, c in summary.per_host.items()}
    assert nodes == [(h, node_name(h), h) for h in host_names(4)]
    assert updated_kept == 0  # the soft-delete UPDATE left updated_at as planned

    offload_wait_for_replication(offload_db)
    assert table_counts(offload_db, allow_replica=True) == primary
    with offload_db.reader(allow_replica=True) as session:
        replica_deleted = session.execute(
            text("SELECT COUNT(*) FROM instances WHERE deleted = id")
        ).scalar_one()
    assert replica_deleted == expected_deleted


def test_rows_read_back_equal_the_plan(offload_db: Database) -> None:
    seed(offload_db, instances=300, hosts=3, seed=5, now=NOW, batch=64)
    planned = plan(300, 3, 5, NOW)
    for name, rows in planned.items():
        table = schema.metadata.tables[name]
        with offload_db.reader() as session:
            stored = [
                dict(row._mapping) for row in session.execute(select(table).order_by(table.c.id))
            ]
        assert len(stored) == len(rows), name
        for row, got in zip(rows, stored, strict=True):
            want = dict(row)
            if name == "compute_nodes":
                assert got["service_id"] is not None
                del want["service_id"]
            if name == "instances" and instance_kind(row).deleted:
                assert got["deleted"] == got["id"]
                del want["deleted"]
            assert {k: got[k] for k in want} == want, name
