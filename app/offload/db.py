"""Database: sessions whose route — write, read on the primary, read on a replica — is fixed.

``writer()`` yields a session on the primary that commits when the block ends.
``reader()`` yields a read-only session on the primary; ``reader(allow_replica=True)``
one on a replica (on the primary when no ``slave_connection`` is configured,
exactly as Nova does).  The route is chosen when the session opens and never
changes, so a session cannot drift from the replica to the primary half-way.

Reader sessions refuse writes on the client, before anything reaches a server:
a flush with pending changes, or a statement whose verb can change data, raises
``WriteInReaderSession``.  Replicas refuse them too (``read_only`` and a
SELECT-only user) — the client guard only makes the mistake loud and early.

Driver errors are translated once, in the engine's ``handle_error`` hook
(see ``offload.dberrors``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import pymysql
from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from offload import replication
from offload.config import DatabaseSettings, Settings
from offload.dberrors import install_translation, translate
from offload.errors import (
    ConfigError,
    ConnectionLost,
    OffloadError,
    WriteInReaderSession,
)
from offload.liveness import install_liveness_check
from offload.routes import Route
from offload.sqlverbs import classify
from offload.staleness import RoutingStats, StalenessGuard
from offload.tracing import Tracer, current_task, server_identity, set_route

__all__ = [
    "Database",
    "Target",
    "make_engine",
    "refuse_writes",
    "session_route",
    "session_target",
]

_T = TypeVar("_T")
_SQL_MODE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ_,")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a session's statements go: a label ('primary', 'replica0'...) and its engine."""

    name: str
    engine: Engine

    @property
    def is_replica(self) -> bool:
        return self.name != "primary"


def make_engine(url: URL, options: DatabaseSettings, *, name: str) -> Engine:
    """An engine with oslo.db-like pool settings, translated errors, and a checkout check
    that pings only a connection that may be dead (``offload.liveness``; no pre-ping).

    The write guard is not the engine's: ``Database`` runs it inside the tracer's one
    statement hook, on the route its sessions set (``refuse_writes``).
    """
    mode = options.mysql_sql_mode.strip().upper()
    if mode and not set(mode) <= _SQL_MODE_CHARS:
        raise ConfigError(
            f"[database] mysql_sql_mode {options.mysql_sql_mode!r} is not a list of sql_mode names",
            hint="use e.g. TRADITIONAL or STRICT_TRANS_TABLES,NO_ZERO_DATE",
        )
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if mode:
        connect_args["init_command"] = f"SET SESSION sql_mode = '{mode}'"
    engine = create_engine(
        url,
        pool_size=options.max_pool_size,
        max_overflow=options.max_overflow,
        pool_timeout=options.pool_timeout,
        pool_recycle=options.connection_recycle_time,
        connect_args=connect_args,
    )
    install_translation(engine, name=name)
    install_liveness_check(engine)
    return engine


_WRITE_ROUTE = Route.WRITE.value


def refuse_writes(route: str | None, statement: str) -> None:
    """Raise ``WriteInReaderSession`` for a statement that can change data on a read route."""
    if route is None or route == _WRITE_ROUTE:
        return
    verb, read_only = classify(statement)
    if not read_only:
        raise WriteInReaderSession(
            f"{verb or 'a statement'} attempted in a read-only session (route={route})",
            hint="open the session with db.writer() to change data",
        )


class _ReaderSession(Session):
    """A session that refuses to flush: reader sessions never change data."""


@event.listens_for(_ReaderSession, "before_flush")
def _refuse_flush(session: Session, flush_context: Any, instances: Any) -> None:
    changed = bool(session.new or session.deleted) or any(
        session.is_modified(obj) for obj in session.dirty
    )
    if changed:
        raise WriteInReaderSession(
            "flush of pending changes in a read-only session "
            f"(route={session_route(session).value})",
            hint="make the changes in a db.writer() session",
        )


def session_route(session: Session) -> Route:
    """The route a session of this Database was opened with."""
    route: Route = session.info["offload_route"]
    return route


def session_target(session: Session) -> Target:
    """The server (primary or which replica) a session of this Database talks to."""
    target: Target = session.info["offload_target"]
    return target


