"""Where the benchmarks run: the servers, scratch databases, server-side statement counts.

* :class:`Servers` — the primary and replicas (service and admin accounts) of a
  testbed the runner started, or of an existing one named by ``--config``.
* :class:`Scratch` — a database of the benchmark's own (``offload_bench_...``):
  a :class:`~offload.testbed.janitor.DatabaseJanitor` (created and granted by the
  admin account, the nova schema and ``bench_rows`` in it, replicated; dropped and
  its grants revoked afterwards): a benchmark never touches the testbed's ``nova``
  database.
* :class:`TaggedStatements` — what a server itself recorded of the tasks'
  statements: ``performance_schema.events_statements_history_long`` rows of the
  scratch schema whose SQL text carries the tracing tag
  ``/* offload task=... route=... run=... */``.  The staleness guard's
  heartbeat and lag probes, the benchmark's own writer and these admin queries
  carry no task tag, so they are not counted.  The history is a ring of 20,000
  statements: it is read after every task cycle (or every second), and each
  statement is counted once by (THREAD_ID, EVENT_ID).
"""

from __future__ import annotations

import dataclasses
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
from rich.console import Console
from sqlalchemy import URL, Connection, Engine, create_engine, text

from offload import attach
from offload.config import ComputeSettings, ReplicaSettings, ServiceSettings, Settings
from offload.db import Database
from offload.errors import ConfigError
from offload.replication import Flavor, detect_flavor
from offload.seed import SeedSummary, seed
from offload.sqlverbs import statement_verb
from offload.testbed.janitor import DatabaseJanitor
from offload.testbed.topology import TESTBED_COMPUTE_OPTIONS, TestbedInfo
from offload.urls import tls_connect_args, with_database

__all__ = [
    "BenchContext",
    "Progress",
    "Scratch",
    "Servers",
    "StatementEvent",
    "TaggedStatements",
    "bare_connection",
    "bench_compute_options",
    "bench_schema",
    "peak_rss_kib",
    "reset_peak_rss",
    "rss_kib",
]

_TAG = re.compile(r"/\* offload task=(?P<task>\S+) route=(?P<route>\S+) run=(?P<run>\S+) \*/")
_HISTORY = text(
    "SELECT THREAD_ID, EVENT_ID, ROWS_EXAMINED, LEFT(SQL_TEXT, 300) "
    "FROM performance_schema.events_statements_history_long "
    "WHERE CURRENT_SCHEMA = :schema AND SQL_TEXT LIKE :pattern"
)


class Progress:
    """One line per step on stderr, with the seconds since the run started."""

    def __init__(self, console: Console | None = None) -> None:
        if console is None:
            console = Console(stderr=True, highlight=False)
            if not console.is_terminal:
                console = Console(stderr=True, highlight=False, width=160)
        self.console = console
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/] {message}")


def bench_compute_options(spacing: int | None = None) -> ComputeSettings:
    """Every periodic task on (the testbed's options); ``spacing`` sets every interval."""
    defaults = ComputeSettings()
    values: dict[str, Any] = {}
    for key, raw in TESTBED_COMPUTE_OPTIONS.items():
        current = getattr(defaults, key)
        values[key] = raw == "true" if isinstance(current, bool) else type(current)(raw)
    if spacing is not None:
        for key in (
            "periodic_interval_max",
            "update_resources_interval",
            "instance_delete_interval",
            "bandwidth_poll_interval",
            "volume_usage_poll_interval",
            "sync_power_state_interval",
            "heal_instance_info_cache_interval",
            "shelved_poll_interval",
            "running_deleted_instance_poll_interval",
        ):
            values[key] = spacing
    return dataclasses.replace(defaults, **values)


