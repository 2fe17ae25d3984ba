"""Benchmark 7 — TLS's cost: routing overhead and replication wait, with and without TLS.

On a testbed with TLS (the default), side by side in one run:

* ``routing`` — replica reads as the service sends them (``db.reader(allow_replica=True)``
  in a task scope, pooled connections) through two Databases on one scratch database: one
  with the testbed's verified-TLS URLs, one with the same accounts over plain TCP
  (``ssl_disabled``); a primary-key lookup (small x1) and a host's instance list
  (task-sized x1), interleaved round by round in rotating order;
* ``connect`` — a new connection to the replica each sample (TCP, the TLS handshake and
  verification, authentication, a primary-key lookup, close): what a pool pays for every
  connection it opens;
* ``replication`` — one-row commits on the primary, timed from ``commit()`` returning to
  the replica's own GTID wait returning, with the replica's channel over verified TLS and
  over plain TCP in alternating blocks (a CHANGE MASTER / REPLICATION SOURCE between them,
  unmeasured commits after each switch).

The plain side needs servers that accept it: ``require_secure_transport`` is turned off
on every server for the benchmark and on again afterwards, and the channel goes back to
TLS, whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import URL, text

from offload import replication
from offload.bench.env import BenchContext, Scratch, bare_connection
from offload.bench.link_overhead import replica_threads_run
from offload.bench.replication_wait import Waiters
from offload.bench.report import BenchResult, Check, Table, fmt, fmt_ratio
from offload.bench.routing_overhead import (
    WORKLOADS,
    PathSpec,
    instance_keys,
    measure,
    offload_path,
    paired_ratio,
)
from offload.bench.stats import ratio, summarize
from offload.config import Settings
from offload.db import Database
from offload.dberrors import unpooled_engine
from offload.testbed.topology import PLAIN_QUERY
from offload.tracing import task_scope
from offload.waiting import Deadline, wait_for

__all__ = ["FULL", "QUICK", "SIDES", "Params", "plain_url", "run"]

TLS, PLAIN = "TLS", "plain"
SIDES = (TLS, PLAIN)
#: the URL keys that ask for TLS (what the testbed writes, and oslo.db's)
_TLS_KEYS = ("ssl_ca", "ssl_capath", "ssl_check_hostname", "ssl_verify_cert", "ssl_verify_identity")
_HOST = "compute-1"


@dataclass(frozen=True, slots=True)
class Params:
    small_rounds: int
    task_rounds: int
    connect_rounds: int
    blocks: int
    per_block: int
    warmup: int = 10


QUICK = Params(small_rounds=600, task_rounds=80, connect_rounds=200, blocks=8, per_block=50)
FULL = Params(small_rounds=3000, task_rounds=300, connect_rounds=1000, blocks=10, per_block=200)


def plain_url(url: URL) -> URL:
    """The same account and server over plain TCP."""
    return url.difference_update_query(_TLS_KEYS).update_query_dict(PLAIN_QUERY)


def _plain_settings(settings: Settings) -> Settings:
    database = settings.database
    connection = database.connection
    assert connection is not None
    return replace(
        settings,
        database=replace(
            database,
            connection=plain_url(connection),
            slave_connections=tuple(plain_url(u) for u in database.slave_connections),
        ),
    )


def _set_secure_transport(ctx: BenchContext, *, required: bool) -> None:
    for index, url in enumerate((ctx.servers.admin, *ctx.servers.replica_admins)):
        engine = unpooled_engine(url, name=f"server{index}")
        try:
            with engine.connect() as conn:
                conn.execute(text(f"SET GLOBAL require_secure_transport = {int(required)}"))
        finally:
            engine.dispose()


@contextmanager
def _plain_allowed(ctx: BenchContext) -> Iterator[None]:
    """Every server accepts plain TCP inside the block; TLS is required again after it."""
    _set_secure_transport(ctx, required=False)
    try:
        yield
    finally:
        _set_secure_transport(ctx, required=True)


def _channel(ctx: BenchContext, ca: str | None) -> None:
    """The replica's channel over TLS verified against ``ca``, or plain (None)."""
    engine = unpooled_engine(ctx.servers.replica_admins[0], name="replica0")
    try:
        with engine.connect() as conn:
            replication.set_source_tls(conn, ctx.servers.flavor, ca)
    finally:
        engine.dispose()
    if not wait_for(lambda: replica_threads_run(ctx), Deadline(30.0), interval=0.05):
        raise RuntimeError(f"replica0 did not replicate again ({TLS if ca else PLAIN})")


def _connect_path(url: URL) -> PathSpec:
    """Each sample on a connection of its own: opened (TCP, TLS, authentication), used for
    the workload's statement, closed."""

    @contextmanager
    def open_cursor() -> Iterator[Any]:
        connection = bare_connection(url, url.database, autocommit=True)
        try:
            with connection.cursor() as cursor:
                yield cursor
        finally:
            connection.close()

    return PathSpec(open_cursor, raw=True)


def _skipped(reason: str) -> BenchResult:
    return BenchResult(
        key="tls",
        title="7. TLS's cost",
        summary=f"Not measured: {reason}.",
        checks=[Check("tls", "TLS / plain, side by side", "-", None)],
    )


