"""Switchover and failover while the service runs and a writer commits: nothing lost or
doubled, the task runs keep succeeding, reads come back to a replica, no restart."""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

import pymysql
import pytest
from sqlalchemy import func, select, text

from offload import replication
from offload.compute.context import RunReport
from offload.compute.driver import FakeDriver, VolumeCounters
from offload.compute.manager import ComputeManager
from offload.compute.usage import AUDIT_TASK
from offload.config import ComputeSettings, ReplicaSettings, Settings
from offload.db import Database
from offload.errors import ServerDiverged, TestbedError
from offload.pytest import ComputeFactory, DbFactory, WaitForReplication
from offload.schema import BandwidthUsage, BlockDeviceMapping, Instance, TaskLog, VolumeUsage
from offload.testbed import roles
from offload.testbed.drill import CountingWriter, semi_sync
from offload.testbed.native import NativeTopology, endpoint_name
from offload.testbed.process import pid_alive
from offload.tracing import QueryTrace
from offload.waiting import Deadline, wait_for

from ...integration.conftest import new_instance

BANDWIDTH = "_poll_bandwidth_usage"
VOLUME = "_poll_volume_usage"
AUDIT = "_instance_usage_audit"
ALL_ON = ComputeSettings(instance_usage_audit=True, volume_usage_poll_interval=60)
#: the service's tasks during the move: counters, the audit's task_log row, state syncs
SERVICE_TASKS = (BANDWIDTH, VOLUME, AUDIT, "_sync_power_states", "_heal_instance_info_cache")
VOLUME_COUNTERS = ("curr_reads", "curr_read_bytes", "curr_writes", "curr_write_bytes")
VOLUME_TOTALS = ("tot_reads", "tot_read_bytes", "tot_writes", "tot_write_bytes")


def _seed(db: Database, count: int = 20) -> None:
    """Instances launched long ago (every audit period counts them), a volume on each."""
    instances = [new_instance(launched_at=datetime(2000, 1, 1)) for _ in range(count)]
    with db.writer() as session:
        session.add_all(instances)
        session.flush()  # the instances first: the mappings' foreign key
        session.add_all(
            BlockDeviceMapping(
                instance_uuid=instance.uuid,
                source_type="volume",
                destination_type="volume",
                device_name="/dev/vdb",
                volume_id=str(uuidlib.uuid4()),
            )
            for instance in instances
        )


class _VolumeDriver(FakeDriver):
    """The fake hypervisor, remembering the volume counters it reported last."""

    def __init__(self) -> None:
        super().__init__("compute-1", seed=7, counter_reset_rate=0.0)
        self.last_volumes: dict[str, tuple[int, int, int, int]] = {}

    def get_all_volume_usage(self, mappings: Iterable[tuple[str, str]]) -> list[VolumeCounters]:
        usages = super().get_all_volume_usage(mappings)
        self.last_volumes = {
            u["volume"]: (u["rd_req"], u["rd_bytes"], u["wr_req"], u["wr_bytes"]) for u in usages
        }
        return usages


def _uuids(db: Database) -> list[str]:
    with db.reader() as session:
        return list(session.scalars(select(Instance.uuid).where(Instance.deleted == 0)))


class _Service:
    """The compute service's loop: the tasks one after the other, every report kept."""

    def __init__(self, manager: ComputeManager) -> None:
        self.manager = manager
        self.reports: list[RunReport] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="service")

    def _run(self) -> None:
        while not self._stop.is_set():
            for task in SERVICE_TASKS:
                try:
                    self.reports.append(self.manager.run(task))
                except BaseException as exc:  # noqa: BLE001 - the assertion reports it
                    self.failures.append(exc)

    def runs(self, task: str) -> int:
        return sum(r.task == task for r in self.reports)

    @contextmanager
    def running(self) -> Iterator[_Service]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(120)


Seen = dict[str, dict[str, object]]


def _rows_and_checksums(topology: NativeTopology, database: str, tables: list[str]) -> Seen:
    """Per server (its own socket, no endpoint): the writer's rows, CHECKSUM TABLE, GTIDs."""
    state = topology.state()
    flavor = replication.Flavor(state.flavor)
    listed = ", ".join(f"`{database}`.`{t}`" for t in tables)
    seen: Seen = {}
    for name in state.servers:
        if not topology.running(name, state) or name in state.diverged:
            continue
        with topology.connect(name) as conn:
            seen[name] = {
                "checksums": {
                    str(row[0]): row[1] for row in conn.execute(text(f"CHECKSUM TABLE {listed}"))
                },
                "gtid": replication.gtid_position(conn, flavor),
            }
    return seen


def _consistent(topology: NativeTopology, database: str, tables: list[str]) -> Seen:
    """Replication caught up: the same checksums and GTID position on every server."""
    topology.await_replication(topology.state())
    last: list[Seen] = [{}]

    def same() -> bool:
        last[0] = seen = _rows_and_checksums(topology, database, tables)
        values = list(seen.values())
        return len(values) > 1 and all(v == values[0] for v in values)

    assert wait_for(same, Deadline(30), interval=0.1), last[0]
    return last[0]


def _served_by(trace: QueryTrace, task: str, run: str) -> set[tuple[str, int | None]]:
    """(target, @@server_id) of a run's replica-routed SELECTs."""
    return {
        (r.target, r.server.server_id if r.server else None)
        for r in trace.for_task(task)
        if r.run == run and r.route == "replica" and r.verb == "SELECT"
    }


