"""Replication helpers against a real GTID replica (the MariaDB path on this machine)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, insert, text

from offload import replication
from offload.db import Database
from offload.errors import ReplicationTimeout
from offload.schema import Instance
from offload.testbed import TestbedInfo

from .conftest import count_instances, new_instance


def test_flavor_is_detected_from_the_server(db: Database, testbed: TestbedInfo) -> None:
    with db.primary.engine.connect() as conn:
        version = conn.execute(text("SELECT VERSION()")).scalar_one()
        assert replication.server_flavor(conn) is replication.detect_flavor(version)
    assert db.flavor is testbed.flavor


def test_position_advances_and_replica_applies_it(
    db: Database, replica_admin: list[Engine], wait_for_replication
) -> None:
    before = db.replication_position()
    with db.writer() as session:
        session.add(new_instance())
    after = db.replication_position()
    assert after and after != before
    wait_for_replication(db)
    with replica_admin[0].connect() as conn:
        status = replication.replica_status(conn, db.flavor)
    assert status is not None and status.threads_running
    assert status.seconds_behind is not None
    if db.flavor is replication.Flavor.MARIADB:
        assert status.executed_gtid == after
        assert status.using_gtid.lower() == "slave_pos"
    assert count_instances(db, allow_replica=True) == 1


def test_last_gtid_is_the_sessions_own_commit(db: Database) -> None:
    with db.primary.engine.connect() as conn:
        conn.execute(insert(Instance).values(uuid="u-gtid", host="compute-1"))
        conn.commit()
        own = replication.last_gtid(conn, db.flavor)
    assert own
    # nothing else wrote since: the session's GTID is the primary's position
    # (MySQL: last_gtid falls back to gtid_executed, the same set here)
    assert own == db.replication_position()


def test_wait_returns_promptly_when_already_applied(db: Database, wait_for_replication) -> None:
    wait_for_replication(db)
    waited = wait_for_replication(db, timeout=5)
    assert waited < 1.0


def test_timeout_carries_the_replica_status(
    db: Database, paused_applier, wait_for_replication
) -> None:
    with paused_applier():
        with db.writer() as session:
            session.add(new_instance())
        position = db.replication_position()
        started = time.monotonic()
        with pytest.raises(ReplicationTimeout) as caught:
            wait_for_replication(db, timeout=0.3)
        # nothing applied on the replica while the applier is stopped
        assert count_instances(db, allow_replica=True) == 0
    assert time.monotonic() - started >= 0.3
    error = caught.value
    assert error.gtid == position
    assert error.waited >= 0.3
    assert error.replica_status is not None
    assert error.replica_status.sql_running == "No"
    assert error.replica_status.io_running == "Yes"
    assert "SQL=No" in str(error)


def test_replication_resumes_after_the_applier_restarts(
    db: Database, paused_applier, wait_for_replication
) -> None:
    with paused_applier():
        with db.writer() as session:
            session.add(new_instance())
        assert count_instances(db, allow_replica=True) == 0
    wait_for_replication(db)
    assert count_instances(db, allow_replica=True) == 1
