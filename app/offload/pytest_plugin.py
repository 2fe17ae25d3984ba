"""pytest fixtures over the testbed and the Database — thin by design.

Registered through the ``pytest11`` entry point, so any project that installs
offload can use them:

``testbed``            session: a running primary + replicas (``TestbedInfo``).
                       ``--testbed=native`` (default) starts one on free ports in a
                       temporary dir and stops it afterwards; ``--testbed=compose``
                       brings docker-compose.yml's primary, replica and compute
                       containers up through pytest-docker (``docker_services``; ports
                       Docker picks; removed with their volumes afterwards);
                       ``--testbed=external`` uses ``--primary-url``/``--replica-url``
                       (privileged accounts).
``db_factory``         function: ``db_factory(with_replica=True)`` → a ``Database`` on a
                       fresh database of its own, schema created and replicated.
``db``                 function: ``db_factory()``.
``wait_for_replication``  function: ``wait_for_replication(db)`` waits on every replica
                       for the primary's current GTID (the server's own GTID wait).
``replica_admin``      function: admin engines on the replicas (fault injection).
``primary_admin``      function: an admin engine on the primary.
``tracer``             function: the Tracer every Database of the test shares.
``trace``              function: a ``QueryTrace`` recording the test's statements.
``compute_factory``    function: ``compute_factory(db, host="compute-1", options=None)``
                       → a ``ComputeManager`` with a FakeDriver and a MemoryNotifier.
"""

from __future__ import annotations

import os
import secrets
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import URL, Connection, Engine, text

from offload import schema
from offload.compute.context import Compute
from offload.compute.driver import FakeDriver
from offload.compute.manager import ComputeManager
from offload.compute.notifier import MemoryNotifier
from offload.config import ComputeSettings, Settings
from offload.db import Database
from offload.dberrors import unpooled_engine
from offload.errors import OffloadError
from offload.replication import detect_flavor
from offload.testbed.native import NativeTopology
from offload.testbed.servers import FLAVOR_VARIABLE, FlavorSpec
from offload.testbed.topology import TestbedInfo
from offload.tracing import QueryTrace, Tracer
from offload.urls import parse_url, with_database

if TYPE_CHECKING:
    from offload.testbed.compose import ComposeCommand, ComposeTopology

__all__ = [
    "pytest_addoption",
    "pytest_configure",
    "pytest_report_header",
    "pytest_terminal_summary",
]

DbFactory = Callable[..., Database]
#: what the service's account may do on its database (as mysql/bootstrap/primary.sql)
SERVICE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, REFERENCES"
WaitForReplication = Callable[..., float]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("offload", "offload testbed")
    group.addoption(
        "--testbed",
        choices=["native", "compose", "external"],
        default="native",
        help="where the primary and replicas come from (default: native; "
        "compose: docker-compose.yml through pytest-docker)",
    )
    group.addoption(
        "--testbed-dir",
        default=None,
        help="directory for the native testbed (default: a temporary one)",
    )
    group.addoption(
        "--testbed-replicas", type=int, default=1, help="replicas in the native testbed (default 1)"
    )
    group.addoption(
        "--testbed-flavor",
        default=None,
        help="server of the native and compose testbeds: mariadb, mariadb-10.11, "
        "mariadb-11.8, mysql, mysql-9.7 (default: the host's server; compose: "
        "$OFFLOAD_DB_IMAGE or mysql:8.4); one offload does not have is "
        "provided from Debian and cached",
    )
    group.addoption("--primary-url", default=None, help="external: privileged URL of the primary")
    group.addoption(
        "--replica-url",
        action="append",
        default=[],
        help="external: privileged URL of a replica (repeatable)",
    )


_SERVER_KEY = pytest.StashKey[str]()


def _flavor(config: pytest.Config) -> FlavorSpec | None:
    chosen = config.getoption("--testbed-flavor", default=None) or os.environ.get(FLAVOR_VARIABLE)
    if not chosen:
        return None
    try:
        return FlavorSpec.parse(chosen)
    except OffloadError as exc:
        raise pytest.UsageError(f"--testbed-flavor: {exc}") from None


