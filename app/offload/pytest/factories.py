"""Fixture factories: declare the testbeds and databases a conftest needs.

As in pytest-mysql and pytest-postgresql, each factory returns a fixture; the
name it is assigned to is the fixture's name, and fixtures built on another
take that one's name::

    from offload.pytest import factories

    my_testbed = factories.testbed(replicas=2)              # session scope
    my_db = factories.database("my_testbed")                # a scratch database per test

    faults_native = factories.native_testbed(scope="package")    # .topology: kill, start
    offload_testbed = factories.testbed("faults_native", scope="package")  # overrides the run's

The plugin's default fixtures (``offload_testbed``, ``offload_db``, ...) are
built from these factories (:mod:`offload.pytest.plugin`).

Arguments left ``None`` take the run's settings (``--testbed``,
``--testbed-replicas``, ``--testbed-flavor`` or their ini twins).
``--testbed-dir`` names the directory of the run's testbed — ``testbed()``
without arguments, session scope (the default ``offload_testbed``); every other
native testbed gets a directory of its own under pytest's temporary directory
(kept for its logs).  A testbed that asks for more replicas, or another flavor,
than the run's compose or external testbed has fails its tests with one line.

Every scratch database is a :class:`~offload.testbed.janitor.DatabaseJanitor`:
created, granted, schema'd and replicated before the test; dropped and its
grants revoked after it — on an external testbed nothing is left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import pytest
from sqlalchemy import Engine

from offload.compute.context import Compute
from offload.compute.driver import FakeDriver
from offload.compute.manager import ComputeManager
from offload.compute.notifier import MemoryNotifier
from offload.config import ComputeSettings, Settings
from offload.db import Database
from offload.dberrors import unpooled_engine
from offload.errors import OffloadError
from offload.pytest.options import RunOptions, remember_server
from offload.replication import detect_flavor
from offload.testbed.janitor import DatabaseJanitor, nova_schema
from offload.testbed.own import OwnTestbed
from offload.testbed.servers import FlavorSpec
from offload.testbed.topology import TestbedInfo
from offload.tracing import QueryTrace, Tracer
from offload.urls import parse_url, with_database

__all__ = [
    "ComputeFactory",
    "DbFactory",
    "FixtureDefinition",
    "Scope",
    "WaitForReplication",
    "compute_factory",
    "database",
    "database_factory",
    "external_testbed",
    "native_testbed",
    "primary_admin",
    "replica_admin",
    "testbed",
    "trace",
    "tracer",
    "wait_for_replication",
]

#: what a factory returns: a pytest fixture (assign it to a name in a conftest or module)
FixtureDefinition = Callable[..., Any]
Scope = Literal["session", "package", "module", "class", "function"]
#: the prefix of every scratch database the fixtures create
DATABASE_PREFIX = "offload_test_"

_T = TypeVar("_T")


class DbFactory(Protocol):
    """``offload_db_factory(with_replica=True, settings=None)``: a Database on the test's one."""

    def __call__(
        self, *, with_replica: bool = True, settings: Settings | None = None
    ) -> Database: ...


class WaitForReplication(Protocol):
    """``offload_wait_for_replication(db, timeout=None)``: replicas caught up; seconds waited."""

    def __call__(self, db: Database, timeout: float | None = None) -> float: ...


class ComputeFactory(Protocol):
    """``offload_compute_factory(db, host="compute-1", options=None, seed=0)``: a ComputeManager."""

    def __call__(
        self,
        db: Database,
        host: str = "compute-1",
        options: ComputeSettings | None = None,
        seed: int = 0,
    ) -> ComputeManager: ...


def _value(request: pytest.FixtureRequest, name: str, kind: type[_T]) -> _T:
    """The value of fixture ``name``, which must be a ``kind``."""
    value = request.getfixturevalue(name)
    if not isinstance(value, kind):
        pytest.fail(
            f"fixture {name!r} gives {type(value).__name__}, where {request.fixturename!r} "
            f"needs a {kind.__name__}",
            pytrace=False,
        )
    return value


