"""Switchover and failover while the service runs and a writer commits: nothing lost or
doubled, the task runs keep succeeding, reads come back to a replica, no restart."""

from __future__ import annotations

import pymysql
import pytest
from sqlalchemy import text

from offload import replication
from offload.db import Database
from offload.errors import ServerDiverged, TestbedError
from offload.pytest import ComputeFactory, DbFactory, WaitForReplication
from offload.testbed import roles
from offload.testbed.native import NativeTopology, endpoint_name
from offload.testbed.process import pid_alive
from offload.tracing import QueryTrace
from offload.waiting import Deadline, wait_for

from .scenario import (
    ALL_ON,
    BANDWIDTH,
    _served_by,
    consistent,
    role_change_under_load,
    service_database,
)


@pytest.fixture
def service_db(
    offload_db_factory: DbFactory, offload_wait_for_replication: WaitForReplication
) -> Database:
    return service_database(offload_db_factory, offload_wait_for_replication)


@pytest.mark.parametrize("kind", ["switchover", "failover"])
def test_a_role_change_under_load_loses_and_doubles_nothing(
    kind: str,
    service_db: Database,
    offload_compute_factory: ComputeFactory,
    topology: NativeTopology,
    offload_trace: QueryTrace,
    heal: None,
) -> None:
    role_change_under_load(
        kind,
        service_db,
        offload_compute_factory,
        topology,
        offload_trace,
        on_diverged=lambda old: bool(roles.rebuild(topology, old)),
    )


def test_a_replica_endpoint_leading_to_the_primary_is_counted_never_read(
    service_db: Database,
    offload_compute_factory: ComputeFactory,
    topology: NativeTopology,
    offload_trace: QueryTrace,
    heal: None,
) -> None:
    """What a direct replica URL sees when its server is promoted: reads routed as replica
    land on the server acting as primary.  The guard notices (the answering @@server_id is
    the one the heartbeat goes to), falls back to the primary and counts why."""
    db = service_db
    manager = offload_compute_factory(db, options=ALL_ON)
    manager.run(BANDWIDTH)
    state = topology.state()
    links = topology.links()
    replica_endpoint = endpoint_name("replica0")
    to_replica = links.record(replica_endpoint).upstream_port
    links.retarget(replica_endpoint, state.host, state.source_port)
    try:

        def counted() -> bool:
            report = manager.run(BANDWIDTH)
            assert report.error is None, report.as_dict()
            return bool(report.details["routing"].get("fallbacks") == {"replica_is_primary": 1})

        assert wait_for(counted, Deadline(10), interval=0.05)
        report = manager.run(BANDWIDTH)
        served = _served_by(offload_trace, BANDWIDTH, report.run)
        assert {target for target, _ in served} == {"primary"}  # none on replica0
        assert "answers as the primary" in report.details["routing"]["why"]["replica_is_primary"]
        # the lag probe sees it too, at its next reading (the session's check came first)
        assert wait_for(
            lambda: db.guard.readings()["replica0"].unfit_reason == "replica_is_primary",
            Deadline(10),
            interval=0.02,
        ), db.guard.readings()
        assert not db.guard.readings()["replica0"].usable
        assert (BANDWIDTH, "replica_is_primary") in db.routing.fallbacks
    finally:
        links.retarget(replica_endpoint, state.host, to_replica)
    replica_id = state.servers[state.replicas()[0]].server_id
    assert wait_for(
        lambda: (
            _served_by(offload_trace, BANDWIDTH, manager.run(BANDWIDTH).run)
            == {("replica0", replica_id)}
        ),
        Deadline(10),
        interval=0.05,
    ), "reads did not come back to the replica"


def test_impossible_requests_are_one_line(topology: NativeTopology, heal: None) -> None:
    with pytest.raises(TestbedError, match="is running: a failover promotes a replica only"):
        roles.failover(topology)
    with pytest.raises(TestbedError, match="no departed primary to rejoin"):
        roles.rejoin(topology)
    state = topology.state()
    with pytest.raises(TestbedError, match=f"{state.primary} is not a running replica"):
        roles.switchover(topology, to=state.primary)
    flavor = replication.Flavor(state.flavor)
    replica = state.replicas()[0]
    with topology.connect(replica) as conn:
        replication.stop_replica(conn, flavor)
    try:
        with pytest.raises(TestbedError, match=f"{replica} cannot be promoted"):
            roles.switchover(topology)
    finally:
        with topology.connect(replica) as conn:
            replication.start_replica(conn, flavor)


