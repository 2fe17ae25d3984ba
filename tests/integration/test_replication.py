"""Replication helpers against a real GTID replica (the MariaDB path on this machine)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, text

from offload import replication
from offload.db import Database
from offload.pytest import WaitForReplication
from offload.replication import ReplicationTimeout
from offload.schema import Instance
from offload.testbed import TestbedInfo
from offload.testbed.mysqld import find_mysql_dir, probe_server
from offload.waiting import Deadline, wait_for

from .conftest import PausedApplier, count_instances, new_instance


def test_flavor_is_detected_from_the_server(
    offload_db: Database, offload_testbed: TestbedInfo
) -> None:
    with offload_db.primary.engine.connect() as conn:
        version = conn.execute(text("SELECT VERSION()")).scalar_one()
        assert replication.server_flavor(conn) is replication.detect_flavor(version)
    assert offload_db.flavor is offload_testbed.flavor


def test_position_advances_and_replica_applies_it(
    offload_db: Database,
    offload_replica_admin: list[Engine],
    offload_wait_for_replication: WaitForReplication,
) -> None:
    before = offload_db.replication_position()
    with offload_db.writer() as session:
        session.add(new_instance())
    after = offload_db.replication_position()
    assert after and after != before
    offload_wait_for_replication(offload_db)
    with offload_replica_admin[0].connect() as conn:
        status = replication.replica_status(conn, offload_db.flavor)
    assert status is not None and status.threads_running
    assert status.seconds_behind is not None
    if offload_db.flavor is replication.Flavor.MARIADB:
        assert status.executed_gtid == after
        assert status.using_gtid.lower() == "slave_pos"
    assert count_instances(offload_db, allow_replica=True) == 1


def test_last_gtid_is_the_sessions_own_commit(offload_db: Database) -> None:
    with offload_db.primary.engine.connect() as conn:
        conn.execute(insert(Instance).values(uuid="u-gtid", host="compute-1"))
        conn.commit()
        own = replication.last_gtid(conn, offload_db.flavor)
    assert own
    # nothing else wrote since: the session's GTID is the primary's position
    # (MySQL: last_gtid falls back to gtid_executed, the same set here)
    assert own == offload_db.replication_position()


def test_wait_returns_promptly_when_already_applied(
    offload_db: Database, offload_wait_for_replication: WaitForReplication
) -> None:
    offload_wait_for_replication(offload_db)
    waited = offload_wait_for_replication(offload_db, timeout=5)
    assert waited < 1.0


def test_timeout_carries_the_replica_status(
    offload_db: Database,
    paused_applier: PausedApplier,
    offload_wait_for_replication: WaitForReplication,
) -> None:
    with paused_applier():
        with offload_db.writer() as session:
            session.add(new_instance())
        position = offload_db.replication_position()
        started = time.monotonic()
        with pytest.raises(ReplicationTimeout) as caught:
            offload_wait_for_replication(offload_db, timeout=0.3)
        # nothing applied on the replica while the applier is stopped
        assert count_instances(offload_db, allow_replica=True) == 0
    assert time.monotonic() - started >= 0.3
    error = caught.value
    assert error.gtid == position
    assert error.waited >= 0.3
    assert error.replica_status is not None
    assert error.replica_status.sql_running == "No"
    assert error.replica_status.io_running == "Yes"
    assert "SQL=No" in str(error)


def test_replication_resumes_after_the_applier_restarts(
    offload_db: Database,
    paused_applier: PausedApplier,
    offload_wait_for_replication: WaitForReplication,
) -> None:
    with paused_applier():
        with offload_db.writer() as session:
            session.add(new_instance())
        assert count_instances(offload_db, allow_replica=True) == 0
    offload_wait_for_replication(offload_db)
    assert count_instances(offload_db, allow_replica=True) == 1


def _dump_threads(primary_admin: Engine) -> int:
    with primary_admin.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
                    " WHERE COMMAND LIKE 'Binlog Dump%'"
                )
            ).scalar_one()
        )


def test_a_stopped_replica_leaves_no_dump_thread_on_the_primary(
    offload_testbed: TestbedInfo,
    offload_primary_admin: Engine,
    offload_replica_admin: list[Engine],
) -> None:
    # Without a short heartbeat a primary's dump thread outlives its stopped replica for
    # up to 30 s — and MySQL's shutdown waits for it (a primary took 9-12 s to stop).
    # A delay change first: MariaDB resets the heartbeat on every CHANGE MASTER.
    with offload_replica_admin[0].connect() as conn:
        replication.stop_replica(conn, offload_testbed.flavor)
        replication.set_replica_delay(conn, offload_testbed.flavor, 0)
        replication.start_replica(conn, offload_testbed.flavor)
    before = _dump_threads(offload_primary_admin)
    assert before == len(offload_replica_admin)
    with offload_replica_admin[0].connect() as conn:
        replication.stop_replica(conn, offload_testbed.flavor)
    try:
        assert wait_for(
            lambda: _dump_threads(offload_primary_admin) < before, Deadline(5), interval=0.05
        )
    finally:
        with offload_replica_admin[0].connect() as conn:
            replication.start_replica(conn, offload_testbed.flavor)

            def running() -> bool:
                status = replication.replica_status(conn, offload_testbed.flavor)
                return status is not None and status.threads_running

            assert wait_for(running, Deadline(30), interval=0.05)


def _healthcheck(testbed: TestbedInfo, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """mysql/healthcheck.sh (the compose DB containers') against the native replica."""
    assert testbed.dir is not None
    state = json.loads((testbed.dir / "state.json").read_text(encoding="utf-8"))
    program = probe_server(Path(state["server"]))
    assert program is not None
    (tmp_path / ".offload-bootstrapped").write_text("replica\n", encoding="utf-8")
    env = {
        **os.environ,
        "PATH": f"{program.client().parent}{os.pathsep}{os.environ['PATH']}",
        "OFFLOAD_SOCKET": str(testbed.dir / "replica0" / "mysqld.sock"),
        "OFFLOAD_DATADIR": str(tmp_path),
    }
    return subprocess.run(
        ["sh", str(find_mysql_dir() / "healthcheck.sh"), "replica"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=30,
    )


def test_the_containers_healthcheck_reads_the_replicas_threads(
    offload_testbed: TestbedInfo,
    paused_applier: PausedApplier,
    tmp_path: Path,
) -> None:
    if offload_testbed.backend != "native":
        pytest.skip("runs the healthcheck script against the native testbed's sockets")
    healthy = _healthcheck(offload_testbed, tmp_path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    with paused_applier():
        paused = _healthcheck(offload_testbed, tmp_path)
    assert paused.returncode == 1
    assert "replication threads: IO yes, SQL no" in paused.stdout
