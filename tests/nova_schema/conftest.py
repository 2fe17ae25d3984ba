"""The Nova-schema suite: offload's tasks and Nova's own object API on the tables Nova makes.

Runs when the testbed's schema is Nova's — ``make test SCHEMA=nova`` (which exports
``OFFLOAD_SCHEMA=nova``) or pytest ``--testbed-schema=nova`` — and is skipped, with that
reason, everywhere else: the default suite never installs Nova.  When the side environment
(``nova==34.0.0`` in a virtualenv of its own, cached; :mod:`offload.testbed.nova`) cannot be
built here, every test is skipped with the reason.

Nova's schema comes from ``nova-manage db sync`` once per session (:class:`NovaTemplate`,
a database of its own, kept for the comparison test); each test database is then made from
those tables' own ``SHOW CREATE TABLE`` in milliseconds.  ``db_factory`` is overridden here,
so the task proofs of tests/integration, imported by the ``test_tasks_*`` modules, run
unchanged on Nova's tables.

The offload pytest plugin's fixtures used here (``testbed``, ``tracer``,
``wait_for_replication``, ``primary_admin``, ``replica_admin``) are named in the
"plugin fixtures" block only: this suite's own tests use the ``nova_*`` fixtures.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text

from offload import attach, replication
from offload.config import Settings
from offload.db import Database
from offload.errors import TestbedError
from offload.schema import NOVA_TABLES, OFFLOAD_TABLES
from offload.testbed import TestbedInfo
from offload.testbed.nova import (
    NOVA_PRIVILEGES,
    SCHEMA_VARIABLE,
    NovaEnv,
    NovaTemplate,
    nova_env,
)
from offload.tracing import Tracer

# the task proofs' own fixtures (run_on_replica, paused_applier, ...), for the imported tests
from tests.integration.conftest import (  # noqa: F401
    paused_applier,
    run_on_replica,
    run_without_replica,
)

DbFactory = Callable[..., Database]
WaitForReplication = Callable[..., float]
HERE = Path(__file__).resolve().parent
#: Nova's tables a task-proof database gets: offload's ten, and instance_extra (a table only
#: Nova has, which `offload db sync` recognises Nova's schema by)
TASK_TABLES = (*(t for t in NOVA_TABLES if t not in OFFLOAD_TABLES), "instance_extra")


def _schema_asked(config: pytest.Config) -> str:
    asked = config.getoption("--testbed-schema", default=None)
    return str(asked or os.environ.get(SCHEMA_VARIABLE, "") or "offload")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    off = _schema_asked(config) != "nova"
    skip = pytest.mark.skip(
        reason="the Nova-schema suite: run it with `make test SCHEMA=nova` "
        "(or pytest --testbed-schema=nova / OFFLOAD_SCHEMA=nova)"
    )
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
            if off:
                item.add_marker(skip)


# --- plugin fixtures: the only place this suite names them ------------------------------


@pytest.fixture(scope="session")
def nova_testbed(testbed: TestbedInfo) -> TestbedInfo:
    """The session's testbed (the plugin's ``testbed``)."""
    return testbed


@pytest.fixture
def nova_tracer(tracer: Tracer) -> Tracer:
    return tracer


@pytest.fixture
def nova_wait(wait_for_replication: WaitForReplication) -> WaitForReplication:
    return wait_for_replication


@pytest.fixture
def nova_admins(primary_admin: Engine, replica_admin: list[Engine]) -> tuple[Engine, Engine]:
    """Privileged engines on the primary and the first replica (their statement history)."""
    return primary_admin, replica_admin[0]


# --- the side environment and Nova's schema ---------------------------------------------


@pytest.fixture(scope="session")
def nova_side_env() -> NovaEnv:
    """Nova 34 in its own virtualenv (built once, cached); the suite is skipped without it."""
    try:
        return nova_env().ensure()
    except TestbedError as exc:
        pytest.skip(f"the Nova side environment cannot be built here: {exc}")


@pytest.fixture(scope="session")
def nova_template(
    nova_testbed: TestbedInfo, nova_side_env: NovaEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NovaTemplate]:
    """``nova-manage db sync`` in a database of its own, kept for the session."""
    template = NovaTemplate.build(
        nova_testbed, workdir=tmp_path_factory.mktemp("nova"), env=nova_side_env, keep=True
    )
    yield template
    template.drop(nova_testbed)


def _grant(conn: Connection, testbed: TestbedInfo, name: str) -> None:
    user = testbed.primary.username
    if user and user != testbed.admin.username:
        conn.execute(text(f"GRANT {NOVA_PRIVILEGES} ON `{name}`.* TO '{user}'@'%'"))
    for url in testbed.replicas:
        if url.username and url.username != testbed.admin.username:
            conn.execute(text(f"GRANT SELECT ON `{name}`.* TO '{url.username}'@'%'"))


@pytest.fixture
def nova_database(
    nova_testbed: TestbedInfo, nova_template: NovaTemplate, nova_admins: tuple[Engine, Engine]
) -> Iterator[Callable[..., str]]:
    """``nova_database(tables=None)``: a new database with Nova's tables (all by default),
    granted as the testbed's nova and nova_ro accounts, on the replica too; dropped
    afterwards."""
    admin, replica = nova_admins
    made: list[str] = []

    def make(tables: tuple[str, ...] | None = None) -> str:
        name = f"nova_n{secrets.token_hex(5)}"
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            made.append(name)
            _grant(conn, nova_testbed, name)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"USE `{name}`")
            nova_template.create(conn, tables)
            position = replication.gtid_position(conn, nova_testbed.flavor)
        # the replica has the database and its grants before anyone connects to it there
        with replica.connect() as conn:
            replication.wait_for_gtid(conn, position, 60.0, nova_testbed.flavor)
        return name

    yield make
    with admin.begin() as conn:
        for name in made:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture
def db_factory(
    nova_testbed: TestbedInfo,
    nova_tracer: Tracer,
    nova_wait: WaitForReplication,
    nova_database: Callable[..., str],
) -> Iterator[DbFactory]:
    """The plugin's ``db_factory`` on Nova's tables: ``db_factory(with_replica=True)``.

    Nova's tables as nova-manage made them, then what ``offload db sync`` adds (the
    heartbeat), replicated before the test starts.
    """
    name = nova_database(TASK_TABLES)
    created: list[Database] = []
    first = Database(nova_testbed.settings(database=name), tracer=nova_tracer)
    created.append(first)
    with first.writer() as session:
        report = attach.sync(session.connection())
    assert report.found == "nova" and report.created_tables == OFFLOAD_TABLES, report
    nova_wait(first)

    def make(*, with_replica: bool = True, settings: Settings | None = None) -> Database:
        database = Database(
            nova_testbed.settings(database=name, with_replica=with_replica, base=settings),
            tracer=nova_tracer,
        )
        created.append(database)
        return database

    yield make
    for database in created:
        database.dispose()