def pytest_report_header(config: pytest.Config) -> str:
    """The server the run's testbed will be: ``offload testbed: native mysql 9.7.4 (path)``."""
    kind = config.getoption("--testbed", default="native")
    flavor = _flavor(config)
    if kind == "native":
        from offload.testbed.mysqld import find_server  # noqa: PLC0415

        try:
            program = find_server(spec=flavor, provide=False)
        except OffloadError:
            return (
                f"offload testbed: native {flavor or 'server'} (not found yet: provided "
                "or reported when the first test needs it)"
            )
        return f"offload testbed: native {program.describe()} ({program.path})"
    if kind == "compose":
        from offload.testbed.compose import registry_image  # noqa: PLC0415
        from offload.testbed.images import db_image  # noqa: PLC0415

        image = os.environ.get("OFFLOAD_DB_IMAGE") or (
            f"{db_image(flavor)} (offline)"
            if os.environ.get("OFFLOAD_OFFLINE")
            else f"{registry_image(flavor)}, or {db_image(flavor)} offline"
        )
        return f"offload testbed: compose, flavor {flavor or 'default'}, image {image}"
    return "offload testbed: external (--primary-url / --replica-url)"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    server = config.stash.get(_SERVER_KEY, None)
    if server:
        terminalreporter.write_line(f"offload testbed ran: {server}")


def _remember(config: pytest.Config, info: TestbedInfo) -> TestbedInfo:
    config.stash[_SERVER_KEY] = f"{info.backend} {info.server}"
    return info


def _admin_engine(url: URL) -> Engine:
    return unpooled_engine(url, name=url.host or "server")


def _external(config: pytest.Config) -> TestbedInfo:
    primary = config.getoption("--primary-url")
    replicas = config.getoption("--replica-url")
    if not primary or not replicas:
        raise pytest.UsageError("--testbed=external needs --primary-url and --replica-url")
    primary_url = parse_url(primary, option="--primary-url")
    replica_urls = tuple(parse_url(u, option="--replica-url") for u in replicas)
    with _admin_engine(primary_url).connect() as conn:
        version = conn.execute(text("SELECT VERSION()")).scalar_one()
    return TestbedInfo(
        backend="external",
        dir=None,
        flavor=detect_flavor(version),
        version=version,
        primary=primary_url,
        replicas=replica_urls,
        admin=with_database(primary_url, None),
        replica_admins=tuple(with_database(u, None) for u in replica_urls),
    )


class ComposeFixtures:
    """pytest-docker's configuration fixtures, pointed at offload's compose stack.

    Registered in ``pytest_configure`` with ``--testbed=compose`` — after every
    installed plugin, so these override pytest-docker's defaults (a conftest.py
    can still override them).  ``docker_services`` itself stays pytest-docker's:
    it runs ``up -d`` once per session and ``down --volumes`` at the end.
    """

    @pytest.fixture(scope="session")
    @classmethod
    def offload_compose(
        cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> ComposeTopology:
        """The compose testbed (own project name, ports Docker picks, a temporary dir)."""
        from offload.testbed.compose import ComposeTopology  # noqa: PLC0415

        return ComposeTopology(
            tmp_path_factory.mktemp("compose-testbed"),
            port=0,
            project=f"offload-pytest{os.getpid()}",
            flavor=_flavor(request.config),
        )

    @pytest.fixture(scope="session")
    @classmethod
    def offload_compose_command(cls, offload_compose: ComposeTopology) -> ComposeCommand:
        """Credentials, images (offline: built or reused) and the env file, then the command."""
        return offload_compose.prepare()

    @pytest.fixture(scope="session")
    @classmethod
    def docker_compose_command(cls, offload_compose_command: ComposeCommand) -> str:
        return shlex.join(offload_compose_command.program)

    @pytest.fixture(scope="session")
    @classmethod
    def docker_compose_file(cls, offload_compose_command: ComposeCommand) -> str:
        return offload_compose_command.file

    @pytest.fixture(scope="session")
    @classmethod
    def docker_compose_project_name(cls, offload_compose_command: ComposeCommand) -> str:
        return offload_compose_command.project

    @pytest.fixture(scope="session")
    @classmethod
    def docker_setup(cls) -> list[str]:
        # not `up --wait` (compose v2 only): the testbed waits on health itself
        return ["up -d"]

    @pytest.fixture(scope="session")
    @classmethod
    def docker_cleanup(cls) -> list[str]:
        return ["down --volumes --remove-orphans --timeout 10"]


def pytest_configure(config: pytest.Config) -> None:
    flavor = _flavor(config)
    if flavor is not None:
        # every testbed of the run, the tests' own and their subprocesses', runs this server
        os.environ[FLAVOR_VARIABLE] = str(flavor)
    if config.getoption("--testbed", default="native") != "compose":
        return
    if not config.pluginmanager.hasplugin("docker"):
        raise pytest.UsageError(
            "--testbed=compose needs pytest-docker "
            "(pip install pytest-docker; it is in offload[test])"
        )
    config.pluginmanager.register(ComposeFixtures(), "offload-compose-fixtures")


def _compose_testbed(request: pytest.FixtureRequest) -> TestbedInfo:
    topology: ComposeTopology = request.getfixturevalue("offload_compose")
    try:
        request.getfixturevalue("docker_services")  # pytest-docker: `up -d` now, `down` at the end
    except BaseException:
        topology.down()  # `up` failed: pytest-docker's own clean-up is not armed yet
        raise
    return topology.await_up()  # healthy and replicating, or taken down and raised


@pytest.fixture(scope="session")
def testbed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestbedInfo]:
    """A running primary with GTID replicas for the whole test session."""
    config = request.config
    if config.getoption("--testbed") == "external":
        yield _remember(config, _external(config))
        return
    if config.getoption("--testbed") == "compose":
        yield _remember(config, _compose_testbed(request))
        return
    directory = config.getoption("--testbed-dir")
    topology = NativeTopology(
        Path(directory) if directory else tmp_path_factory.mktemp("testbed"),
        port=0,
        replicas=config.getoption("--testbed-replicas"),
        bind_to_parent=True,
        flavor=_flavor(config),
    )
    with topology as info:
        yield _remember(config, info)


