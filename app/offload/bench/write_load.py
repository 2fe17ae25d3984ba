"""Benchmark 5 — the service under write load.

The scheduler runs every periodic task of compute-1 at a short interval
(``offload.periodic.Scheduler`` over ``ComputeManager.periodic_tasks()``, as
``offload serve`` does), while a writer thread commits one-row INSERTs on the
primary at a fixed rate through a bare PyMySQL connection (untagged, so not
counted as task statements).  Windows alternate between two configurations of
the same compute host — ``replica`` (``slave_connection`` set) and ``primary``
(none) — in ABBA order; the writer never stops.

Measured per window, second by second: the tasks' statements that arrived on
the primary and on the replica (performance_schema, tagged, polled every
second), the writer's achieved rate and commit latency, and the replica's
heartbeat lag from ``db.guard.readings()`` sampled every 100 ms (the guard of
the ``replica`` configuration runs its heartbeat through all windows).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from offload.bench.env import (
    BenchContext,
    StatementEvent,
    TaggedStatements,
    bare_connection,
    bench_compute_options,
)
from offload.bench.report import BenchResult, Check, Table, fmt, fmt_ratio
from offload.bench.stats import ratio, rotation, summarize
from offload.compute.host import build_manager
from offload.compute.manager import ComputeManager
from offload.db import Database
from offload.periodic import Scheduler
from offload.routes import Route
from offload.service import StatementCounter

__all__ = ["CONFIGS", "Params", "run"]

CONFIGS = ("replica", "primary")
_HOST = "compute-1"


@dataclass(frozen=True, slots=True)
class Params:
    windows: int  # per configuration
    window_seconds: float
    writes_per_second: float
    spacing: int  # every task's interval, seconds


QUICK = Params(windows=2, window_seconds=10.0, writes_per_second=100.0, spacing=2)
FULL = Params(windows=4, window_seconds=30.0, writes_per_second=100.0, spacing=2)


class _CountWarnings(logging.Handler):
    """Counts the scheduler's overrun warnings instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


class _Writer(threading.Thread):
    """One-row commits on the primary at a fixed rate; late ticks are dropped, not bunched."""

    def __init__(self, ctx: BenchContext, database: str, rate: float) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.connection = bare_connection(ctx.servers.primary, database, autocommit=False)
        self.interval = 1.0 / rate
        self.stop = threading.Event()
        self.commits: list[tuple[float, float]] = []  # (monotonic end, seconds)
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with self.connection.cursor() as cursor:
                due = time.monotonic()
                while not self.stop.is_set():
                    started = time.monotonic()
                    cursor.execute(
                        "INSERT INTO bench_rows (payload, created_at) VALUES ('load', NOW(6))"
                    )
                    self.connection.commit()
                    ended = time.monotonic()
                    self.commits.append((ended, ended - started))
                    due += self.interval
                    due = max(due, ended)
                    self.stop.wait(due - ended)
        except Exception as exc:  # noqa: BLE001 - re-raised by the benchmark, not lost
            self.error = exc
        finally:
            self.connection.close()