#: this task run's last write (run id, the GTID its replica reads wait for; None: not asked yet)
_last_write: ContextVar[tuple[str, str | None] | None] = ContextVar(
    "offload_last_write", default=None
)


def _floor_sql(sql: str) -> str:
    """A ``text()`` statement's ``:name`` parameters as PyMySQL's ``%s`` (in their order)."""
    return re.sub(r":[a-z_]+", "%s", sql)


def _floor_scalar(conn: Connection, where: str, sql: str, args: tuple[Any, ...] = ()) -> Any:
    """One statement straight on the DBAPI connection: no execution context, no hooks.

    The GTID waits' two round trips at the floor.  Driver errors are translated as
    the engines' hook translates them (``offload.dberrors``); a lost connection is
    invalidated so that it is not reused.
    """
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    try:
        cursor = dbapi.cursor()
        try:
            cursor.execute(sql, args or None)
            row = cursor.fetchone()
        finally:
            cursor.close()
    except pymysql.Error as exc:
        translated = translate(exc, where)
        if translated is None:
            raise DBAPIError.instance(sql, args, exc, pymysql.Error) from exc
        if isinstance(translated, ConnectionLost):
            conn.invalidate()
        raise translated from exc
    return None if row is None else row[0]


def _where(target: Target) -> str:
    url = target.engine.url
    return f"{target.name}-sync {url.host}:{url.port or 3306}"


def _position(conn: Connection, *, target: Target, flavor: replication.Flavor) -> str:
    sql = replication.sql_for(flavor).gtid_position
    return replication.normalize_gtid(_floor_scalar(conn, _where(target), sql))


def _wait(
    conn: Connection, *, gtid: str, timeout: float, flavor: replication.Flavor, target: Target
) -> float:
    """The server's own GTID wait, at the floor; ``replication.wait_for_gtid``'s answers."""
    position = replication.normalize_gtid(gtid)
    if not position:
        return 0.0
    sql = _floor_sql(replication.sql_for(flavor).wait_for_gtid)
    args = (position, replication.wait_timeout_argument(timeout))
    started = time.monotonic()
    result = _floor_scalar(conn, _where(target), sql, args)
    waited = time.monotonic() - started
    return replication.finish_wait(
        flavor, position, result, waited, status_conn=conn, replica=target.name
    )