def test_a_primary_with_transactions_the_new_one_lacks_is_kept_out_then_rebuilt(
    topology: NativeTopology, heal: None
) -> None:
    state = topology.state()
    flavor = replication.Flavor(state.flavor)
    old, replica = state.primary, state.replicas()[0]
    database = "nova"
    with topology.connect(replica) as conn:  # the replica stops receiving...
        replication.stop_replica(conn, flavor)
    with topology.connect(old) as conn:  # ...so this commit exists only on the old primary
        conn.execute(text(f"CREATE TABLE `{database}`.only_on_the_old_primary (i INT)"))
    topology.kill(old)
    with topology.connect(replica) as conn:
        replication.start_replica(conn, flavor)
    change = roles.failover(topology)
    assert change.new == replica
    with pytest.raises(ServerDiverged, match=f"server {old} diverged"):
        roles.rejoin(topology, old)
    after = topology.state()
    assert after.diverged == (old,) and old not in after.replicas() and not after.departed
    with topology.connect(old) as conn:  # kept out: no source, read-only
        assert replication.replica_status(conn, flavor) is None
        assert conn.execute(text("SELECT @@read_only")).scalar() == 1
    with pytest.raises(TestbedError, match="diverged from the primary and is kept out"):
        roles.rejoin(topology, old)

    rebuilt = roles.rebuild(topology, old)  # made again from the primary: the extra is gone
    assert rebuilt.new == replica and not topology.state().diverged
    fresh_id = topology.state().servers[old].server_id  # a new server: an id of its own
    assert fresh_id not in {r.server_id for r in state.servers.values()}
    seen = consistent(topology, "nova", ["instances"])
    assert set(seen) == {old, replica}
    with topology.connect(old) as conn:
        assert not conn.execute(
            text(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = 'nova' AND table_name = 'only_on_the_old_primary'"
            )
        ).scalar()
    links = topology.links()  # the replica endpoint leads to it again
    assert links.record(endpoint_name("replica0")).upstream_port == after.servers[old].port


def _server_id_through(port: int, password: str) -> int:
    conn = pymysql.connect(
        host="127.0.0.1", port=port, user="offload_admin", password=password, connect_timeout=5
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT @@server_id")
            row = cursor.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        conn.close()


def test_an_endpoint_moves_its_connections_and_outlives_a_restart(
    topology: NativeTopology, heal: None
) -> None:
    """A retarget resets what the endpoint relayed and sends new connections to the new
    server; a restarted testbed's replica endpoint leading to the primary stays cut."""
    state = topology.state()
    password = topology.credentials().admin
    replica = state.replicas()[0]
    links = topology.links()
    name = endpoint_name("replica0")
    port = links.record(name).listen_port
    held = pymysql.connect(host="127.0.0.1", port=port, user="offload_admin", password=password)
    try:
        assert _server_id_through(port, password) == state.servers[replica].server_id
        links.retarget(name, state.host, state.source_port)
        with pytest.raises(pymysql.err.OperationalError), held.cursor() as cursor:
            cursor.execute("SELECT 1")  # reset by the move: no session outlives it
        assert _server_id_through(port, password) == state.servers[state.primary].server_id
        assert links.control(name, "GET", "/link")["retargets"] >= 1
    finally:
        held.close()
    moved = links.record(name)
    topology.down()  # the proxy is known by its name and ports, whatever it relays to
    assert moved.pid is not None and not pid_alive(moved.pid)
    topology.up()
    with pytest.raises(pymysql.err.OperationalError):  # no replica behind it: cut
        _server_id_through(port, password)
    links.retarget(name, state.host, state.servers[replica].port)  # and open again
    assert _server_id_through(port, password) == state.servers[replica].server_id
