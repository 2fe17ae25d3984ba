"""Integration tests: real MariaDB/MySQL servers from the offload pytest plugin."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.pool import NullPool

from offload import replication
from offload.db import Database
from offload.schema import Instance
from offload.testbed import TestbedInfo


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def new_instance(host: str = "compute-1", **fields: object) -> Instance:
    """An active instance row with the fields a test cares about."""
    values: dict[str, object] = {
        "uuid": str(uuidlib.uuid4()), "host": host, "node": f"{host}.node",
        "vm_state": "active", "power_state": 1, "memory_mb": 512, "vcpus": 1,
        "root_gb": 1, "ephemeral_gb": 0,
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


@pytest.fixture
def primary_admin(testbed: TestbedInfo) -> Iterator[Engine]:
    engine = create_engine(testbed.admin_url(), poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def stopped_applier(testbed: TestbedInfo, replica_admin: list[Engine]) -> Iterator[Engine]:
    """The first replica with its SQL (applier) thread stopped; restarted afterwards."""
    engine = replica_admin[0]
    with engine.connect() as conn:
        replication.stop_replica(conn, testbed.flavor, sql_thread_only=True)
    try:
        yield engine
    finally:
        with engine.connect() as conn:
            replication.start_replica(conn, testbed.flavor, sql_thread_only=True)
