"""DatabaseJanitor on real servers: what it makes, and that nothing of it is left afterwards.

Both flavors keep database-level grants after ``DROP DATABASE``; the janitor
revokes them, so the servers end exactly as they were — after a clean run and
after a step that failed half-way.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, Engine, text

from offload.db import Database
from offload.replication import ReplicationTimeout
from offload.testbed import TestbedInfo
from offload.testbed.janitor import DatabaseJanitor

from .conftest import PausedApplier

#: the service's accounts the janitor grants to (mysql/bootstrap/primary.sql)
ACCOUNTS = ("nova", "nova_ro")


def databases(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {str(row[0]) for row in conn.execute(text("SHOW DATABASES"))}


def grants(engine: Engine) -> dict[str, list[str]]:
    """SHOW GRANTS of the service's accounts."""
    with engine.connect() as conn:
        return {
            user: sorted(str(row[0]) for row in conn.execute(text(f"SHOW GRANTS FOR '{user}'@'%'")))
            for user in ACCOUNTS
        }


def grants_on(engine: Engine, database: str) -> dict[str, list[str]]:
    return {
        user: [g for g in found if f"`{database}`" in g] for user, found in grants(engine).items()
    }


class Broken(RuntimeError):
    """The schema step's failure."""


def broken_schema(conn: Connection) -> None:
    conn.exec_driver_sql("CREATE TABLE half (id INT PRIMARY KEY)")
    raise Broken("the schema step failed half-way")


def test_janitor_creates_grants_replicates_and_leaves_nothing(
    offload_testbed: TestbedInfo,
    offload_primary_admin: Engine,
    offload_replica_admin: list[Engine],
) -> None:
    before = (databases(offload_primary_admin), grants(offload_primary_admin))
    with DatabaseJanitor(offload_testbed.settings(), prefix="offload_jtest_") as janitor:
        name = janitor.name
        assert name.startswith("offload_jtest_") and name in databases(offload_primary_admin)
        granted = grants_on(offload_primary_admin, name)
        assert any("INSERT" in g for g in granted["nova"]), granted
        assert granted["nova_ro"] and all(
            "INSERT" not in g and "SELECT" in g for g in granted["nova_ro"]
        ), granted
        # schema'd and replicated before the block starts: the replica has the tables
        with offload_replica_admin[0].connect() as conn:
            tables = {
                str(row[0])
                for row in conn.execute(
                    text(
                        "SELECT TABLE_NAME FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = :name"
                    ),
                    {"name": name},
                )
            }
        assert {"instances", "bw_usage_cache", "task_log"} <= tables
        assert janitor.settings.require_connection().database == name
        assert {u.database for u in janitor.settings.database.slave_connections} == {name}
    after = (databases(offload_primary_admin), grants(offload_primary_admin))
    assert after == before
    assert grants_on(offload_primary_admin, name) == {user: [] for user in ACCOUNTS}


def test_a_failing_schema_step_undoes_database_and_grants(
    offload_testbed: TestbedInfo, offload_primary_admin: Engine
) -> None:
    before = (databases(offload_primary_admin), grants(offload_primary_admin))
    janitor = DatabaseJanitor(offload_testbed.settings(), schema=broken_schema)
    with pytest.raises(Broken), janitor:
        pytest.fail("the block must not run when the set-up failed")
    assert (databases(offload_primary_admin), grants(offload_primary_admin)) == before
    assert janitor._engine is None  # the admin engine is disposed too
    janitor.drop()  # and a second drop is harmless


def test_a_failing_replication_wait_undoes_database_and_grants(
    offload_testbed: TestbedInfo,
    offload_primary_admin: Engine,
    offload_replica_admin: list[Engine],
    paused_applier: PausedApplier,
) -> None:
    before = (databases(offload_primary_admin), grants(offload_primary_admin))
    replica_before = databases(offload_replica_admin[0])
    janitor = DatabaseJanitor(offload_testbed.settings(), timeout=0.5)
    with paused_applier(), pytest.raises(ReplicationTimeout) as raised, janitor:
        pytest.fail("the block must not run when the set-up failed")
    assert raised.value.replica_status is not None  # the replica's status, by the admin account
    assert (databases(offload_primary_admin), grants(offload_primary_admin)) == before
    # and the replica, once it applied what it had missed (create, grant, drop, revoke)
    with Database(offload_testbed.settings()) as db:
        db.wait_for_replicas(timeout=60)
    assert databases(offload_replica_admin[0]) == replica_before
    assert grants(offload_replica_admin[0]) == before[1]