def _row(label: str, samples: dict[str, list[float]], *, paired: bool) -> list[str]:
    tls, plain = (summarize(samples[side]).scaled(1000) for side in (TLS, PLAIN))
    value = paired_ratio(samples, TLS, PLAIN) if paired else ratio(tls.median, plain.median)
    return [
        label,
        str(tls.n),
        fmt(plain.median, 3),
        fmt(tls.median, 3),
        fmt(plain.p99, 3),
        fmt(tls.p99, 3),
        fmt(tls.median - plain.median, 3),
        fmt_ratio(value),
    ]


def _data(samples: dict[str, list[float]], *, paired: bool) -> dict[str, Any]:
    tls, plain = (summarize(samples[side]).scaled(1000) for side in (TLS, PLAIN))
    return {
        "ms": {side: summarize(samples[side]).scaled(1000).as_dict(4) for side in SIDES},
        "ratio_p50": (
            paired_ratio(samples, TLS, PLAIN) if paired else ratio(tls.median, plain.median)
        ),
        "difference_ms_p50": round(tls.median - plain.median, 4),
    }


def run(ctx: BenchContext) -> BenchResult:
    ca = ctx.servers.replica_admins[0].query.get("ssl_ca")
    if not isinstance(ca, str) or not ca:
        return _skipped("the testbed has no TLS (`--tls off`, or a config without ssl_ca)")
    params = FULL if ctx.full else QUICK
    scratch, _shared = ctx.shared()
    started = time.monotonic()
    settings = scratch.settings(host=_HOST)
    results: dict[str, dict[str, list[float]]] = {}
    with _plain_allowed(ctx):
        databases = {TLS: Database(settings), PLAIN: Database(_plain_settings(settings))}
        try:
            keys = instance_keys(databases[TLS], params.small_rounds + params.warmup)
            paths = {side: offload_path(db, lag_due=False) for side, db in databases.items()}
            ctx.progress(
                f"tls: replica reads over TLS and plain TCP interleaved; small x1 "
                f"{params.small_rounds}, task-sized x1 {params.task_rounds} rounds"
            )
            with task_scope("bench_tls"):
                rounds = {"small": params.small_rounds, "task_sized": params.task_rounds}
                for workload in WORKLOADS:
                    if workload.key in rounds:
                        results[workload.key], _cpu = measure(
                            paths, workload, keys, rounds[workload.key], params.warmup
                        )
        finally:
            for db in databases.values():
                db.dispose()
        replica = settings.database.slave_connections[0]
        ctx.progress(f"tls: {params.connect_rounds} new connections each, interleaved")
        results["connect"], _cpu = measure(
            {TLS: _connect_path(replica), PLAIN: _connect_path(plain_url(replica))},
            WORKLOADS[0],
            keys,
            params.connect_rounds,
            params.warmup,
        )
        ctx.progress(
            f"tls: replication, {params.blocks} blocks of {params.per_block} commits, "
            "the channel over TLS and plain in turn"
        )
        results["replication"] = _replication(ctx, scratch, ca, params)
    labels = {
        "small": "replica read, small x1 (pooled)",
        "task_sized": "replica read, task-sized x1 (pooled)",
        "connect": "new connection + small x1",
        "replication": "replication: commit to applied",
    }
    rows = [_row(labels[k], results[k], paired=k != "replication") for k in labels]
    data = {k: _data(results[k], paired=k != "replication") for k in labels}
    return BenchResult(
        key="tls",
        title="7. TLS's cost",
        summary=(
            "The same work over verified TLS (the testbed's CA, TLSv1.2+) and over plain TCP "
            "on the same servers, side by side in one run: reads are paired round by round "
            f"(rotating order); the replication channel alternates in {params.blocks} blocks "
            f"of {params.per_block} commits (after {params.warmup} unmeasured)."
        ),
        tables=[
            Table(
                "TLS vs plain TCP (milliseconds)",
                [
                    "what",
                    "n",
                    "plain p50",
                    "TLS p50",
                    "plain p99",
                    "TLS p99",
                    "TLS - plain",
                    "TLS / plain",
                ],
                rows,
                note="TLS / plain: the median of the rounds' paired ratios (reads, "
                "connections), the ratio of the medians (replication, by block).",
            )
        ],
        checks=[
            Check("tls", f"{labels[k]}: TLS / plain", fmt_ratio(data[k]["ratio_p50"]), None)
            for k in labels
        ],
        data=data,
        seconds=time.monotonic() - started,
    )


def _replication(
    ctx: BenchContext, scratch: Scratch, ca: str, params: Params
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {side: [] for side in SIDES}
    waiters = Waiters(ctx, scratch.name)
    db = scratch.database()
    try:
        for block in range(params.blocks):
            side = SIDES[block % 2]
            _channel(ctx, ca if side == TLS else None)
            for index in range(params.warmup + params.per_block):
                row_id = waiters.commit_row(f"tls {side} {block} {index}")
                begun = time.perf_counter_ns()
                waiters.wait("raw", db)
                elapsed = (time.perf_counter_ns() - begun) / 1e9
                if not waiters.visible(row_id):
                    raise RuntimeError(f"row {row_id} not on the replica after its wait")
                if index >= params.warmup:
                    samples[side].append(elapsed)
    finally:
        _channel(ctx, ca)
        waiters.close()
        db.dispose()
    return samples
