"""Benchmark 2 — routing overhead: what the routing layer costs, next to oslo.db.

The same ORM work on the replica, each sample a whole session (open, query,
fetch, close), through these paths, interleaved round by round in rotating
order (one process, one run: ratios are paired, absolute times depend on how
busy the machine is):

* ``raw``     — a long-lived PyMySQL connection, the compiled SQL, rows as tuples: the floor;
* ``plain``   — a plain SQLAlchemy ``Session`` on an engine with offload's engine options
  (pool sizes, ``pool_pre_ping``, ``sql_mode``) but none of its listeners: the baseline;
* ``offload`` — ``db.reader(allow_replica=True)`` inside a task scope, as the service runs it
  (the staleness guard's lookup, the route, the write guard, the tag, a ``StatementRecord``
  to a counting sink);
* ``offload (lag due)`` — the same with every cached lag reading one heartbeat interval
  old before each sample (the refresher late: what the first read of a run used to pay
  for an inline lag check; now the guard decides on the reading's bound and wakes the
  refresher);
* ``oslo.db`` — oslo.db's enginefacade ``reader.async_`` on ``slave_connection`` (Nova's
  replica reads), its defaults (``thread_checkin=True``);
* ``oslo.db (no checkin)`` — the same with ``thread_checkin=False``.

oslo.db is a peer here, never a dependency of the library: ``make bench`` installs the
``bench`` extra; without it the oslo.db rows are left out and say so.

Workloads: a primary-key lookup of one instance (small x1), ten of them in one
session (small x10), the instance list of one host as ORM objects, about 500
rows (task-sized x1) — each sample a whole session — and 200 primary-key lookups
in one session, the per-statement cost inside a session: there every path's
session is open at once and their statements alternate one by one in rotating
order, each statement a paired sample (a 200-statement session takes ~0.1 s,
long enough for a busy machine to drift between whole-session samples).
"""

from __future__ import annotations

import functools
import gc
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Session

from offload.bench.env import BenchContext, Scratch, bare_connection
from offload.bench.report import BenchResult, Check, Table, fmt, fmt_ratio
from offload.bench.stats import median, ratio, summarize
from offload.config import Settings
from offload.db import Database
from offload.schema import Instance
from offload.service import StatementCounter
from offload.tracing import task_scope

__all__ = [
    "PATHS",
    "WORKLOADS",
    "Params",
    "PathSpec",
    "Workload",
    "instance_keys",
    "measure",
    "offload_path",
    "paired_ratio",
    "run",
]

RAW, PLAIN, OFFLOAD, OFFLOAD_DUE = "raw", "plain", "offload", "offload (lag due)"
OSLO, OSLO_NO_CHECKIN = "oslo.db", "oslo.db (no checkin)"
PATHS = (RAW, PLAIN, OFFLOAD, OFFLOAD_DUE, OSLO, OSLO_NO_CHECKIN)
_HOST = "compute-1"
#: the issue's targets
SMALL_WARM_TARGET = 1.05
SMALL_DUE_TARGET = 1.10
TASK_TARGET = 1.03
PER_STATEMENT_TARGET_US = 10.0
LONG_SESSION = 200


@dataclass(frozen=True, slots=True)
class Params:
    small_rounds: int
    small10_rounds: int
    task_rounds: int
    long_rounds: int
    warmup: int = 30


QUICK = Params(small_rounds=1000, small10_rounds=300, task_rounds=100, long_rounds=30)
FULL = Params(small_rounds=4000, small10_rounds=1000, task_rounds=300, long_rounds=100)


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    label: str
    #: statements per session
    statements: int
    orm: Callable[[Session, int], object]
    raw: Callable[[Any, int], object]
    #: sampled statement by statement, the paths' sessions open side by side
    per_statement: bool = False


@dataclass(frozen=True, slots=True)
class PathSpec:
    """How one path opens what its statements run on: a Session, or a raw DBAPI cursor."""

    open: Callable[[], AbstractContextManager[Any]]
    raw: bool = False

    def session(self, workload: Workload, key: int) -> object:
        """One whole session of ``workload``."""
        with self.open() as handle:
            return (workload.raw if self.raw else workload.orm)(handle, key)

    def statement(self, handle: Any, key: int) -> object:
        """One small statement on an open handle (the per-statement workload)."""
        return (_small_raw if self.raw else _small)(handle, key)


