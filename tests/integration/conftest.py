"""Integration tests: real MariaDB/MySQL servers from the offload pytest plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from offload import replication
from offload.compute.context import RunReport
from offload.compute.manager import ComputeManager
from offload.config import ComputeSettings
from offload.db import Database
from offload.schema import Instance
from offload.sqlverbs import statement_verb
from offload.testbed import TestbedInfo
from offload.testing import (
    assert_task_read_from_primary,
    assert_task_read_from_replica,
    server_statements,
)
from offload.tracing import QueryTrace, StatementRecord


def run_offload(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The offload command in a child process, its output captured.

    Piped, as here, the tables are wide enough for a URL unless $COLUMNS says otherwise
    (the children of this pytest run see COLUMNS=80); the tests read them by column.
    """
    env = {name: value for name, value in os.environ.items() if name != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "offload.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=env,
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def new_instance(host: str = "compute-1", **fields: object) -> Instance:
    """An active instance row with the fields a test cares about."""
    values: dict[str, object] = {
        "uuid": str(uuidlib.uuid4()),
        "host": host,
        "node": f"{host}.node",
        "vm_state": "active",
        "power_state": 1,
        "memory_mb": 512,
        "vcpus": 1,
        "root_gb": 1,
        "ephemeral_gb": 0,
    }
    values.update(fields)
    return Instance(**values)


def server_id(db: Database, *, allow_replica: bool) -> int:
    with db.reader(allow_replica=allow_replica) as session:
        return int(session.execute(text("SELECT @@server_id")).scalar_one())


def primary_server_id(db: Database) -> int:
    with db.writer() as session:
        return int(session.execute(text("SELECT @@server_id")).scalar_one())


def count_instances(db: Database, *, allow_replica: bool = False) -> int:
    with db.reader(allow_replica=allow_replica) as session:
        return len(session.scalars(select(Instance.id)).all())


#: ``with paused_applier():`` the first replica's applier is stopped for the block
PausedApplier = Callable[[], AbstractContextManager[None]]


@pytest.fixture
def paused_applier(
    offload_testbed: TestbedInfo, offload_replica_admin: list[Engine]
) -> PausedApplier:
    """``with paused_applier():`` the first replica's SQL thread is stopped (IO keeps going)."""

    @contextmanager
    def paused() -> Iterator[None]:
        with offload_replica_admin[0].connect() as conn:
            replication.stop_replica(conn, offload_testbed.flavor, sql_thread_only=True)
        try:
            yield
        finally:
            with offload_replica_admin[0].connect() as conn:
                replication.start_replica(conn, offload_testbed.flavor, sql_thread_only=True)

    return paused


#: every gate open: the options under which each task has something to do
ALL_ON = ComputeSettings(
    instance_usage_audit=True,
    volume_usage_poll_interval=60,
    reboot_timeout=60,
    rescue_timeout=60,
    resize_confirm_window=60,
    shelved_offload_time=60,
    reclaim_instance_interval=60,
)


@dataclass
class Proven:
    """A task run and what the client and the servers recorded of it."""

    report: RunReport
    records: list[StatementRecord]
    replica_statements: list[str]
    primary_statements: list[str]


#: ``run_on_replica(manager, task)``: the run, proven to read from the replica only
RunOnReplica = Callable[[ComputeManager, str], Proven]
#: ``run_without_replica(manager, task)``: the run of a Database without slave_connection
RunWithoutReplica = Callable[[ComputeManager, str], RunReport]


@pytest.fixture
def run_on_replica(
    offload_trace: QueryTrace,
    offload_primary_admin: Engine,
    offload_replica_admin: list[Engine],
) -> RunOnReplica:
    """Run a task and prove, client- and server-side, its reads hit the replica only."""

    def run(manager: ComputeManager, task: str) -> Proven:
        db = manager.compute.db
        assert db.has_replica
        report = manager.run(task)
        assert report.error is None
        records = assert_task_read_from_replica(
            offload_trace, task, run=report.run, primary_server_id=primary_server_id(db)
        )
        on_replica = server_statements(offload_replica_admin[0], task=task, run=report.run)
        on_primary = server_statements(offload_primary_admin, task=task, run=report.run)
        replica_selects = [s for s in on_replica if statement_verb(s) == "SELECT"]
        client_selects = [r for r in records if r.verb == "SELECT" and r.target != "primary"]
        assert len(replica_selects) == len(client_selects), (on_replica, offload_trace.table(task))
        # on the primary: the run's writes, and the GTID lookups of causal reads
        data_reads = [
            s for s in on_primary if statement_verb(s) == "SELECT" and "route=causal" not in s
        ]
        assert not data_reads, on_primary
        assert all("route=write" in s or "route=causal" in s for s in on_primary), on_primary
        return Proven(report, records, on_replica, on_primary)

    return run


@pytest.fixture
def run_without_replica(offload_trace: QueryTrace) -> RunWithoutReplica:
    """Run a task on a Database without slave_connection: its reads go to the primary."""

    def run(manager: ComputeManager, task: str) -> RunReport:
        assert not manager.compute.db.has_replica
        report = manager.run(task)
        assert report.error is None
        assert_task_read_from_primary(offload_trace, task, run=report.run)
        return report

    return run