def _flavor(flavor: str | FlavorSpec | None, run: RunOptions) -> FlavorSpec | None:
    if flavor is None:
        return run.flavor
    if isinstance(flavor, FlavorSpec):
        return flavor
    try:
        return FlavorSpec.parse(flavor)
    except OffloadError as exc:
        problem = str(exc)
    pytest.fail(f"factories: flavor={flavor!r}: {problem}", pytrace=False)


def external_testbed(run: RunOptions) -> TestbedInfo:
    """The servers of ``--primary-url``/``--replica-url`` (privileged accounts)."""
    if not run.primary_url or not run.replica_urls:
        pytest.fail(
            "--testbed=external needs --primary-url and --replica-url "
            "(or offload_primary_url and offload_replica_url in the ini file)",
            pytrace=False,
        )
    try:
        return _external(run.primary_url, run.replica_urls)
    except OffloadError as exc:
        problem = str(exc)  # failed outside the handler: one line, no chained traceback
    pytest.fail(f"--testbed=external: {problem}", pytrace=False)


def _external(primary_url: str, replica_urls: tuple[str, ...]) -> TestbedInfo:
    primary = parse_url(primary_url, option="--primary-url", need_database=False)
    replicas = tuple(
        parse_url(u, option="--replica-url", need_database=False) for u in replica_urls
    )
    engine = unpooled_engine(primary, name="primary")
    try:
        with engine.connect() as conn:
            version = str(conn.exec_driver_sql("SELECT VERSION()").scalar_one())
    finally:
        engine.dispose()
    return TestbedInfo(
        backend="external",
        dir=None,
        flavor=detect_flavor(version),
        version=version,
        primary=primary,
        replicas=replicas,
        admin=with_database(primary, None),
        replica_admins=tuple(with_database(u, None) for u in replicas),
    )


def _check_given(info: TestbedInfo, replicas: int | None, flavor: FlavorSpec | None) -> None:
    """A compose or external testbed: what a factory asked for must be what it has."""
    if replicas is not None and replicas > len(info.replicas):
        pytest.fail(
            f"this test needs {replicas} replicas and the {info.backend} testbed has "
            f"{len(info.replicas)}; run it with --testbed=native",
            pytrace=False,
        )
    if flavor is not None and not flavor.accepts(info.flavor, info.version):
        pytest.fail(
            f"this test needs {flavor} and the {info.backend} testbed is {info.server}; "
            "run it with --testbed=native",
            pytrace=False,
        )


def _directory(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    directory: str | Path | None,
    run: RunOptions,
    *,
    of_the_run: bool,
) -> Path:
    if directory is not None:
        return Path(directory)
    if of_the_run and run.directory is not None:
        return run.directory
    return tmp_path_factory.mktemp(request.fixturename or "testbed")