def _grant(conn: Connection, database: str, url: URL, privileges: str, admin: URL) -> None:
    if url.username and url.username != admin.username:
        conn.execute(text(f"GRANT {privileges} ON `{database}`.* TO '{url.username}'@'%'"))


@pytest.fixture
def wait_for_replication(testbed: TestbedInfo) -> Iterator[WaitForReplication]:
    """``wait_for_replication(db, timeout=None)``: every replica applied the primary's GTID."""
    engines = [_admin_engine(url) for url in testbed.replica_admin_urls()]

    def wait(db: Database, timeout: float | None = None) -> float:
        return db.wait_for_replicas(timeout=timeout, status_engines=engines)

    yield wait
    for engine in engines:
        engine.dispose()


@pytest.fixture
def tracer() -> Tracer:
    """The Tracer shared by every Database ``db_factory`` makes in one test."""
    return Tracer()


@pytest.fixture
def trace(tracer: Tracer) -> Iterator[QueryTrace]:
    """Every statement the test's Databases send, with task, route and server."""
    with tracer.recording() as recorded:
        yield recorded


@pytest.fixture
def db_factory(
    testbed: TestbedInfo, tracer: Tracer, wait_for_replication: WaitForReplication
) -> Iterator[DbFactory]:
    """``db_factory(with_replica=True, settings=None)`` → a Database on this test's own database."""
    name = f"nova_t{secrets.token_hex(5)}"
    admin = _admin_engine(testbed.admin_url())
    created: list[Database] = []
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        _grant(conn, name, testbed.primary, SERVICE_PRIVILEGES, testbed.admin)
        for url in testbed.replicas:
            _grant(conn, name, url, "SELECT", testbed.admin)
    first = Database(testbed.settings(database=name), tracer=tracer)
    created.append(first)
    with first.writer() as session:
        schema.create_all(session.connection())
    wait_for_replication(first)

    def make(*, with_replica: bool = True, settings: Settings | None = None) -> Database:
        database = Database(
            testbed.settings(database=name, with_replica=with_replica, base=settings), tracer=tracer
        )
        created.append(database)
        return database

    yield make
    for database in created:
        database.dispose()
    with admin.begin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture
def db(db_factory: DbFactory) -> Database:
    """A Database (primary + replicas) on a fresh, replicated nova schema."""
    return db_factory()


@pytest.fixture
def compute_factory() -> Callable[..., ComputeManager]:
    """``compute_factory(db, host="compute-1", options=None, seed=0)`` → a ComputeManager."""

    def make(
        db: Database, host: str = "compute-1", options: ComputeSettings | None = None, seed: int = 0
    ) -> ComputeManager:
        compute = Compute(
            host=host,
            db=db,
            driver=FakeDriver(host, seed=seed),
            notifier=MemoryNotifier(host),
            options=options or ComputeSettings(),
        )
        return ComputeManager(compute)

    return make


@pytest.fixture
def primary_admin(testbed: TestbedInfo) -> Iterator[Engine]:
    """A privileged engine on the primary."""
    engine = _admin_engine(testbed.admin_url())
    yield engine
    engine.dispose()


@pytest.fixture
def replica_admin(testbed: TestbedInfo) -> Iterator[list[Engine]]:
    """Privileged engines on each replica, for stopping and starting replication."""
    engines = [_admin_engine(url) for url in testbed.replica_admin_urls()]
    yield engines
    for engine in engines:
        engine.dispose()