def _plain_engine(settings: Settings, *, pre_ping: bool) -> Engine:
    """An engine with offload's engine options (``make_engine``'s) and no listener at all."""
    options = settings.database
    url = settings.database.slave_connections[0]
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    mode = options.mysql_sql_mode.strip().upper()
    if mode:
        connect_args["init_command"] = f"SET SESSION sql_mode = '{mode}'"
    return create_engine(
        url,
        pool_pre_ping=pre_ping,
        pool_size=options.max_pool_size,
        max_overflow=options.max_overflow,
        pool_timeout=options.pool_timeout,
        pool_recycle=options.connection_recycle_time,
        connect_args=connect_args,
    )


_SMALL = select(Instance).where(Instance.id == 0)
_TASK = select(Instance).where(Instance.host == _HOST, Instance.deleted == 0)


def _compiled(statement: Any) -> str:
    """The SQL text SQLAlchemy sends, with PyMySQL's %s placeholders (for the raw path)."""
    compiled = statement.compile(dialect=mysql.dialect())
    sql = str(compiled)
    return sql.replace("%(id_1)s", "%s").replace("%(host_1)s", "%s").replace("%(deleted_1)s", "%s")


_SMALL_SQL = _compiled(_SMALL)
_TASK_SQL = _compiled(_TASK)


def _small(session: Session, key: int) -> object:
    return session.execute(select(Instance).where(Instance.id == key)).scalar_one()


def _small_raw(cursor: Any, key: int) -> object:
    cursor.execute(_SMALL_SQL, (key,))
    return cursor.fetchone()


def _many(count: int) -> tuple[Callable[[Session, int], object], Callable[[Any, int], object]]:
    def orm(session: Session, key: int) -> object:
        for _ in range(count):
            _small(session, key)
        return None

    def raw(cursor: Any, key: int) -> object:
        for _ in range(count):
            _small_raw(cursor, key)
        return None

    return orm, raw


def _task_sized(session: Session, key: int) -> list[Instance]:
    rows = session.scalars(
        select(Instance).where(Instance.host == _HOST, Instance.deleted == 0)
    ).all()
    if not rows:
        raise RuntimeError(f"no instances on {_HOST}: the data set is missing")
    return list(rows)


def _task_raw(cursor: Any, key: int) -> object:
    cursor.execute(_TASK_SQL, (_HOST, 0))
    return cursor.fetchall()


class _Order:
    """The paths in a new random order each time (seeded: runs are repeatable).

    Not a rotation: rotating keeps the cyclic order, so each path would always run
    right after the same other one — and a path that follows one running the same
    code (``offload (lag due)`` after ``offload``) finds the CPU's caches warm, which
    made it look 15-20 µs per statement cheaper than an identical path.  Shuffled,
    every path follows every other equally often.
    """

    def __init__(self, paths: dict[str, PathSpec]) -> None:
        self._names = list(paths)
        self._rng = random.Random(20261130)

    def next(self) -> list[str]:
        return self._rng.sample(self._names, k=len(self._names))


