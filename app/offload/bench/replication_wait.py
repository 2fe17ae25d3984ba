"""Benchmark 3 — replication wait vs its floor.

A one-row INSERT is committed on the primary through a bare PyMySQL
connection; the clock starts when ``commit()`` returns and stops when the
waiter knows the replica has applied it.  Three waiters, interleaved commit
by commit in rotating order:

* ``raw``                  — the floor: ``SELECT @@SESSION.last_gtid`` on the
  writing connection, then the server's own wait (``MASTER_GTID_WAIT`` /
  ``WAIT_FOR_EXECUTED_GTID_SET``) on a bare PyMySQL connection to the replica;
* ``wait_for_replication`` — what the pytest fixture ``offload_wait_for_replication`` calls:
  ``db.wait_for_replicas(status_engines=...)`` with the fixture's privileged
  NullPool status engine (used only to explain a timeout);
* ``db.wait_for_replicas`` — the same without status engines;
* ``db.wait_for_replicas(gtid)`` — given the GTID the way ``raw`` gets it (so
  without reading the primary's position): the pooled-engine wait alone.

After every wait the row is looked up on the replica (not timed): a waiter
that returned before the row was visible would be counted as a miss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from offload.bench.env import BenchContext, bare_connection
from offload.bench.report import BenchResult, Check, Table, fmt, fmt_ratio
from offload.bench.stats import ratio, rotation, summarize
from offload.db import Database
from offload.dberrors import unpooled_engine
from offload.replication import WaitOutcome, interpret_wait_result, sql_for

__all__ = ["WAITERS", "Params", "Waiters", "run"]

WAITERS = ("raw", "wait_for_replication", "db.wait_for_replicas", "db.wait_for_replicas(gtid)")
TARGET = 1.2
_TIMEOUT = 10


@dataclass(frozen=True, slots=True)
class Params:
    rounds: int
    warmup: int = 10


QUICK = Params(rounds=200)
FULL = Params(rounds=1500)


def _status_engine(url: Any) -> Engine:
    """The fixture's status engine: privileged, NullPool, translated errors."""
    return unpooled_engine(url, name="replica0-admin")


class Waiters:
    """The four ways to wait, on connections opened once."""

    def __init__(self, ctx: BenchContext, database: str) -> None:
        self.flavor = ctx.servers.flavor
        self.sql = sql_for(self.flavor)
        self.raw_wait = self.sql.wait_for_gtid.replace(":gtid", "%s").replace(":timeout", "%s")
        self.writer = bare_connection(ctx.servers.primary, database, autocommit=False)
        self.reader = bare_connection(ctx.servers.replicas[0], database, autocommit=True)
        self.w, self.r = self.writer.cursor(), self.reader.cursor()
        self.status = _status_engine(ctx.servers.replica_admins[0])

    def commit_row(self, payload: str) -> int:
        self.w.execute(
            "INSERT INTO bench_rows (payload, created_at) VALUES (%s, NOW(6))", (payload,)
        )
        row_id = int(self.w.lastrowid)
        self.writer.commit()
        return row_id

    def last_gtid(self) -> str:
        self.w.execute(self.sql.last_gtid)
        return str(self.w.fetchone()[0])

    def wait(self, name: str, db: Database) -> None:
        if name == "raw":
            gtid = self.last_gtid()
            self.r.execute(self.raw_wait, (gtid, _TIMEOUT))
            outcome = interpret_wait_result(self.flavor, self.r.fetchone()[0])
            if outcome is not WaitOutcome.REACHED:
                raise RuntimeError(f"raw wait for {gtid}: {outcome}")
        elif name == "wait_for_replication":
            db.wait_for_replicas(timeout=_TIMEOUT, status_engines=[self.status])
        elif name == "db.wait_for_replicas":
            db.wait_for_replicas(timeout=_TIMEOUT)
        else:
            db.wait_for_replicas(gtid=self.last_gtid(), timeout=_TIMEOUT)

    def visible(self, row_id: int) -> bool:
        self.r.execute("SELECT COUNT(*) FROM bench_rows WHERE id = %s", (row_id,))
        return bool(self.r.fetchone()[0] == 1)

    def close(self) -> None:
        self.w.close()
        self.r.close()
        self.writer.close()
        self.reader.close()
        self.status.dispose()


def run(ctx: BenchContext) -> BenchResult:
    params = FULL if ctx.full else QUICK
    scratch = ctx.scratch("replication")
    started = time.monotonic()
    waiters = Waiters(ctx, scratch.name)
    db = scratch.database()
    samples: dict[str, list[float]] = {name: [] for name in WAITERS}
    misses = dict.fromkeys(WAITERS, 0)
    ctx.progress(f"replication: {params.rounds} one-row commits per waiter, interleaved")
    try:
        for index in range(params.warmup + params.rounds):
            for name in rotation(list(WAITERS), index):
                row_id = waiters.commit_row(f"{name} {index}")
                begun = time.perf_counter_ns()
                waiters.wait(name, db)
                elapsed = (time.perf_counter_ns() - begun) / 1e9
                visible = waiters.visible(row_id)  # not timed
                if index >= params.warmup:
                    samples[name].append(elapsed)
                    misses[name] += not visible
    finally:
        waiters.close()
        db.dispose()
    floor = summarize(samples["raw"]).scaled(1000)
    rows = []
    data: dict[str, dict[str, Any]] = {}
    for name in WAITERS:
        summary = summarize(samples[name]).scaled(1000)
        rows.append(
            [
                name,
                str(summary.n),
                fmt(summary.median, 3),
                fmt(summary.p99, 3),
                fmt_ratio(ratio(summary.median, floor.median)),
                fmt_ratio(ratio(summary.p99, floor.p99)),
                f"{summary.n - misses[name]}/{summary.n}",
            ]
        )
        data[name] = {
            "ms": summary.as_dict(4),
            "ratio_p50_vs_raw": ratio(summary.median, floor.median),
            "ratio_p99_vs_raw": ratio(summary.p99, floor.p99),
            "row_visible_after_wait": summary.n - misses[name],
        }
    checks = [
        Check(
            "replication",
            f"{name} p50 / raw p50 ≤ {TARGET}",
            fmt_ratio(data[name]["ratio_p50_vs_raw"]),
            None
            if data[name]["ratio_p50_vs_raw"] is None
            else data[name]["ratio_p50_vs_raw"] <= TARGET,
        )
        for name in ("wait_for_replication", "db.wait_for_replicas")
    ]
    summary_text = (
        f"One-row commit on the primary, then wait until the replica applied it; "
        f"{params.rounds} commits per waiter after {params.warmup} unmeasured, "
        f"interleaved in rotating order.  Time from commit() returning to the "
        f"waiter returning."
    )
    return BenchResult(
        key="replication",
        title="3. Replication wait vs its floor",
        summary=summary_text,
        tables=[
            Table(
                "Commit to 'applied on the replica' (milliseconds)",
                ["waiter", "n", "p50 ms", "p99 ms", "p50 / raw", "p99 / raw", "row visible after"],
                rows,
                note="wait_for_replication = the pytest fixture's call "
                "(db.wait_for_replicas with its NullPool status engine).",
            )
        ],
        checks=checks,
        data=data,
        seconds=time.monotonic() - started,
    )
