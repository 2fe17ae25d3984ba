"""A role change under load, shared by the native (tests/faults/roles) and compose
(tests/compose/test_roles.py) tests: the service runs, a writer commits, and nothing is
lost or doubled, the task runs keep succeeding, reads come back to a replica."""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import func, select, text

from offload import replication
from offload.compute.context import RunReport
from offload.compute.driver import FakeDriver, VolumeCounters
from offload.compute.manager import ComputeManager
from offload.compute.usage import AUDIT_TASK
from offload.config import ComputeSettings, ReplicaSettings, Settings
from offload.db import Database
from offload.errors import ServerDiverged
from offload.pytest import ComputeFactory, DbFactory, WaitForReplication
from offload.schema import BandwidthUsage, BlockDeviceMapping, Instance, TaskLog, VolumeUsage
from offload.testbed import roles
from offload.testbed.drill import CountingWriter, semi_sync
from offload.testbed.files import NativeState
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


def _rows_and_checksums(topology: roles.RoleTopology, database: str, tables: list[str]) -> Seen:
    """Per server (its own port or socket, no endpoint): CHECKSUM TABLE, GTIDs."""
    state = topology.state()
    flavor = replication.Flavor(state.flavor)
    listed = ", ".join(f"`{database}`.`{t}`" for t in tables)
    seen: Seen = {}
    for name in state.server_names():
        if not topology.running(name) or name in state.diverged:
            continue
        with topology.connect(name) as conn:
            seen[name] = {
                "checksums": {
                    str(row[0]): row[1] for row in conn.execute(text(f"CHECKSUM TABLE {listed}"))
                },
                "gtid": replication.gtid_position(conn, flavor),
            }
    return seen


def consistent(
    topology: roles.RoleTopology, database: str, tables: list[str], *, servers: int = 2
) -> Seen:
    """Replication caught up: the same checksums and GTID position on every server."""
    topology.await_replicas()
    last: list[Seen] = [{}]

    def same() -> bool:
        last[0] = seen = _rows_and_checksums(topology, database, tables)
        values = list(seen.values())
        return len(values) >= servers and all(v == values[0] for v in values)

    assert wait_for(same, Deadline(30), interval=0.1), last[0]
    return last[0]


def service_database(factory: DbFactory, wait_for_replication: WaitForReplication) -> Database:
    """The service's database: a tight lag bound, 20 instances seeded and replicated."""
    db = factory(settings=Settings(replica=ReplicaSettings(max_lag=1.0)))
    _seed(db)
    wait_for_replication(db)
    return db


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


def role_change_under_load(
    kind: str,
    db: Database,
    offload_compute_factory: ComputeFactory,
    topology: roles.RoleTopology,
    offload_trace: QueryTrace,
    *,
    on_diverged: Callable[[str], bool],
) -> None:
    """``kind`` (switchover | failover, then the old primary's rejoin) while the service
    runs and a writer commits; ``on_diverged(old)`` when the rejoin finds the old primary
    diverged (killed between a commit and its shipping): True when it made it a replica
    again (native: rebuilt), False when it stays out (compose: no rebuild; the checks
    then cover the new primary alone)."""
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
    back = True  # the old primary replicates at the end
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
            writer.wait_for_commit_on(roles.server_id(topology, change.new), started, 30)
            seen = len(service.reports)
            if kind == "failover":
                try:
                    assert roles.rejoin(topology, old).new == change.new
                except ServerDiverged:
                    # killed between a commit and its shipping: that commit, never confirmed
                    # to its client, is only on the old primary (kept out); the checks below
                    # still find every confirmed write on every server once it is rebuilt
                    back = on_diverged(old)
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
        if back and isinstance(state, NativeState) and state.tls:
            with topology.connect(old) as conn:
                channel = replication.replica_status(conn, replication.Flavor(state.flavor))
            assert channel is not None and channel.replicates_over_tls, channel

        # nothing lost, nothing doubled: the writer's own count is every server's row count
        tables = [writer.table.name, "bw_usage_cache"]
        seen_now = consistent(topology, database, tables, servers=2 if back else 1)
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
                ("replica0", roles.server_id(topology, old))
            }

        if back:
            assert wait_for(replica_read, Deadline(30), interval=0.1)
        else:  # kept out: diverged, read-only, no source, no replica endpoint leads to it
            assert topology.state().diverged == (old,) and not topology.state().replicas()
            with topology.connect(old) as conn:
                assert replication.replica_status(conn, replication.Flavor(state.flavor)) is None
                assert conn.execute(text("SELECT @@read_only")).scalar() == 1
            assert old not in topology.endpoint_targets().values()
    finally:
        writer.close()
        if kind == "failover":
            semi_sync(topology, on=False)
