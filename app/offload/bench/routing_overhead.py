"""Benchmark 2 — routing overhead: what the routing layer costs per query.

The same two ORM queries on the replica, each sample a whole session (open,
query, fetch, close), through three paths, interleaved round by round in
rotating order:

* ``bare``    — a plain SQLAlchemy ``Session`` on a plain engine (no pre-ping);
* ``plain``   — the same on an engine with offload's engine options (pool sizes,
  ``pool_pre_ping``, ``sql_mode`` init command) but none of its listeners: the
  baseline (a) of the issue;
* ``offload`` — ``db.reader(allow_replica=True)`` inside a task scope: the
  staleness guard's replica choice (a lag probe whenever the cached reading is
  older than one heartbeat interval, the heartbeat writer running), the
  route fixed on the connection, the write guard, the statement tag and a
  ``StatementRecord`` to a counting sink (as the service runs it): (b).

Queries: a primary-key lookup of one instance (small), and the instance list
of one host, about 500 rows (task-sized, as a periodic task reads it).
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from offload.bench.env import BenchContext, Scratch
from offload.bench.report import BenchResult, Check, Table, fmt, fmt_ratio
from offload.bench.stats import median, ratio, rotation, summarize
from offload.config import Settings
from offload.db import Database
from offload.schema import Instance
from offload.service import StatementCounter
from offload.tracing import task_scope

__all__ = ["PATHS", "Params", "run"]

PATHS = ("bare", "plain", "offload")
_HOST = "compute-1"
TASK_TARGET = 1.10


@dataclass(frozen=True, slots=True)
class Params:
    small_rounds: int
    task_rounds: int
    warmup: int = 30


QUICK = Params(small_rounds=1500, task_rounds=150)
FULL = Params(small_rounds=6000, task_rounds=400)

SessionFactory = Callable[[], AbstractContextManager[Session]]


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


def _small(session: Session, key: int) -> object:
    return session.execute(select(Instance).where(Instance.id == key)).scalar_one()


def _task_sized(session: Session, key: int) -> list[Instance]:
    rows = session.scalars(
        select(Instance).where(Instance.host == _HOST, Instance.deleted == 0)
    ).all()
    if not rows:
        raise RuntimeError(f"no instances on {_HOST}: the data set is missing")
    return list(rows)


Query = Callable[[Session, int], object]


def _measure(
    factories: dict[str, SessionFactory], query: Query, keys: list[int], rounds: int, warmup: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in factories}
    gc.collect()  # start clean: no series inherits another's garbage
    for index in range(warmup + rounds):
        key = keys[index % len(keys)]
        for name in rotation(list(factories), index):
            started = time.perf_counter_ns()
            with factories[name]() as session:
                query(session, key)
            elapsed = (time.perf_counter_ns() - started) / 1e9
            if index >= warmup:
                samples[name].append(elapsed)
    return samples


def _rows(label: str, samples: dict[str, list[float]]) -> tuple[list[list[str]], dict[str, Any]]:
    plain = summarize(samples["plain"]).scaled(1e6)
    rows, data = [], {}
    for name in PATHS:
        summary = summarize(samples[name]).scaled(1e6)
        paired = median([b / a for b, a in zip(samples[name], samples["plain"], strict=True)])
        by_median = ratio(summary.median, plain.median)
        rows.append(
            [
                f"{label}: {name}",
                str(summary.n),
                fmt(summary.median, 0),
                fmt(summary.p99, 0),
                fmt_ratio(by_median),
                fmt_ratio(ratio(summary.p99, plain.p99)),
                fmt_ratio(paired),
                fmt(summary.median - plain.median, 0),
            ]
        )
        data[name] = {
            "us": summary.as_dict(1),
            "ratio_median_vs_plain": by_median,
            "ratio_p99_vs_plain": ratio(summary.p99, plain.p99),
            "paired_ratio_median": paired,
            "overhead_us_median": round(summary.median - plain.median, 1),
        }
    return rows, data


def _keys(db: Database, count: int) -> list[int]:
    with db.reader() as session:
        ids = list(session.scalars(select(Instance.id).where(Instance.deleted == 0)))
    chooser = random.Random(7)
    return [chooser.choice(ids) for _ in range(count)]


def _offload_factory(db: Database) -> SessionFactory:
    @contextmanager
    def factory() -> Iterator[Session]:
        with db.reader(allow_replica=True) as session:
            yield session

    return factory


def _plain_factory(engine: Engine) -> SessionFactory:
    @contextmanager
    def factory() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    return factory


def run(ctx: BenchContext) -> BenchResult:
    params = FULL if ctx.full else QUICK
    scratch: Scratch
    scratch, data = ctx.shared()
    started = time.monotonic()
    settings = scratch.settings(host=_HOST)
    db = Database(settings)
    counter = StatementCounter()
    db.tracer.add_sink(counter)
    bare, plain = _plain_engine(settings, pre_ping=False), _plain_engine(settings, pre_ping=True)
    try:
        keys = _keys(db, params.small_rounds + params.warmup)
        with db.reader() as session:
            task_rows = len(_task_sized(session, 0))
        factories = {
            "bare": _plain_factory(bare),
            "plain": _plain_factory(plain),
            "offload": _offload_factory(db),
        }
        ctx.progress(
            f"routing: {params.small_rounds} rounds of the small query, "
            f"{params.task_rounds} of the task-sized one, three paths interleaved"
        )
        with task_scope("bench_routing"):
            small = _measure(factories, _small, keys, params.small_rounds, params.warmup)
            task = _measure(
                factories, _task_sized, keys, params.task_rounds, max(3, params.warmup // 10)
            )
        routed = sum(
            n
            for (_, route, target, _), n in counter.snapshot().items()
            if route == "replica" and target != "primary"
        )
        fallbacks = sum(db.routing.fallbacks.values())
    finally:
        db.dispose()
        bare.dispose()
        plain.dispose()
    small_rows, small_data = _rows("small", small)
    task_rows_table, task_data = _rows("task-sized", task)
    task_ratio = task_data["offload"]["ratio_median_vs_plain"]
    small_overhead = small_data["offload"]["overhead_us_median"]
    task_overhead = task_data["offload"]["overhead_us_median"]
    summary = (
        f"Replica reads of the {data.instances:,}-instance data set; small = one "
        f"instance by primary key, task-sized = the {task_rows} live instances of "
        f"{_HOST} as ORM objects.  Each sample is a whole session; paths interleaved "
        f"in rotating order.  The offload path's statements: {routed} on the replica, "
        f"{fallbacks} fell back to the primary."
    )
    return BenchResult(
        key="routing",
        title="2. Routing overhead: db.reader(allow_replica=True) vs a plain Session",
        summary=summary,
        tables=[
            Table(
                "Per session (microseconds); ratios vs 'plain' (same engine options, "
                "no offload listeners)",
                [
                    "query: path",
                    "n",
                    "median µs",
                    "p99 µs",
                    "ratio (median)",
                    "ratio (p99)",
                    "paired ratio",
                    "overhead µs",
                ],
                small_rows + task_rows_table,
                note="paired ratio: median of each round's offload/plain; bare = no pool_pre_ping.",
            )
        ],
        checks=[
            Check(
                "routing",
                f"task-sized query: offload/plain ≤ {TASK_TARGET:.2f}",
                fmt_ratio(task_ratio),
                None if task_ratio is None else task_ratio <= TASK_TARGET,
            ),
            Check(
                "routing",
                "per-statement overhead (small query), µs",
                fmt(small_overhead, 0, " µs") + f" (task-sized: {fmt(task_overhead, 0)} µs)",
                None,
            ),
        ],
        data={
            "task_rows": task_rows,
            "small": small_data,
            "task_sized": task_data,
            "statements_on_replica": routed,
            "fallbacks": fallbacks,
        },
        seconds=time.monotonic() - started,
    )
