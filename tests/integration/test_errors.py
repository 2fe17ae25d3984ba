"""Driver errors from real servers arrive as offload exceptions."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, select, text, update

from offload.config import DatabaseSettings, Settings
from offload.db import Database
from offload.errors import AccessDenied, CannotConnect, ConnectionLost, Deadlock, UnknownDatabase
from offload.schema import Instance
from offload.testbed import TestbedInfo
from offload.testbed.native import free_ports

from .conftest import new_instance


def test_lock_wait_timeout_is_a_deadlock(offload_db: Database) -> None:
    with offload_db.writer() as session:
        session.add(new_instance(display_name="contended"))
    holder_locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with offload_db.writer() as session:
            session.execute(select(Instance).with_for_update()).all()
            holder_locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert holder_locked.wait(30)
        with pytest.raises(Deadlock, match="Lock wait timeout"), offload_db.writer() as session:
            session.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
            session.execute(update(Instance).values(display_name="blocked"))
    finally:
        release.set()
        holder.join(30)


def test_killed_connection_is_connection_lost(
    offload_db: Database, offload_primary_admin: Engine
) -> None:
    with pytest.raises(ConnectionLost), offload_db.writer() as session:
        own_id = session.execute(text("SELECT CONNECTION_ID()")).scalar_one()
        with offload_primary_admin.connect() as admin:
            admin.execute(text(f"KILL CONNECTION {int(own_id)}"))
        session.execute(text("SELECT 1"))
    # the pool recovers: the next session gets a fresh connection
    with offload_db.writer() as session:
        assert session.execute(text("SELECT 1")).scalar_one() == 1


def test_wrong_password_is_access_denied(offload_testbed: TestbedInfo) -> None:
    base = offload_testbed.settings()
    url = base.require_connection().set(password="not-the-password")
    settings = Settings(database=DatabaseSettings(connection=url))
    with Database(settings) as db, pytest.raises(AccessDenied) as caught, db.reader() as s:
        s.execute(text("SELECT 1"))
    assert "not-the-password" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_missing_database_is_unknown_database(offload_testbed: TestbedInfo) -> None:
    # a user with global privileges learns the database is missing; others are
    # told they lack access to it (1044), which is AccessDenied
    settings = Settings(
        database=DatabaseSettings(connection=offload_testbed.admin_url("nova_does_not_exist"))
    )
    with Database(settings) as db, pytest.raises(UnknownDatabase), db.reader() as s:
        s.execute(text("SELECT 1"))


def test_nothing_listening_is_cannot_connect(offload_testbed: TestbedInfo) -> None:
    url = offload_testbed.primary_url().set(port=free_ports(1)[0])
    settings = Settings(database=DatabaseSettings(connection=url))
    with (
        Database(settings) as db,
        pytest.raises(CannotConnect, match="cannot connect"),
        db.reader() as s,
    ):
        s.execute(text("SELECT 1"))


def test_a_pooled_connection_killed_while_idle_is_replaced_silently(
    offload_db: Database, offload_primary_admin: Engine
) -> None:
    with offload_db.writer() as session:
        idle_id = session.execute(text("SELECT CONNECTION_ID()")).scalar_one()
    with offload_primary_admin.connect() as admin:  # the server drops the pooled connection
        admin.execute(text(f"KILL CONNECTION {int(idle_id)}"))
    with offload_db.writer() as session:  # pre-ping notices and reconnects: no error
        assert session.execute(text("SELECT CONNECTION_ID()")).scalar_one() != idle_id