@dataclass(frozen=True, slots=True)
class Servers:
    """The primary and replicas the benchmarks run on (URLs without a database)."""

    flavor: Flavor
    version: str
    primary: URL
    replicas: tuple[URL, ...]
    admin: URL
    replica_admins: tuple[URL, ...]
    #: settings to start from: pool and replica options (defaults for an own testbed)
    base: Settings

    @classmethod
    def from_testbed(cls, info: TestbedInfo) -> Servers:
        return cls._make(
            info.primary_url(None),
            info.replica_urls(None),
            info.admin_url(),
            info.replica_admin_urls(),
            Settings(),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Servers:
        """An existing testbed, from its config (needs the [testbed] admin accounts)."""
        primary = settings.require_connection()
        admin = settings.testbed.admin_connection
        replica_admins = settings.testbed.replica_admin_connections
        if not settings.database.slave_connections:
            raise ConfigError(
                "the benchmarks compare replica and primary reads, and this "
                "config has no [database] slave_connection",
                hint="use a testbed's config (`make up` writes one)",
            )
        if admin is None or len(replica_admins) != len(settings.database.slave_connections):
            raise ConfigError(
                "the benchmarks need the testbed's admin accounts (scratch "
                "databases, performance_schema)",
                hint="use the config `make up` wrote (.testbed/offload.conf), "
                "whose [testbed] section has them",
            )
        return cls._make(
            with_database(primary, None),
            tuple(with_database(u, None) for u in settings.database.slave_connections),
            with_database(admin, None),
            tuple(with_database(u, None) for u in replica_admins),
            settings,
        )

    @classmethod
    def _make(
        cls,
        primary: URL,
        replicas: tuple[URL, ...],
        admin: URL,
        replica_admins: tuple[URL, ...],
        base: Settings,
    ) -> Servers:
        engine = create_engine(admin, pool_size=1)
        try:
            with engine.connect() as conn:
                version = str(conn.execute(text("SELECT VERSION()")).scalar_one())
        finally:
            engine.dispose()
        return cls(detect_flavor(version), version, primary, replicas, admin, replica_admins, base)

    def settings(self) -> Settings:
        """``base`` pointed at these servers (service and admin accounts, no database)."""
        return dataclasses.replace(
            self.base,
            database=dataclasses.replace(
                self.base.database, connection=self.primary, slave_connections=self.replicas
            ),
            testbed=dataclasses.replace(
                self.base.testbed,
                admin_connection=self.admin,
                replica_admin_connections=self.replica_admins,
            ),
        )

    def admin_engine(self) -> Engine:
        return create_engine(self.admin, pool_size=1, max_overflow=2, pool_pre_ping=True)

    def replica_admin_engines(self) -> list[Engine]:
        return [
            create_engine(url, pool_size=1, max_overflow=2, pool_pre_ping=True)
            for url in self.replica_admins
        ]


def bare_connection(
    url: URL, database: str | None = None, **options: Any
) -> pymysql.connections.Connection[Any]:
    """A plain PyMySQL connection: no SQLAlchemy, no listeners, no tag."""
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "",
        password=url.password or "",
        database=database,
        **{**tls_connect_args(url), **options},
    )


def bench_schema(conn: Connection) -> None:
    """The nova tables and ``bench_rows`` (the replication-wait and write-load benchmarks')."""
    # as `offload db sync --extra-indexes`: offload measured with its extras
    attach.sync(conn, extra_indexes=True)
    conn.exec_driver_sql(
        "CREATE TABLE bench_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
        "payload VARCHAR(64) NOT NULL, created_at DATETIME(6) NOT NULL)"
    )


class Scratch:
    """A database of one benchmark's own, on the primary and (by replication) the replicas."""

    def __init__(self, servers: Servers, label: str) -> None:
        self.servers = servers
        self._janitor = DatabaseJanitor(
            servers.settings(), prefix=f"offload_bench_{label}_", schema=bench_schema, timeout=600
        )
        self.name = self._janitor.name

    def create(self) -> None:
        """CREATE DATABASE, grants for the service accounts, the schema; replicated."""
        self._janitor.init()

    def url(self) -> URL:
        return with_database(self.servers.primary, self.name)

    def replica_urls(self) -> tuple[URL, ...]:
        return tuple(with_database(u, self.name) for u in self.servers.replicas)

    def settings(
        self,
        *,
        with_replica: bool = True,
        host: str = "compute-1",
        compute: ComputeSettings | None = None,
        replica: ReplicaSettings | None = None,
    ) -> Settings:
        base = self.servers.base
        return dataclasses.replace(
            base,
            host=host,
            source=None,
            database=dataclasses.replace(
                base.database,
                connection=self.url(),
                slave_connections=self.replica_urls() if with_replica else (),
            ),
            replica=replica or base.replica,
            compute=compute or bench_compute_options(),
            service=ServiceSettings(),  # notifications in memory, never the testbed's file
        )

    def database(self, **options: Any) -> Database:
        """A new Database on this scratch schema (the caller disposes it)."""
        return Database(self.settings(**options))

    def seed(self, instances: int, hosts: int) -> SeedSummary:
        """The seed data set on the primary, applied on every replica when this returns."""
        with self.database() as db:
            summary = seed(db, instances=instances, hosts=hosts)
            db.wait_for_replicas(timeout=600)
        return summary

    def wait_for_replicas(self) -> float:
        with self.database() as db:
            return db.wait_for_replicas(timeout=600)

    def drop(self) -> None:
        """DROP DATABASE, and the grants made for it (an existing testbed keeps no trace)."""
        self._janitor.drop()

    def __enter__(self) -> Scratch:
        self.create()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.drop()


