"""Routing on real servers: writes on the primary, replica reads on the replica."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.pool import NullPool

from offload.db import Database, session_route, session_target
from offload.dberrors import install_translation
from offload.errors import AccessDenied, ReadOnlyRefused, WriteInReaderSession
from offload.pytest import DbFactory, WaitForReplication
from offload.routes import Route
from offload.schema import Instance
from offload.testbed import TestbedInfo
from offload.tracing import StatementCounter, task_scope

from .conftest import count_instances, new_instance, primary_server_id, server_id


def test_row_written_by_writer_is_read_from_the_replica_after_wait(
    offload_db: Database, offload_wait_for_replication: WaitForReplication
) -> None:
    instance = new_instance(display_name="replicated")
    with offload_db.writer() as session:
        session.add(instance)
    offload_wait_for_replication(offload_db)

    with offload_db.reader(allow_replica=True) as session:
        assert session_route(session) is Route.READ_REPLICA
        assert session_target(session).is_replica
        row = session.scalars(select(Instance).where(Instance.uuid == instance.uuid)).one()
        served_by = session.execute(text("SELECT @@server_id")).scalar_one()
    assert row.display_name == "replicated"
    assert served_by != primary_server_id(offload_db)


def test_reads_without_replica_permission_stay_on_the_primary(offload_db: Database) -> None:
    assert server_id(offload_db, allow_replica=False) == primary_server_id(offload_db)


def test_without_slave_connection_every_reader_session_hits_the_primary(
    offload_db_factory: DbFactory,
) -> None:
    db = offload_db_factory(with_replica=False)
    assert not db.has_replica
    primary = primary_server_id(db)
    for _ in range(3):
        with db.reader(allow_replica=True) as session:
            assert session_route(session) is Route.READ_REPLICA
            assert session_target(session).name == "primary"
            assert session.execute(text("SELECT @@server_id")).scalar_one() == primary


def test_route_is_fixed_for_the_whole_session(offload_db: Database) -> None:
    with offload_db.reader(allow_replica=True) as session:
        ids = {session.execute(text("SELECT @@server_id")).scalar_one() for _ in range(5)}
        assert session_route(session) is Route.READ_REPLICA
    assert len(ids) == 1


def test_insert_statement_in_a_reader_session_never_reaches_the_server(
    offload_db: Database,
) -> None:
    # On the primary route the nova user may write, so only the client guard
    # stands between this INSERT and the table.
    with offload_db.reader() as session, pytest.raises(WriteInReaderSession, match="INSERT"):
        session.execute(insert(Instance).values(uuid="u-guard", host="compute-1"))
    with offload_db.reader(allow_replica=True) as session, pytest.raises(WriteInReaderSession):
        session.execute(text("/* offload task=x */ UPDATE instances SET host = 'elsewhere'"))
    with offload_db.reader() as session, pytest.raises(WriteInReaderSession, match="DROP"):
        session.execute(text("DROP TABLE instances"))
    assert count_instances(offload_db) == 0
    with offload_db.writer() as session:
        assert session.execute(text("SHOW TABLES LIKE 'instances'")).first() is not None


def test_flush_with_pending_changes_in_a_reader_session_raises(offload_db: Database) -> None:
    with offload_db.reader() as session:
        session.add(new_instance())
        with pytest.raises(WriteInReaderSession, match="flush"):
            session.flush()
    with offload_db.writer() as session:
        session.add(new_instance(display_name="before"))
    with offload_db.reader() as session:
        loaded = session.scalars(select(Instance)).one()
        loaded.display_name = "changed in a reader"
        with pytest.raises(WriteInReaderSession):
            session.flush()
    with offload_db.reader() as session:
        assert session.scalars(select(Instance.display_name)).one() == "before"


def test_slave_connection_user_is_select_only(
    offload_db: Database,
    offload_testbed: TestbedInfo,
    offload_wait_for_replication: WaitForReplication,
) -> None:
    offload_wait_for_replication(offload_db)
    replica_url = offload_db.settings.database.slave_connections[0]
    assert replica_url.username == "nova_ro"
    # on the replica, read_only or the missing grant refuses the write
    engine = create_engine(replica_url, poolclass=NullPool)
    install_translation(engine, name="replica0")
    with pytest.raises((AccessDenied, ReadOnlyRefused)), engine.begin() as conn:
        conn.execute(insert(Instance).values(uuid="u-ro", host="compute-1"))
    with engine.connect() as conn:
        grants = [row[0] for row in conn.execute(text("SHOW GRANTS FOR CURRENT_USER()"))]
    engine.dispose()
    privileges = {g.split(" ON ")[0].removeprefix("GRANT ") for g in grants}
    assert privileges == {"USAGE", "SELECT"}, grants
    # the same account (replicated from the primary) on the writable primary:
    # only the missing grant stands in the way, and it does
    on_primary = replica_url.set(port=offload_testbed.primary_url().port)
    engine = create_engine(on_primary, poolclass=NullPool)
    install_translation(engine, name="primary")
    with pytest.raises(AccessDenied, match="command denied"), engine.begin() as conn:
        conn.execute(insert(Instance).values(uuid="u-ro", host="compute-1"))
    engine.dispose()
    assert count_instances(offload_db) == 0


def test_replica_refuses_writes_even_from_a_user_with_write_grants(
    offload_db: Database,
    offload_testbed: TestbedInfo,
    offload_wait_for_replication: WaitForReplication,
) -> None:
    offload_wait_for_replication(offload_db)
    # the primary's account, which may write, pointed at the replica: read_only stops it
    url = offload_db.settings.database.connection
    assert url is not None
    on_replica = url.set(port=offload_testbed.replica_urls()[0].port)
    engine = create_engine(on_replica, poolclass=NullPool)
    install_translation(engine, name="replica0")
    with pytest.raises(ReadOnlyRefused, match=r"read-only|read_only"), engine.begin() as conn:
        conn.execute(insert(Instance).values(uuid="u-rw", host="compute-1"))
    engine.dispose()
    assert count_instances(offload_db) == 0


def test_counts_match_the_records_across_tasks_and_routes_on_one_connection(
    offload_db_factory: DbFactory,
) -> None:
    """The counter's keys are made once per (route, task) on each connection: they
    must follow a connection from one task and route to the next exactly as the
    records do (sessions one after another: each engine's pool hands back the same connection)."""
    db = offload_db_factory()
    counter = StatementCounter()
    db.tracer.add_sink(counter)
    with db.tracer.recording() as trace:
        for task in ("task_a", "task_b", "task_a"):
            with task_scope(task):
                for allow in (True, False, True):
                    with db.reader(allow_replica=allow) as session:
                        session.execute(text("SELECT 1")).scalar_one()
                        session.execute(text("SELECT @@server_id")).scalar_one()
                with db.writer() as session:
                    session.execute(text("SELECT 1")).scalar_one()
        with db.reader(allow_replica=True) as session:  # no task
            session.execute(text("SELECT 1")).scalar_one()
    expected = Counter((r.task or "-", r.route or "none", r.target, r.verb) for r in trace.records)
    assert counter.snapshot() == expected
    assert expected[("task_a", "replica", "replica0", "SELECT")] == 8
    assert expected[("task_b", "write", "primary", "SELECT")] == 1
    assert expected[("-", "replica", "replica0", "SELECT")] == 1


def test_a_session_counts_when_it_ends_also_on_a_connection_that_died(
    offload_db_factory: DbFactory,
) -> None:
    """Counting is per connection until the session ends (check-in), or until the pool
    drops the connection: an invalidated connection's statements are counted too."""
    db = offload_db_factory()
    counter = StatementCounter()
    db.tracer.add_sink(counter)
    key = ("task_c", "replica", "replica0", "SELECT")
    with task_scope("task_c"):
        with db.reader(allow_replica=True) as session:
            session.execute(text("SELECT 1")).scalar_one()
            session.execute(text("SELECT 2")).scalar_one()
            assert counter.snapshot()[key] == 0  # the session is still open
        assert counter.snapshot()[key] == 2
        with db.reader(allow_replica=True) as session:
            session.execute(text("SELECT 3")).scalar_one()
            session.connection().invalidate()  # closed by the pool, never checked in
    assert counter.snapshot()[key] == 3