def _bandwidth_exact(db: Database, baseline: dict[tuple[str, str], int]) -> None:
    with db.reader() as session:
        rows = session.scalars(select(BandwidthUsage)).all()
    assert rows
    for row in rows:  # growth since the baseline, counted exactly once
        assert row.uuid and row.mac
        assert row.bw_in == (row.last_ctr_in or 0) - baseline[(row.uuid, row.mac)], row.uuid


def _volumes_exact(manager: ComputeManager, driver: _VolumeDriver) -> None:
    """One more poll, on fresh data: every volume holds the counters it was just told, and
    no total was folded (no counter reset, so a fold could only be a doubled run)."""
    report = manager.run(VOLUME)
    assert report.error is None and report.rejected == 0, report.as_dict()
    with manager.compute.db.reader() as session:
        rows = session.scalars(select(VolumeUsage).where(VolumeUsage.deleted == 0)).all()
    assert len(rows) == len(driver.last_volumes) == 20
    for row in rows:
        assert (
            tuple(getattr(row, k) for k in VOLUME_COUNTERS)
            == driver.last_volumes[str(row.volume_id)]
        )
        assert all(not getattr(row, k) for k in VOLUME_TOTALS), row.volume_id


def _one_audit_row(db: Database) -> None:
    with db.reader() as session:
        rows = session.execute(
            select(TaskLog.state, func.count())
            .where(TaskLog.task_name == AUDIT_TASK)
            .group_by(TaskLog.period_beginning, TaskLog.state)
        ).all()
    assert [tuple(r) for r in rows] == [("DONE", 1)], rows


@pytest.fixture
def service_db(
    offload_db_factory: DbFactory, offload_wait_for_replication: WaitForReplication
) -> Database:
    db = offload_db_factory(settings=Settings(replica=ReplicaSettings(max_lag=1.0)))
    _seed(db)
    offload_wait_for_replication(db)
    return db


@pytest.mark.parametrize("kind", ["switchover", "failover"])
def test_a_role_change_under_load_loses_and_doubles_nothing(
    kind: str,
    service_db: Database,
    offload_compute_factory: ComputeFactory,
    topology: NativeTopology,
    offload_trace: QueryTrace,
    heal: None,
) -> None:
    db = service_db
    manager = offload_compute_factory(db, options=ALL_ON)
    driver = _VolumeDriver()
    manager.compute.driver = driver
    baseline = {
        (c["uuid"], c["mac_address"]): c["bw_in"]
        for c in FakeDriver("compute-1", seed=7, counter_reset_rate=0.0).get_all_bw_counters(
            _uuids(db)
        )
    }
    manager.run(BANDWIDTH)  # the counters' baselines
    database = db.settings.require_connection().database
    assert database
    writer = CountingWriter(db.settings.require_connection(), rate=50)
    if kind == "failover":  # lossless: a commit the writer saw is on the replica too
        semi_sync(topology)
    old = topology.state().primary
    try:
        writer.create()
        writer.start()
        with _Service(manager).running() as service:
            assert wait_for(
                lambda: service.runs(BANDWIDTH) >= 2 and writer.confirmed >= 20,
                Deadline(60),
                interval=0.02,
            )
            started = time.monotonic()
            if kind == "switchover":
                change = roles.switchover(topology)
            else:
                change = roles.failover(topology, kill=True)
            new_id = topology.state().servers[change.new].server_id
            writer.wait_for_commit_on(new_id, started, 30)
            seen = len(service.reports)
            if kind == "failover":
                try:
                    assert roles.rejoin(topology, old).new == change.new
                except ServerDiverged:
                    # killed between a commit and its shipping: that commit, never confirmed
                    # to its client, is only on the old primary (kept out); the checks below
                    # still find every confirmed write on every server once it is rebuilt
                    roles.rebuild(topology, old)
            # the service goes on: every task runs again after the change (and the rejoin)
            assert wait_for(
                lambda: len(service.reports) >= seen + 2 * len(SERVICE_TASKS),
                Deadline(120),
                interval=0.05,
            )
        writer.stop()
        assert not service.failures, service.failures
        failed = [r.as_dict() for r in service.reports if r.error]
        assert not failed, failed
        assert change.old == old and topology.state().primary == change.new
        assert writer.errors, "the change cost the writer nothing: it did not happen under it"
        # the old primary, a replica now, replicates over verified TLS (a TLS testbed's)
        state = topology.state()
        if state.tls:
            with topology.connect(old) as conn:
                channel = replication.replica_status(conn, replication.Flavor(state.flavor))
            assert channel is not None and channel.replicates_over_tls, channel

        # nothing lost, nothing doubled: the writer's own count is every server's row count
        seen_now = _consistent(topology, database, [writer.table.name, "bw_usage_cache"])
        for name in seen_now:
            with topology.connect(name) as conn:
                table = f"`{database}`.`{writer.table.name}`"
                query = text(f"SELECT COUNT(*), COUNT(DISTINCT seq) FROM {table}")
                rows = conn.execute(query).one()
            assert tuple(rows) == (writer.confirmed, writer.confirmed), (name, rows)
        _bandwidth_exact(db, baseline)
        _volumes_exact(manager, driver)
        _one_audit_row(db)

        # reads are back on a replica (the old primary, a replica now), without a restart
        def replica_read() -> bool:
            report = manager.run(BANDWIDTH)
            return _served_by(offload_trace, BANDWIDTH, report.run) == {
                ("replica0", topology.state().servers[old].server_id)
            }

        assert wait_for(replica_read, Deadline(30), interval=0.1)
    finally:
        writer.close()
        if kind == "failover":
            semi_sync(topology, on=False)


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
    seen = _consistent(topology, "nova", ["instances"])
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
