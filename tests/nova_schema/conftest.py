"""The Nova-schema suite: offload's tasks and Nova's own object API on the tables Nova makes.

Runs when the testbed's schema is Nova's — ``make test SCHEMA=nova`` (which exports
``OFFLOAD_SCHEMA=nova``) or pytest ``--testbed-schema=nova`` — and is skipped, with that
reason, everywhere else: the default suite never installs Nova.  When the side environment
(``nova==34.0.0`` in a virtualenv of its own, cached; :mod:`offload.testbed.nova`) cannot be
built here, every test is skipped with the reason.

Nova's schema comes from ``nova-manage db sync`` once per session (:class:`NovaTemplate`,
a database of its own, kept for the comparison test); each test database is then made from
those tables' own ``SHOW CREATE TABLE`` in milliseconds, a scratch database of the
:class:`DatabaseJanitor` (dropped and revoked afterwards).  ``offload_db_factory`` is
overridden here, so the task proofs of tests/integration, imported by the ``test_tasks_*``
modules, run unchanged on Nova's tables.

The offload pytest plugin's fixtures used here (``offload_testbed``, ``offload_tracer``,
``offload_wait_for_replication``, ``offload_primary_admin``, ``offload_replica_admin``)
are named in the "plugin fixtures" block only: this suite's own tests use the ``nova_*``
fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine

from offload import attach
from offload.errors import TestbedError
from offload.pytest import RunOptions, WaitForReplication, factories
from offload.schema import NOVA_TABLES, OFFLOAD_TABLES
from offload.testbed import TestbedInfo
from offload.testbed.janitor import DatabaseJanitor, SchemaStep
from offload.testbed.nova import NovaEnv, NovaTemplate, nova_env
from offload.tracing import Tracer

# the task proofs' own fixtures (run_on_replica, paused_applier, ...), for the imported tests
from tests.integration.conftest import (  # noqa: F401
    paused_applier,
    run_on_replica,
    run_without_replica,
)

HERE = Path(__file__).resolve().parent
#: Nova's tables a task-proof database gets: offload's ten, and instance_extra (a table only
#: Nova has, which `offload db sync` recognises Nova's schema by)
TASK_TABLES = (*(t for t in NOVA_TABLES if t not in OFFLOAD_TABLES), "instance_extra")


def _schema_asked(config: pytest.Config) -> str:
    return RunOptions.of(config).schema or "offload"  # --testbed-schema, $OFFLOAD_SCHEMA, ini


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
def nova_testbed(offload_testbed: TestbedInfo) -> TestbedInfo:
    """The session's testbed (the plugin's ``offload_testbed``)."""
    return offload_testbed


@pytest.fixture
def nova_tracer(offload_tracer: Tracer) -> Tracer:
    return offload_tracer


@pytest.fixture
def nova_wait(offload_wait_for_replication: WaitForReplication) -> WaitForReplication:
    return offload_wait_for_replication


@pytest.fixture
def nova_admins(
    offload_primary_admin: Engine, offload_replica_admin: list[Engine]
) -> tuple[Engine, Engine]:
    """Privileged engines on the primary and the first replica (their statement history)."""
    return offload_primary_admin, offload_replica_admin[0]


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
    template.drop()


@pytest.fixture
def nova_database(
    nova_testbed: TestbedInfo, nova_template: NovaTemplate
) -> Iterator[Callable[..., str]]:
    """``nova_database(tables=None)``: a new database with Nova's tables (all by default),
    granted to the testbed's nova and nova_ro accounts, on the replica too; dropped and
    revoked afterwards."""
    with ExitStack() as made:

        def make(tables: tuple[str, ...] | None = None) -> str:
            def nova_tables(conn: Connection) -> None:
                nova_template.create(conn, tables)

            janitor = DatabaseJanitor(nova_testbed.settings(), prefix="nova_n", schema=nova_tables)
            return made.enter_context(janitor).name

        yield make


def _nova_tables_then_offloads(template: NovaTemplate) -> SchemaStep:
    """Nova's task tables as nova-manage made them, then what ``offload db sync`` adds."""

    def step(conn: Connection) -> None:
        template.create(conn, TASK_TABLES)
        report = attach.sync(conn)
        assert report.found == "nova" and report.created_tables == OFFLOAD_TABLES, report

    return step


@pytest.fixture
def nova_then_offload_schema(nova_template: NovaTemplate) -> SchemaStep:
    """Nova's task tables as nova-manage made them, then what ``offload db sync`` adds
    (the heartbeat): the scratch databases of ``offload_db_factory`` here."""
    return _nova_tables_then_offloads(nova_template)


#: the plugin's ``offload_db_factory`` on Nova's tables: ``make(with_replica=True)``
offload_db_factory = factories.database_factory(
    "nova_testbed", tracer="nova_tracer", schema="nova_then_offload_schema", prefix="nova_t"
)