class _LagSampler(threading.Thread):
    def __init__(self, db: Database) -> None:
        super().__init__(name="bench-lag", daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.samples: list[tuple[float, float | None]] = []  # (monotonic, lag seconds)

    def run(self) -> None:
        while not self.stop.wait(0.1):
            reading = self.db.guard.readings().get("replica0")
            self.samples.append((time.monotonic(), None if reading is None else reading.lag))


class _Poller(threading.Thread):
    """Polls the tagged statement history every second during a window."""

    def __init__(self, primary: TaggedStatements, replica: TaggedStatements) -> None:
        super().__init__(name="bench-poll", daemon=True)
        self.primary, self.replica = primary, replica
        self.stop = threading.Event()
        self.intervals: list[tuple[float, list[StatementEvent], list[StatementEvent]]] = []
        self._last = time.monotonic()

    def poll(self) -> None:
        primary, replica = self.primary.poll(), self.replica.poll()
        now = time.monotonic()
        self.intervals.append((now - self._last, primary, replica))
        self._last = now

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.poll()


@dataclass(slots=True)
class _Window:
    config: str
    start: float
    end: float
    runs: int
    failures: int
    overruns: int
    #: per poll interval: (seconds, primary task statements, primary task SELECTs)
    per_second: list[tuple[float, int, int]]
    primary: Counter[str]
    replica_selects: int
    client_primary: int


def _classify(events: list[StatementEvent]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for event in events:
        if event.is_select and event.route == Route.CAUSAL:
            counts["gtid"] += 1
        elif event.is_select:
            counts["data"] += 1
        else:
            counts["writes"] += 1
    return counts


def _window(
    config: str,
    manager: ComputeManager,
    params: Params,
    on_primary: TaggedStatements,
    on_replica: TaggedStatements,
    counter: StatementCounter,
) -> _Window:
    warnings = _CountWarnings()
    logger = logging.getLogger(f"offload.bench.scheduler.{config}")
    logger.propagate = False
    logger.handlers = [warnings]
    scheduler = Scheduler(manager.periodic_tasks(), jitter=0.1, logger=logger)
    stop = threading.Event()
    on_primary.skip()
    on_replica.skip()
    client_before = _client_primary(counter)
    poller = _Poller(on_primary, on_replica)
    thread = threading.Thread(
        target=scheduler.run_forever, args=(stop,), name=f"bench-scheduler-{config}", daemon=True
    )
    start = time.monotonic()
    poller.start()
    thread.start()
    time.sleep(params.window_seconds)
    stop.set()
    thread.join()
    end = time.monotonic()
    poller.stop.set()
    poller.join()
    poller.poll()  # the statements of the run that finished after stop
    primary = Counter[str]()
    replica_selects = 0
    per_second: list[tuple[float, int, int]] = []
    for seconds, on_p, on_r in poller.intervals:
        counts = _classify(on_p)
        primary.update(counts)
        replica_selects += sum(1 for e in on_r if e.is_select)
        per_second.append((seconds, sum(counts.values()), counts["data"] + counts["gtid"]))
    stats = scheduler.stats.values()
    return _Window(
        config,
        start,
        end,
        sum(s.runs for s in stats),
        sum(s.failures for s in stats),
        warnings.count,
        per_second,
        primary,
        replica_selects,
        _client_primary(counter) - client_before,
    )


def _client_primary(counter: StatementCounter) -> int:
    return sum(
        n
        for (task, _, target, _), n in counter.snapshot().items()
        if target == "primary" and task not in ("-", "init_host")
    )


def run(ctx: BenchContext) -> BenchResult:
    params = FULL if ctx.full else QUICK
    scratch, data = ctx.shared()
    started = time.monotonic()
    options = bench_compute_options(spacing=params.spacing)
    databases = {
        "replica": Database(scratch.settings(host=_HOST, compute=options)),
        "primary": Database(scratch.settings(host=_HOST, compute=options, with_replica=False)),
    }
    counter = StatementCounter()
    for db in databases.values():
        db.tracer.add_sink(counter)
    first = build_manager(scratch.settings(host=_HOST, compute=options), databases["replica"])
    managers = {
        name: ComputeManager(dataclasses.replace(first.compute, db=db))
        for name, db in databases.items()
    }
    admin = ctx.servers.admin_engine()
    replica_admin = ctx.servers.replica_admin_engines()[0]
    on_primary = TaggedStatements(admin, scratch.name)
    on_replica = TaggedStatements(replica_admin, scratch.name)
    writer = _Writer(ctx, scratch.name, params.writes_per_second)
    lag = _LagSampler(databases["replica"])
    windows: list[_Window] = []
    order = [name for index in range(params.windows) for name in rotation(list(CONFIGS), index)]
    ctx.progress(
        f"write load: {len(order)} windows of {params.window_seconds:.0f} s "
        f"({' '.join(order)}), tasks every {params.spacing} s, writer at "
        f"{params.writes_per_second:.0f} commits/s"
    )
    try:
        first.init_host()
        databases["replica"].guard  # noqa: B018 - heartbeat on from the start, as the service
        writer.start()
        lag.start()
        time.sleep(1.0)  # the writer reaches its rate
        for name in order:
            windows.append(_window(name, managers[name], params, on_primary, on_replica, counter))
            if writer.error is not None:
                raise writer.error
    finally:
        writer.stop.set()
        lag.stop.set()
        if writer.is_alive():
            writer.join()
        if lag.is_alive():
            lag.join()
        for db in databases.values():
            db.dispose()
        admin.dispose()
        replica_admin.dispose()
    return _result(params, windows, writer, lag, data.instances, time.monotonic() - started)


def _within(moment: float, windows: list[_Window]) -> bool:
    return any(w.start <= moment <= w.end for w in windows)


def _result(
    params: Params,
    windows: list[_Window],
    writer: _Writer,
    lag: _LagSampler,
    instances: int,
    seconds: float,
) -> BenchResult:
    rows: list[list[str]] = []
    load_rows: list[list[str]] = []
    data: dict[str, dict[str, Any]] = {}
    for name in CONFIGS:
        mine = [w for w in windows if w.config == name]
        duration = sum(w.end - w.start for w in mine)
        totals: Counter[str] = Counter()
        for w in mine:
            totals.update(w.primary)
        rates = [n / s for w in mine for s, n, _ in w.per_second if s > 0]
        select_rates = [n / s for w in mine for s, _, n in w.per_second if s > 0]
        lags = [
            value * 1000
            for moment, value in lag.samples
            if value is not None and _within(moment, mine)
        ]
        unknown = sum(1 for moment, value in lag.samples if value is None and _within(moment, mine))
        commits = [c for c in writer.commits if _within(c[0], mine)]
        commit_ms = summarize([c[1] for c in commits]).scaled(1000) if commits else None
        statements = sum(totals.values())
        lag_summary = summarize(lags) if lags else None
        runs = sum(w.runs for w in mine)
        rows.append(
            [
                name,
                f"{duration:.1f}",
                str(runs),
                str(len(rates)),
                fmt(statements / duration, 1),
                fmt(summarize(rates).median, 1),
                fmt(summarize(rates).p99, 1),
                fmt((totals["data"] + totals["gtid"]) / duration, 1),
                fmt(totals["writes"] / duration, 1),
                fmt(sum(w.replica_selects for w in mine) / duration, 1),
            ]
        )
        above = sum(1 for value in lags if value > 0)
        load_rows.append(
            [
                name,
                fmt(len(commits) / duration, 1),
                fmt(commit_ms.median if commit_ms else None, 2),
                fmt(commit_ms.p99 if commit_ms else None, 2),
                str(len(lags)),
                fmt(lag_summary.median if lag_summary else None, 1),
                fmt(lag_summary.p99 if lag_summary else None, 1),
                fmt(lag_summary.max if lag_summary else None, 1),
                str(above),
                str(unknown),
            ]
        )
        data[name] = {
            "seconds": round(duration, 2),
            "task_runs": runs,
            "failures": sum(w.failures for w in mine),
            "overruns": sum(w.overruns for w in mine),
            "primary_task_statements": statements,
            "primary_task_statements_per_s": statements / duration,
            "primary_task_statements_per_s_by_second": summarize(rates).as_dict(2),
            "primary_task_selects_per_s_by_second": summarize(select_rates).as_dict(2),
            "primary_data_selects": totals["data"],
            "primary_gtid_selects": totals["gtid"],
            "primary_writes": totals["writes"],
            "replica_task_selects": sum(w.replica_selects for w in mine),
            "client_trace_primary": sum(w.client_primary for w in mine),
            "writer_commits_per_s": len(commits) / duration,
            "writer_commit_ms": commit_ms.as_dict(3) if commit_ms else None,
            "replica_lag_ms": lag_summary.as_dict(2) if lag_summary else None,
            "lag_readings_unknown": unknown,
        }
    a, b = data["replica"], data["primary"]
    statement_ratio = ratio(a["primary_task_statements_per_s"], b["primary_task_statements_per_s"])
    select_ratio = ratio(
        (a["primary_data_selects"] + a["primary_gtid_selects"]) / a["seconds"],
        (b["primary_data_selects"] + b["primary_gtid_selects"]) / b["seconds"],
    )
    ratios = {"primary_statements_per_s": statement_ratio, "primary_selects_per_s": select_ratio}
    agree = all(w.client_primary == sum(w.primary.values()) for w in windows)
    summary = (
        f"{instances:,} instances; tasks of {_HOST} every {params.spacing} s; writer at "
        f"{params.writes_per_second:.0f} one-row commits/s throughout; "
        f"{params.windows} windows of {params.window_seconds:.0f} s per configuration, "
        f"ABBA order.  Task statements counted by the primary's performance_schema "
        f"(client trace {'agrees' if agree else 'DISAGREES'}); lag sampled every 100 ms "
        f"from db.guard.readings().  replica/primary: task statements/s on the primary "
        f"{fmt_ratio(statement_ratio)}, task SELECTs/s {fmt_ratio(select_ratio)}."
    )
    lag_p99 = a["replica_lag_ms"]["p99"] if a["replica_lag_ms"] else None
    return BenchResult(
        key="write-load",
        title="5. Service under write load",
        summary=summary,
        tables=[
            Table(
                "Task statements arriving on the servers (per second of window time)",
                [
                    "config",
                    "window s",
                    "task runs",
                    "seconds sampled",
                    "primary task stmts/s",
                    "per-second p50",
                    "per-second p99",
                    "primary task SELECTs/s",
                    "primary task writes/s",
                    "replica task SELECTs/s",
                ],
                rows,
                note="primary task SELECTs include the GTID lookups of causal reads.",
            ),
            Table(
                "The writer and the replica's heartbeat lag during each configuration",
                [
                    "config",
                    "writer commits/s",
                    "commit p50 ms",
                    "commit p99 ms",
                    "lag samples",
                    "lag p50 ms",
                    "lag p99 ms",
                    "lag max ms",
                    "samples > 0",
                    "unknown",
                ],
                load_rows,
                note="lag: replica0's heartbeat lag by db.guard.readings() every 100 ms; "
                "0 means the newest heartbeat (written every 100 ms) was applied.",
            ),
        ],
        checks=[
            Check(
                "write-load",
                "replica lag p99 under load (replica config), ms",
                fmt(lag_p99, 1),
                None,
            ),
            Check(
                "write-load",
                "primary task statements/s, replica / primary",
                fmt_ratio(statement_ratio),
                None,
            ),
        ],
        data={**data, "ratios_replica_vs_primary": ratios, "params": dataclasses.asdict(params)},
        seconds=seconds,
    )