@dataclass(frozen=True, slots=True)
class StatementEvent:
    """One tagged statement as a server recorded it."""

    task: str
    route: str
    run: str
    verb: str
    #: rows the server read to run it (performance_schema ROWS_EXAMINED)
    rows_examined: int = 0

    @property
    def is_select(self) -> bool:
        return self.verb == "SELECT"

    @property
    def is_data_read(self) -> bool:
        """A SELECT that reads data (not the GTID lookup after a commit, route ``causal``)."""
        return self.is_select and self.route in ("replica", "primary")


class TaggedStatements:
    """New tagged statements of one schema in a server's statement history."""

    def __init__(self, engine: Engine, schema_name: str) -> None:
        self.engine = engine
        self.schema = schema_name
        self._last: dict[int, int] = {}  # THREAD_ID -> newest EVENT_ID counted

    def poll(self) -> list[StatementEvent]:
        """Statements recorded since the last poll (the first poll returns the whole history)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                _HISTORY, {"schema": self.schema, "pattern": "%/* offload task=%"}
            ).all()
        fresh: list[StatementEvent] = []
        newest = dict(self._last)
        for thread, event, examined, sql in rows:
            if event <= self._last.get(thread, -1):
                continue
            newest[thread] = max(newest.get(thread, -1), int(event))
            match = _TAG.search(str(sql))
            if match is None:
                continue
            fresh.append(
                StatementEvent(
                    match["task"],
                    match["route"],
                    match["run"],
                    statement_verb(str(sql)),
                    int(examined or 0),
                )
            )
        self._last = newest
        return fresh

    def skip(self) -> None:
        """Mark everything recorded so far as seen."""
        self.poll()


def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib() -> int | None:
    """The process's resident set size now (KiB)."""
    return _status_kib("VmRSS")


def peak_rss_kib() -> int | None:
    """The process's peak resident set size since the last :func:`reset_peak_rss` (KiB)."""
    peak = _status_kib("VmHWM")
    if peak is None:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak


def reset_peak_rss() -> bool:
    """Restart the peak RSS at the current RSS (Linux ``clear_refs`` 5); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


@dataclass(slots=True)
class BenchContext:
    """What every benchmark gets: the servers, the mode, progress, a shared seeded schema."""

    servers: Servers
    full: bool
    progress: Progress
    #: instances and hosts of the shared data set (about 500 instances per host)
    shared_instances: int
    shared_hosts: int
    #: the native testbed's directory when the bench may put a link in its path (else None)
    testbed_dir: Path | None = None
    _shared: Scratch | None = None
    _shared_seed: SeedSummary | None = None
    _scratches: list[Scratch] = dataclasses.field(default_factory=list)

    @property
    def mode(self) -> str:
        return "full" if self.full else "quick"

    def scratch(self, label: str) -> Scratch:
        """A new scratch database (schema created); dropped by :meth:`close`."""
        scratch = Scratch(self.servers, label)
        self._scratches.append(scratch)
        scratch.create()
        return scratch

    def shared(self) -> tuple[Scratch, SeedSummary]:
        """The seeded data set the offload, routing and write-load benchmarks share."""
        if self._shared is None or self._shared_seed is None:
            scratch = self.scratch("shared")
            started = time.monotonic()
            summary = scratch.seed(self.shared_instances, self.shared_hosts)
            self.progress(
                f"seeded {summary.instances:,} instances over "
                f"{len(summary.hosts)} hosts, replicated, in "
                f"{time.monotonic() - started:.1f} s"
            )
            self._shared, self._shared_seed = scratch, summary
        return self._shared, self._shared_seed

    def close(self) -> None:
        while self._scratches:
            self._scratches.pop().drop()