class Database:
    """Engines for the primary and its replicas, and sessions with a fixed route."""

    def __init__(self, settings: Settings, *, tracer: Tracer | None = None) -> None:
        options = settings.database
        self.settings = settings
        #: tags every statement and feeds StatementRecords to its sinks
        self.tracer = tracer or Tracer()
        #: fallbacks, skips, stale reads and causal waits, by task
        self.routing = RoutingStats()
        self.primary = self._target("primary", settings.require_connection())
        self.replicas: tuple[Target, ...] = tuple(
            self._target(f"replica{i}", url) for i, url in enumerate(options.slave_connections)
        )
        self._writer_factory = sessionmaker(expire_on_commit=False)
        self._reader_factory = sessionmaker(class_=_ReaderSession, autoflush=False)
        self._flavor: replication.Flavor | None = None
        self._guard: StalenessGuard | None = None
        self._guard_lock = threading.Lock()
        self._sync_conns: dict[str, Connection] = {}
        self._sync_engines: dict[str, Engine] = {}
        self._sync_locks: dict[str, threading.Lock] = {}

    def _target(self, name: str, url: URL) -> Target:
        engine = make_engine(url, self.settings.database, name=name)
        self.tracer.install(engine, target=name, guard=refuse_writes)
        return Target(name, engine)

    @property
    def has_replica(self) -> bool:
        return bool(self.replicas)

    def _monitor_engine(self, url: URL, name: str) -> Engine:
        """A small untraced pool for heartbeats and lag probes (not task statements)."""
        options = dataclasses.replace(self.settings.database, max_pool_size=1, max_overflow=1)
        return make_engine(url, options, name=name)

    @property
    def guard(self) -> StalenessGuard:
        """The staleness guard (heartbeat writer, lag probes), built at first use."""
        with self._guard_lock:
            if self._guard is None:
                self._guard = StalenessGuard(
                    self.settings, self.routing, make_engine=self._monitor_engine
                )
            return self._guard

    def dispose(self) -> None:
        """Stop the heartbeat and close every pooled connection (the Database stays usable)."""
        with self._guard_lock:
            if self._guard is not None:
                self._guard.close()
                self._guard = None
        for name in list(self._sync_conns):
            self._drop_sync(name)
        for engine in self._sync_engines.values():
            engine.dispose()
        for target in (self.primary, *self.replicas):
            target.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    # --- sessions ---------------------------------------------------------

    def _open(self, route: Route, target: Target, conn: Connection) -> Session:
        set_route(conn, route.value)
        factory = self._writer_factory if route.writes else self._reader_factory
        session = factory(bind=conn)
        session.info["offload_route"] = route
        session.info["offload_target"] = target
        return session

    @contextmanager
    def writer(self) -> Iterator[Session]:
        """A session on the primary; commits when the block ends, rolls back on error."""
        with self.primary.engine.connect() as conn:
            session = self._open(Route.WRITE, self.primary, conn)
            try:
                with session.begin():
                    yield session
            finally:
                session.close()
            self._remember_write()

    def _remember_write(self) -> None:
        """In a task with causal reads on, note that this run wrote — no statement yet.

        The GTID a later replica read must wait for is asked of the primary only
        when such a read comes (``_causal_gtid``): a run whose writes no read
        follows sends nothing more to the primary.
        """
        task = current_task()
        if task is None or not self.replicas or not self.settings.replica.causal_reads:
            return
        _last_write.set((task.run, None))

    def _causal_gtid(self, run: str) -> str:
        """The primary's GTID position now: it contains this run's writes (asked once per write).

        The position is a superset of the run's own last commit, so the replica read
        waits for at least that write (and perhaps a few heartbeats more).
        """
        flavor = self.flavor  # first: its own lookup must not need a second connection
        with self.primary.engine.connect() as conn:
            set_route(conn, Route.CAUSAL.value)
            gtid = replication.gtid_position(conn, flavor)
        _last_write.set((run, gtid))
        return gtid

    def _replica_connection(self) -> tuple[Target, Connection]:
        """The replica (or the primary) a READ_REPLICA session uses, connected."""
        if not self.replicas:
            return self.primary, self.primary.engine.connect()  # as in Nova
        choice = self.guard.choose()  # may raise SkipRun
        if choice.replica is None:
            return self.primary, self.primary.engine.connect()
        target = next(t for t in self.replicas if t.name == choice.replica)
        conn = target.engine.connect()
        identity, acting = server_identity(conn), self.guard.acting_primary()
        if identity is not None and identity.server_id == acting:
            # its endpoint moved to the primary since the last lag reading: not a replica
            conn.close()
            self.routing.fallback(
                "replica_is_primary",
                f"{target.name}: answers as the primary (server_id {acting}): the replica's "
                "endpoint leads to the server acting as primary",
            )
            return self.primary, self.primary.engine.connect()
        task, last = current_task(), _last_write.get()
        if task is None or last is None or last[0] != task.run:
            return target, conn
        try:
            gtid = last[1] if last[1] is not None else self._causal_gtid(task.run)
            set_route(conn, Route.READ_REPLICA.value)
            reached, waited = replication.try_wait_for_gtid(
                conn, gtid, self.settings.replica.causal_timeout, self.flavor
            )
        except BaseException:
            conn.close()
            raise
        self.routing.causal_wait(waited)
        if reached:
            return target, conn
        conn.close()
        self.routing.fallback("causal_timeout")
        return self.primary, self.primary.engine.connect()

    @contextmanager
    def reader(self, *, allow_replica: bool = False) -> Iterator[Session]:
        """A read-only session: on a replica when allowed, configured and fit; else the primary.

        With ``allow_replica`` the staleness guard picks the least-lagged replica
        within ``max_lag`` (else ``lag_policy`` applies; ``skip`` raises
        ``SkipRun``), and in a task that wrote, the read first waits for that
        write's GTID on the replica (up to ``causal_timeout``, else the primary).
        """
        route = Route.READ_REPLICA if allow_replica else Route.READ_PRIMARY
        if allow_replica:
            target, conn = self._replica_connection()
        else:
            target, conn = self.primary, self.primary.engine.connect()
        with conn:
            # the session joins the connection's transaction instead of owning one:
            # closing the connection then ends it with the one ROLLBACK of the session,
            # and the pool, seeing it ended, sends no second one at check-in
            if not conn.in_transaction():
                conn.begin()
            session = self._open(route, target, conn)
            try:
                yield session
            finally:
                # close() releases the session's objects but, unlike rollback(), leaves
                # them readable after the block; the transaction ends with the connection
                session.close()

    # --- replication ------------------------------------------------------

    @property
    def flavor(self) -> replication.Flavor:
        """MariaDB or MySQL, read from the primary's VERSION() once."""
        if self._flavor is None:
            with self.primary.engine.connect() as conn:
                # read when the connection was opened: no statement of its own
                identity = server_identity(conn)
                self._flavor = (
                    replication.detect_flavor(identity.version)
                    if identity and identity.version
                    else replication.server_flavor(conn)
                )
        return self._flavor

    def _on_sync_connection(self, target: Target, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` on a long-lived autocommit connection to ``target``.

        No pool ping at checkout and no rollback at return: a wait costs the two
        round trips the server's own wait needs (position, wait), as `make bench`
        measures against a bare PyMySQL connection.  The connection is dropped on
        any error; when it had died while idle (the server restarted), ``work``
        runs once more on a fresh one.
        """
        with self._sync_locks.setdefault(target.name, threading.Lock()):
            for attempt in (1, 2):
                conn = self._sync_conns.get(target.name)
                fresh = conn is None or conn.closed or conn.invalidated
                if fresh:
                    engine = self._sync_engines.get(target.name)
                    if engine is None:  # its own pool: the sessions' pool stays free
                        engine = self._monitor_engine(target.engine.url, f"{target.name}-sync")
                        self._sync_engines[target.name] = engine
                    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                    self._sync_conns[target.name] = conn
                assert conn is not None
                try:
                    return work(conn)
                except ConnectionLost:
                    self._drop_sync(target.name)
                    if fresh or attempt == 2:
                        raise
                except BaseException:
                    self._drop_sync(target.name)
                    raise
        raise AssertionError("unreachable")

    def _drop_sync(self, name: str) -> None:
        conn = self._sync_conns.pop(name, None)
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError, OffloadError):
                conn.close()

    def replication_position(self) -> str:
        """The primary's current GTID position (what a replica must reach)."""
        position = functools.partial(_position, target=self.primary, flavor=self.flavor)
        return self._on_sync_connection(self.primary, position)

    def wait_for_replicas(
        self,
        *,
        gtid: str | None = None,
        timeout: float | None = None,
        status_engines: Sequence[Engine] = (),
    ) -> float:
        """Wait until every replica applied ``gtid`` (default: the primary's position now).

        Uses the server's own GTID wait, no polling.  ``status_engines`` (one per
        replica, privileged) let a ``ReplicationTimeout`` carry the replica's
        status.  Returns the seconds waited in all.
        """
        position = self.replication_position() if gtid is None else gtid
        limit = self.settings.replica.wait_timeout if timeout is None else timeout
        started = time.monotonic()
        for index, target in enumerate(self.replicas):
            remaining = max(0.0, limit - (time.monotonic() - started))
            status_engine = status_engines[index] if index < len(status_engines) else None
            try:
                wait = functools.partial(
                    _wait, gtid=position, timeout=remaining, flavor=self.flavor, target=target
                )
                self._on_sync_connection(target, wait)
            except replication.ReplicationTimeout as timeout_error:
                if status_engine is None:
                    raise
                # only now, on the slow path, ask the privileged account for the status
                with status_engine.connect() as status_conn:
                    status = replication.replica_status(status_conn, self.flavor)
                raise replication.ReplicationTimeout(
                    timeout_error.gtid, timeout_error.waited, status, replica=target.name
                ) from None
        return time.monotonic() - started