def measure(
    paths: dict[str, PathSpec], workload: Workload, keys: list[int], rounds: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall time and this thread's CPU time of each sample (a session, or a statement)."""
    if workload.per_statement:
        return _measure_statements(paths, workload, keys, rounds, warmup)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    order = _Order(paths)
    gc.collect()  # start clean: no series inherits another's garbage
    for index in range(warmup + rounds):
        key = keys[index % len(keys)]
        for name in order.next():
            started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
            paths[name].session(workload, key)
            elapsed = (time.perf_counter_ns() - started) / 1e9
            cpu_elapsed = (time.thread_time_ns() - cpu_started) / 1e9
            if index >= warmup:
                samples[name].append(elapsed)
                cpu[name].append(cpu_elapsed)
    return samples, cpu


def _measure_statements(
    paths: dict[str, PathSpec], workload: Workload, keys: list[int], rounds: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each statement of a ``workload.statements``-long session, the paths side by side.

    Per round every path opens its session (shuffled order), then statement i of
    every session runs in turn (shuffled order), each timed alone; the sessions
    close at the end of the round.  Warm-up rounds are not kept.
    """
    samples: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    order = _Order(paths)
    gc.collect()
    for index in range(warmup + rounds):
        with ExitStack() as stack:
            handles = {name: stack.enter_context(paths[name].open()) for name in order.next()}
            for position in range(workload.statements):
                key = keys[(index * workload.statements + position) % len(keys)]
                for name in order.next():
                    started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
                    paths[name].statement(handles[name], key)
                    elapsed = (time.perf_counter_ns() - started) / 1e9
                    cpu_elapsed = (time.thread_time_ns() - cpu_started) / 1e9
                    if index >= warmup:
                        samples[name].append(elapsed)
                        cpu[name].append(cpu_elapsed)
    return samples, cpu


def _cpu_per_statement(cpu: dict[str, list[float]], name: str, statements: int) -> float | None:
    """Median of the rounds' (path - plain) CPU time of the calling thread, µs per statement.

    The thread's own CPU time is what the client does per statement; unlike wall
    time it does not include waiting for a busy machine's other processes.
    """
    if name not in cpu or PLAIN not in cpu:
        return None
    differences = [b - a for b, a in zip(cpu[name], cpu[PLAIN], strict=True)]
    return median(differences) * 1e6 / statements


def paired_ratio(samples: dict[str, list[float]], name: str, base: str) -> float | None:
    if base not in samples or name not in samples:
        return None
    return median([b / a for b, a in zip(samples[name], samples[base], strict=True)])


def _rows(
    workload: Workload, samples: dict[str, list[float]], cpu: dict[str, list[float]]
) -> tuple[list[list[str]], dict[str, Any]]:
    plain = summarize(samples[PLAIN]).scaled(1e6)
    oslo = OSLO_NO_CHECKIN if OSLO_NO_CHECKIN in samples else None
    rows, data = [], {}
    for name, series in samples.items():
        summary = summarize(series).scaled(1e6)
        vs_plain = paired_ratio(samples, name, PLAIN)
        vs_oslo = paired_ratio(samples, name, oslo) if oslo else None
        vs_oslo_default = paired_ratio(samples, name, OSLO) if OSLO in samples else None
        # paired: the median of each round's difference, per statement of the session
        per_sample = 1 if workload.per_statement else workload.statements
        per_statement = (
            median([b - a for b, a in zip(series, samples[PLAIN], strict=True)]) * 1e6 / per_sample
        )
        ahead = "-"
        if name.startswith(OFFLOAD) and vs_oslo is not None:
            ahead = "yes" if vs_oslo <= 1.0 else "no"
        rows.append(
            [
                f"{workload.label}: {name}",
                str(summary.n),
                fmt(summary.median, 0),
                fmt(summary.p99, 0),
                fmt_ratio(vs_plain),
                fmt_ratio(vs_oslo_default),
                fmt_ratio(vs_oslo),
                fmt(per_statement, 1),
                fmt(_cpu_per_statement(cpu, name, per_sample), 1),
                ahead,
            ]
        )
        data[name] = {
            "us": summary.as_dict(1),
            "paired_ratio_vs_plain": vs_plain,
            "paired_ratio_vs_oslo_db": vs_oslo_default,
            "paired_ratio_vs_oslo_db_no_checkin": vs_oslo,
            "ratio_median_vs_plain": ratio(summary.median, plain.median),
            "overhead_us_median": round(summary.median - plain.median, 1),
            "overhead_us_per_statement": round(per_statement, 2),
            "cpu_us_per_statement_vs_plain": _cpu_per_statement(cpu, name, per_sample),
        }
    return rows, data


def instance_keys(db: Database, count: int) -> list[int]:
    with db.reader() as session:
        ids = list(session.scalars(select(Instance.id).where(Instance.deleted == 0)))
    chooser = random.Random(7)
    return [chooser.choice(ids) for _ in range(count)]


def offload_path(db: Database, *, lag_due: bool) -> PathSpec:
    @contextmanager
    def open_reader() -> Iterator[Session]:
        if lag_due:
            db.guard.selector.make_due()
        with db.reader(allow_replica=True) as session:
            yield session

    return PathSpec(open_reader)


def _plain_path(engine: Engine) -> PathSpec:
    @contextmanager
    def open_session() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    return PathSpec(open_session)


def _raw_path(connection: Any) -> PathSpec:
    return PathSpec(connection.cursor, raw=True)


class _OsloContext:
    """A request context for oslo.db's enginefacade (it keeps its transaction state on it)."""


def _oslo_session(reader: Any) -> AbstractContextManager[Session]:
    """A session of oslo.db's ``reader`` on a request context of its own."""
    session: AbstractContextManager[Session] = reader.using(_OsloContext())
    return session


def oslo_db_version() -> str | None:
    """oslo.db's version when the ``bench`` extra is installed, else None."""
    try:
        return version("oslo.db")
    except PackageNotFoundError:
        return None


def _oslo_paths(settings: Settings) -> tuple[dict[str, PathSpec], list[Callable[[], None]]]:
    """oslo.db's async reader on slave_connection, with and without thread_checkin."""
    if oslo_db_version() is None:
        return {}, []
    # the bench extra: a peer, not a dependency
    from oslo_db.sqlalchemy import enginefacade  # noqa: PLC0415

    options = settings.database

    def url(value: Any) -> str:
        return str(value.render_as_string(hide_password=False))

    paths: dict[str, PathSpec] = {}
    closers: list[Callable[[], None]] = []
    for name, checkin in ((OSLO, True), (OSLO_NO_CHECKIN, False)):
        facade = enginefacade.transaction_context()
        facade.configure(
            connection=url(settings.require_connection()),
            slave_connection=url(options.slave_connections[0]),
            max_pool_size=options.max_pool_size,
            max_overflow=options.max_overflow,
            pool_timeout=options.pool_timeout,
            connection_recycle_time=options.connection_recycle_time,
            mysql_sql_mode=options.mysql_sql_mode or "TRADITIONAL",
            thread_checkin=checkin,
        )
        paths[name] = PathSpec(functools.partial(_oslo_session, facade.reader.async_))
        closers.append(facade.dispose_pool)
    return paths, closers


WORKLOADS = (
    Workload("small", "small x1", 1, _small, _small_raw),
    Workload("small10", "small x10", 10, *_many(10)),
    Workload("task_sized", "task-sized x1", 1, _task_sized, _task_raw),
    Workload(
        "long",
        f"{LONG_SESSION}-statement session",
        LONG_SESSION,
        *_many(LONG_SESSION),
        per_statement=True,
    ),
)


def _checks(data: dict[str, dict[str, Any]], oslo: bool) -> list[Check]:
    def paired(workload: str, path: str, key: str = "paired_ratio_vs_plain") -> float | None:
        value = data[workload].get(path, {}).get(key)
        return None if value is None else float(value)

    def within(value: float | None, bound: float) -> bool | None:
        return None if value is None else value <= bound

    warm, due = paired("small", OFFLOAD), paired("small", OFFLOAD_DUE)
    task = paired("task_sized", OFFLOAD)
    per_statement = data["long"][OFFLOAD]["overhead_us_per_statement"]
    cpu_per_statement = data["long"][OFFLOAD].get("cpu_us_per_statement_vs_plain")
    checks = [
        Check(
            "routing",
            f"small x1: offload/plain ≤ {SMALL_WARM_TARGET:.2f} (warm)",
            fmt_ratio(warm),
            within(warm, SMALL_WARM_TARGET),
        ),
        Check(
            "routing",
            f"small x1: offload/plain ≤ {SMALL_DUE_TARGET:.2f} (lag check due)",
            fmt_ratio(due),
            within(due, SMALL_DUE_TARGET),
        ),
        Check(
            "routing",
            f"task-sized x1: offload/plain ≤ {TASK_TARGET:.2f}",
            fmt_ratio(task),
            within(task, TASK_TARGET),
        ),
        Check(
            "routing",
            f"{LONG_SESSION}-statement session: offload - plain ≤ "
            f"{PER_STATEMENT_TARGET_US:.0f} µs per statement",
            fmt(per_statement, 1, " µs"),
            per_statement <= PER_STATEMENT_TARGET_US,
        ),
        Check(
            "routing",
            f"{LONG_SESSION}-statement session: offload - plain, this thread's CPU, "
            f"≤ {PER_STATEMENT_TARGET_US:.0f} µs per statement",
            fmt(cpu_per_statement, 1, " µs"),
            within(cpu_per_statement, PER_STATEMENT_TARGET_US),
        ),
    ]
    for workload in WORKLOADS:
        vs = paired(workload.key, OFFLOAD, "paired_ratio_vs_oslo_db_no_checkin")
        checks.append(
            Check(
                "routing",
                f"{workload.label}: offload ≤ oslo.db (thread_checkin=False)",
                fmt_ratio(vs) if oslo else "oslo.db not installed (pip install 'offload[bench]')",
                within(vs, 1.0) if oslo else False,
            )
        )
    return checks


def run(ctx: BenchContext) -> BenchResult:
    params = FULL if ctx.full else QUICK
    scratch: Scratch
    scratch, shared = ctx.shared()
    started = time.monotonic()
    settings = scratch.settings(host=_HOST)
    db = Database(settings)
    counter = StatementCounter()
    db.tracer.add_sink(counter)
    plain = _plain_engine(settings, pre_ping=True)
    replica_url = settings.database.slave_connections[0]
    raw = bare_connection(replica_url, replica_url.database, autocommit=True)
    oslo_paths, closers = _oslo_paths(settings)
    rounds = {
        "small": params.small_rounds,
        "small10": params.small10_rounds,
        "task_sized": params.task_rounds,
        "long": params.long_rounds,
    }
    samples: dict[str, dict[str, list[float]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}
    try:
        keys = instance_keys(db, max(rounds.values()) + params.warmup)
        with db.reader() as session:
            task_rows = len(_task_sized(session, 0))
        paths: dict[str, PathSpec] = {
            RAW: _raw_path(raw),
            PLAIN: _plain_path(plain),
            OFFLOAD: offload_path(db, lag_due=False),
            OFFLOAD_DUE: offload_path(db, lag_due=True),
            **oslo_paths,
        }
        ctx.progress(
            f"routing: {len(paths)} paths interleaved; rounds "
            + ", ".join(f"{w.label} {rounds[w.key]}" for w in WORKLOADS)
            + ("" if oslo_paths else " (oslo.db not installed: its rows are left out)")
        )
        with task_scope("bench_routing"):
            for workload in WORKLOADS:
                count = rounds[workload.key]
                warmup = max(3, min(params.warmup, count // 10))
                samples[workload.key], cpu[workload.key] = measure(
                    paths, workload, keys, count, warmup
                )
        routed = sum(
            n
            for (_, route, target, _), n in counter.snapshot().items()
            if route == "replica" and target != "primary"
        )
        fallbacks = sum(db.routing.fallbacks.values())
    finally:
        db.dispose()
        plain.dispose()
        raw.close()
        for close in closers:
            close()
    rows: list[list[str]] = []
    data: dict[str, dict[str, Any]] = {}
    for workload in WORKLOADS:
        workload_rows, data[workload.key] = _rows(
            workload, samples[workload.key], cpu[workload.key]
        )
        rows.extend(workload_rows)
    oslo_version = oslo_db_version()
    summary = (
        f"Replica reads of the {shared.instances:,}-instance data set; small = one "
        f"instance by primary key, task-sized = the {task_rows} live instances of "
        f"{_HOST} as ORM objects.  Each sample is a whole session; paths interleaved "
        f"in a shuffled order on a machine that may be busy: the paired ratios hold, absolute "
        f"times do not.  oslo.db {oslo_version or 'not installed'}.  The offload paths' "
        f"statements: {routed} on the replica, {fallbacks} fell back to the primary."
    )
    return BenchResult(
        key="routing",
        title="2. Routing overhead: offload vs a plain Session, raw PyMySQL and oslo.db",
        summary=summary,
        tables=[
            Table(
                "Per session (microseconds); ratios are medians of per-round ratios",
                [
                    "workload: path",
                    "n",
                    "median µs",
                    "p99 µs",
                    "x plain",
                    "x oslo.db",
                    "x oslo.db no checkin",
                    "µs/stmt vs plain",
                    "CPU µs/stmt",
                    "offload ahead",
                ],
                rows,
                note=(
                    f"the {LONG_SESSION}-statement rows are per statement (n statements, "
                    "each a paired sample); plain = Session on an engine with offload's "
                    "options (pre-ping on), no listeners; "
                    "oslo.db = enginefacade reader.async_ on slave_connection; no checkin = "
                    "thread_checkin=False; µs/stmt = median of the rounds' (path - plain) "
                    "/ statements; CPU = the same for the measuring thread's CPU time; "
                    "offload ahead = paired ratio vs oslo.db (thread_checkin=False) ≤ 1."
                ),
            )
        ],
        checks=_checks(data, bool(oslo_paths)),
        data={
            "task_rows": task_rows,
            "oslo_db": oslo_version,
            **data,
            "statements_on_replica": routed,
            "fallbacks": fallbacks,
        },
        seconds=time.monotonic() - started,
    )