def native_testbed(
    *,
    replicas: int | None = None,
    flavor: str | FlavorSpec | None = None,
    directory: str | Path | None = None,
    scope: Scope = "session",
    endpoints: bool = False,
) -> FixtureDefinition:
    """A native testbed of the fixture's own, always: an :class:`OwnTestbed` that is up.

    For tests that kill and restart servers (``.topology.kill("replica0")``);
    ``testbed(name)`` gives its :class:`TestbedInfo` to the fixtures built on a testbed.
    ``endpoints``: clients reach the servers through endpoints that a switchover or
    failover moves (``offload.testbed.roles``).
    """

    @pytest.fixture(scope=scope)
    def offload_native_testbed(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[OwnTestbed]:
        """A native primary with GTID replicas of this fixture's own (``.info``, ``.topology``)."""
        run = RunOptions.of(request.config)
        where = _directory(request, tmp_path_factory, directory, run, of_the_run=False)
        with OwnTestbed(
            replicas=replicas or run.replicas,
            flavor=_flavor(flavor, run),
            directory=where,
            endpoints=endpoints,
        ) as own:
            yield own

    return offload_native_testbed


def testbed(
    native: str | None = None,
    *,
    backend: Literal["native", "compose", "external"] | None = None,
    replicas: int | None = None,
    flavor: str | FlavorSpec | None = None,
    directory: str | Path | None = None,
    scope: Scope = "session",
) -> FixtureDefinition:
    """A running primary with GTID replicas (:class:`TestbedInfo`).

    ``native``: the name of a :func:`native_testbed` fixture whose servers to use
    (then no other argument applies).  Otherwise ``backend`` (default: the run's
    ``--testbed``): ``native`` starts servers of the fixture's own, ``compose`` is
    the session's compose stack, ``external`` the servers of ``--primary-url`` and
    ``--replica-url``.
    """
    if native is not None and any(
        given is not None for given in (backend, replicas, flavor, directory)
    ):
        raise TypeError("factories.testbed(native=...) takes no other testbed argument")
    of_the_run = scope == "session" and all(
        given is None for given in (native, backend, replicas, flavor, directory)
    )

    @pytest.fixture(scope=scope)
    def offload_testbed(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[TestbedInfo]:
        """A running primary with GTID replicas (native, compose or external)."""
        if native is not None:
            yield _value(request, native, OwnTestbed).info
            return
        run = RunOptions.of(request.config)
        chosen = backend or run.backend
        wanted = _flavor(flavor, run) if flavor is not None else None
        if chosen == "native":
            where = _directory(request, tmp_path_factory, directory, run, of_the_run=of_the_run)
            with OwnTestbed(
                replicas=replicas or run.replicas, flavor=_flavor(flavor, run), directory=where
            ) as own:
                if of_the_run:
                    remember_server(request.config, f"native {own.info.server}")
                yield own.info
            return
        if chosen == "compose":
            from offload.pytest.compose import compose_testbed  # noqa: PLC0415 - Docker only

            info = compose_testbed(request)
        else:
            info = external_testbed(run)
        _check_given(info, replicas, wanted)
        if backend is None:
            remember_server(request.config, f"{info.backend} {info.server}")
        yield info

    return offload_testbed


def tracer(*, scope: Scope = "function") -> FixtureDefinition:
    """A :class:`Tracer` that every Database of the test shares."""

    @pytest.fixture(scope=scope)
    def offload_tracer() -> Tracer:
        """The Tracer shared by every Database the database fixtures make in one test."""
        return Tracer()

    return offload_tracer


def trace(tracer: str = "offload_tracer", *, scope: Scope = "function") -> FixtureDefinition:
    """A :class:`QueryTrace` recording what the Databases of ``tracer`` send."""

    @pytest.fixture(scope=scope)
    def offload_trace(request: pytest.FixtureRequest) -> Iterator[QueryTrace]:
        """Every statement the test's Databases send, with task, route and server."""
        with _value(request, tracer, Tracer).recording() as recorded:
            yield recorded

    return offload_trace


def database_factory(
    testbed: str = "offload_testbed",
    *,
    tracer: str = "offload_tracer",
    schema: str | None = None,
    prefix: str = DATABASE_PREFIX,
    scope: Scope = "function",
) -> FixtureDefinition:
    """``make(with_replica=True, settings=None)`` → Databases on one scratch database.

    ``schema`` names a fixture giving the ``SchemaStep`` that fills the scratch database
    (default: offload's tables, ``janitor.nova_schema``); ``prefix`` its name's start.
    """

    @pytest.fixture(scope=scope)
    def offload_db_factory(request: pytest.FixtureRequest) -> Iterator[DbFactory]:
        """``offload_db_factory(with_replica=True, settings=None)`` → a Database on this
        test's own scratch database (created, schema'd, replicated; dropped afterwards)."""
        info = _value(request, testbed, TestbedInfo)
        shared = _value(request, tracer, Tracer)
        step = nova_schema if schema is None else request.getfixturevalue(schema)
        if not callable(step):
            pytest.fail(f"fixture {schema!r} gives no schema step (a callable)", pytrace=False)
        created: list[Database] = []
        with DatabaseJanitor(info.settings(), prefix=prefix, schema=step) as janitor:

            def make(*, with_replica: bool = True, settings: Settings | None = None) -> Database:
                database = Database(
                    info.settings(database=janitor.name, with_replica=with_replica, base=settings),
                    tracer=shared,
                )
                created.append(database)
                return database

            try:
                yield make
            finally:
                for database in created:
                    database.dispose()

    return offload_db_factory


def database(
    testbed: str = "offload_testbed",
    *,
    tracer: str = "offload_tracer",
    with_replica: bool = True,
    scope: Scope = "function",
) -> FixtureDefinition:
    """A :class:`Database` (primary and replicas) on a scratch database of its own."""

    @pytest.fixture(scope=scope)
    def offload_db(request: pytest.FixtureRequest) -> Iterator[Database]:
        """A Database (primary + replicas) on a fresh, replicated nova schema of its own."""
        info = _value(request, testbed, TestbedInfo)
        with (
            DatabaseJanitor(info.settings(), prefix=DATABASE_PREFIX) as janitor,
            Database(
                info.settings(database=janitor.name, with_replica=with_replica),
                tracer=_value(request, tracer, Tracer),
            ) as db,
        ):
            yield db

    return offload_db


def wait_for_replication(*, scope: Scope = "function") -> FixtureDefinition:
    """``wait(db, timeout=None)``: every replica of ``db`` applied the primary's GTID."""

    @pytest.fixture(scope=scope)
    def offload_wait_for_replication() -> Iterator[WaitForReplication]:
        """``offload_wait_for_replication(db, timeout=None)``: every replica applied the
        primary's current GTID (the server's own wait); a timeout carries the replica's status."""
        engines: dict[str, Engine] = {}

        def status_engines(db: Database) -> list[Engine]:
            chosen = []
            for url in db.settings.testbed.replica_admin_connections:
                key = url.render_as_string(hide_password=False)
                if key not in engines:
                    engines[key] = unpooled_engine(url, name=url.host or "replica")
                chosen.append(engines[key])
            return chosen

        def wait(db: Database, timeout: float | None = None) -> float:
            return db.wait_for_replicas(timeout=timeout, status_engines=status_engines(db))

        try:
            yield wait
        finally:
            for engine in engines.values():
                engine.dispose()

    return offload_wait_for_replication


def primary_admin(
    testbed: str = "offload_testbed", *, scope: Scope = "function"
) -> FixtureDefinition:
    """A privileged engine on the primary of ``testbed``."""

    @pytest.fixture(scope=scope)
    def offload_primary_admin(request: pytest.FixtureRequest) -> Iterator[Engine]:
        """A privileged engine on the primary."""
        engine = unpooled_engine(_value(request, testbed, TestbedInfo).admin_url(), name="primary")
        try:
            yield engine
        finally:
            engine.dispose()

    return offload_primary_admin


def replica_admin(
    testbed: str = "offload_testbed", *, scope: Scope = "function"
) -> FixtureDefinition:
    """Privileged engines on each replica of ``testbed`` (fault injection)."""

    @pytest.fixture(scope=scope)
    def offload_replica_admin(request: pytest.FixtureRequest) -> Iterator[list[Engine]]:
        """Privileged engines on each replica, for stopping and starting replication."""
        info = _value(request, testbed, TestbedInfo)
        engines = [
            unpooled_engine(url, name=f"replica{index}")
            for index, url in enumerate(info.replica_admin_urls())
        ]
        try:
            yield engines
        finally:
            for engine in engines:
                engine.dispose()

    return offload_replica_admin


def compute_factory(*, scope: Scope = "function") -> FixtureDefinition:
    """``make(db, host="compute-1", options=None, seed=0)`` → a ComputeManager."""

    @pytest.fixture(scope=scope)
    def offload_compute_factory() -> ComputeFactory:
        """``offload_compute_factory(db, host="compute-1", options=None, seed=0)`` → a
        ComputeManager with a FakeDriver and a MemoryNotifier."""

        def make(
            db: Database,
            host: str = "compute-1",
            options: ComputeSettings | None = None,
            seed: int = 0,
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

    return offload_compute_factory
