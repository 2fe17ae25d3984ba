"""Faults through the shaped link, longer than the replica's net timeout and heartbeat.

The fault testbed's replica0 replicates through its link with a heartbeat every second
and a 2 s net timeout (set here, put back afterwards), so the cuts and stalls below last
longer than the replica waits for a silent source: its IO thread gives up and reconnects.
During the fault ``offload testbed status`` shows it, the staleness guard sends the tasks'
reads to the primary; after it the replica catches up and its tables equal the primary's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from offload import replication
from offload.cli import main
from offload.compute.manager import ComputeManager
from offload.compute.usage import AUDIT_TASK
from offload.config import ComputeSettings, ReplicaSettings, Settings
from offload.db import Database
from offload.link.runner import LinkRunner
from offload.pytest import ComputeFactory, DbFactory, OwnTestbed, WaitForReplication
from offload.testbed import TestbedInfo
from offload.tracing import QueryTrace
from offload.waiting import Deadline, wait_for

from .conftest import AssertSameData, fit, replica_route_targets, seed_old

REPLICA = "replica0"
BANDWIDTH = "_poll_bandwidth_usage"
ALL_ON = ComputeSettings(instance_usage_audit=True, volume_usage_poll_interval=60)
NET_TIMEOUT = 2
HEARTBEAT = 1


def _timeouts(conn: Any, flavor: replication.Flavor, net_timeout: int, heartbeat: float) -> None:
    mariadb = flavor is replication.Flavor.MARIADB
    replication.stop_replica(conn, flavor)
    try:
        variable = "slave_net_timeout" if mariadb else "replica_net_timeout"
        conn.execute(text(f"SET GLOBAL {variable} = {net_timeout}"))
        change = (
            f"CHANGE MASTER TO MASTER_HEARTBEAT_PERIOD = {heartbeat}"
            if mariadb
            else f"CHANGE REPLICATION SOURCE TO SOURCE_HEARTBEAT_PERIOD = {heartbeat}"
        )
        conn.execute(text(change))
    finally:
        replication.start_replica(conn, flavor)


@dataclass
class Linked:
    dir: Path
    config: Path
    runner: LinkRunner
    info: TestbedInfo
    admin: Engine

    def link(self, *argv: str) -> None:
        assert main(["link", *argv, "--dir", str(self.dir)]) == 0

    def state(self) -> dict[str, Any]:
        return self.runner.control(REPLICA, "GET", "/link")

    def status(self) -> replication.ReplicaStatus:
        with self.admin.connect() as conn:
            found = replication.replica_status(conn, self.info.flavor)
        assert found is not None
        return found


@pytest.fixture
def linked(
    faults_testbed: OwnTestbed, offload_replica_admin: list[Engine], heal: None
) -> Iterator[Linked]:
    topology = faults_testbed.topology
    info = faults_testbed.info
    assert info.dir is not None
    topology.attach_link(REPLICA)
    admin = offload_replica_admin[0]
    mariadb = info.flavor is replication.Flavor.MARIADB
    with admin.connect() as conn:
        variable = "slave_net_timeout" if mariadb else "replica_net_timeout"
        before = int(conn.execute(text(f"SELECT @@GLOBAL.{variable}")).scalar_one())
        _timeouts(conn, info.flavor, NET_TIMEOUT, HEARTBEAT)
    linked = Linked(info.dir, info.dir / "offload.conf", LinkRunner(info.dir), info, admin)
    try:
        yield linked
    finally:
        linked.link("clear", REPLICA)
        with admin.connect() as conn:
            _timeouts(conn, info.flavor, before, before / 2)  # the servers' default period
        topology.detach_link(REPLICA)


def _testbed_status(linked: Linked, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    code = main(["--config", str(linked.config), "testbed", "status", "--json"])
    reports = json.loads(capsys.readouterr().out)
    (replica,) = [r for r in reports if r["role"] == REPLICA]
    replica["exit"] = code
    return dict(replica)


@dataclass
class Guarded:
    db: Database
    manager: ComputeManager


@pytest.fixture
def guarded(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    offload_wait_for_replication: WaitForReplication,
) -> Guarded:
    """A Database with max_lag 0.3 s on seeded data, replicated, the replica fit; a host."""
    db = offload_db_factory(settings=Settings(replica=ReplicaSettings(max_lag=0.3)))
    seed_old(db, 10)
    offload_wait_for_replication(db)
    assert wait_for(lambda: fit(db), Deadline(10), interval=0.05)
    return Guarded(db, offload_compute_factory(db, options=ALL_ON))


def test_a_cut_longer_than_the_net_timeout_reconnects_falls_back_and_catches_up(
    linked: Linked,
    guarded: Guarded,
    offload_trace: QueryTrace,
    assert_same_data: AssertSameData,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, manager = guarded.db, guarded.manager
    made = linked.state()["connections_total"]

    seconds = 3 * NET_TIMEOUT
    linked.link("cut", REPLICA, "--for", f"{seconds}s")
    cut_at = time.monotonic()
    seen: dict[str, Any] = {}

    def reconnecting() -> bool:
        seen.update(_testbed_status(linked, capsys))
        replica = seen["replication"] or {}
        return replica.get("io_running") == "Connecting" and bool(replica.get("last_io_errno"))

    assert wait_for(reconnecting, Deadline(seconds - 1), interval=0.2), seen
    assert seen["exit"] == 1  # testbed status says replication is broken
    assert seen["replication"]["last_io_error"], seen

    seed_old(db, 5)  # writes go on while the link is cut: the replica cannot have them
    assert wait_for(lambda: not fit(db), Deadline(seconds), interval=0.05)
    report = manager.run(BANDWIDTH)
    assert report.error is None
    assert replica_route_targets(offload_trace, BANDWIDTH, report.run) == {"primary"}
    assert report.details["routing"]["fallbacks"], report.details["routing"]
    assert sum(n for (task, _), n in db.routing.fallbacks.items() if task == BANDWIDTH) >= 1
    assert time.monotonic() - cut_at < seconds, "the checks outlasted the cut: lengthen it"

    # the link heals by itself; the IO thread reconnects through it and catches up
    assert wait_for(lambda: linked.status().threads_running, Deadline(seconds + 20), interval=0.2)
    state = linked.state()
    assert state["connections_total"] > made and state["refused"] >= 1, state
    assert_same_data(db)  # CHECKSUM TABLE: the replica's tables equal the primary's
    assert wait_for(lambda: fit(db), Deadline(10), interval=0.05)
    report = manager.run(BANDWIDTH)
    assert replica_route_targets(offload_trace, BANDWIDTH, report.run) == {REPLICA}


def test_a_silent_link_longer_than_the_net_timeout_makes_the_io_thread_reconnect(
    linked: Linked,
    guarded: Guarded,
    offload_trace: QueryTrace,
    assert_same_data: AssertSameData,
) -> None:
    db, manager = guarded.db, guarded.manager
    made = linked.state()["connections_total"]
    linked.link("set", REPLICA, "--stall")  # no byte passes, no connection is reset
    try:
        seed_old(db, 5)
        assert wait_for(lambda: not fit(db), Deadline(5), interval=0.05)
        report = manager.run(AUDIT_TASK)
        assert report.error is None
        assert replica_route_targets(offload_trace, AUDIT_TASK, report.run) <= {"primary"}
        assert report.details["routing"]["fallbacks"], report.details["routing"]
        # no heartbeat for NET_TIMEOUT seconds: the IO thread drops the silent connection
        # and opens a new one through the link
        assert wait_for(
            lambda: linked.state()["connections_total"] > made,
            Deadline(NET_TIMEOUT + 4 * HEARTBEAT + 5),
            interval=0.2,
        ), (linked.state(), linked.status().describe())
    finally:
        linked.link("set", REPLICA, "--flow")
    assert wait_for(lambda: linked.status().threads_running, Deadline(30), interval=0.2)
    assert_same_data(db)
    assert wait_for(lambda: fit(db), Deadline(10), interval=0.05)
