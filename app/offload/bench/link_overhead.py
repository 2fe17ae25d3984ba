"""Benchmark 6 — the shaped link's own cost, with no toxic.

One replica, two routes to its primary: straight, and through its link proxy
(``offload link``, no toxic in force).  The replica is pointed at one, then the
other, in alternating blocks (a CHANGE MASTER / REPLICATION SOURCE between them,
a few unmeasured commits after each switch); in each block one-row commits on the
primary, each timed from ``commit()`` returning to the row being visible to a
plain client polling the replica (``offload.link.probe``).  The target: the
link's p50 within 0.2 ms of the direct p50.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from offload import replication
from offload.bench.env import BenchContext
from offload.bench.report import BenchResult, Check, Table, fmt
from offload.bench.stats import summarize
from offload.dberrors import unpooled_engine
from offload.link.probe import Probe
from offload.testbed.native import NativeTopology
from offload.waiting import Deadline, wait_for

__all__ = ["FULL", "QUICK", "TARGET_MS", "Params", "replica_threads_run", "run"]

TARGET_MS = 0.2
REPLICA = "replica0"
ROUTES = ("direct", "link")


@dataclass(frozen=True, slots=True)
class Params:
    blocks: int
    per_block: int
    warmup: int = 5


QUICK = Params(blocks=8, per_block=60)
FULL = Params(blocks=10, per_block=200)


def replica_threads_run(ctx: BenchContext) -> bool:
    engine = unpooled_engine(ctx.servers.replica_admins[0], name=REPLICA)
    try:
        with engine.connect() as conn:
            status = replication.replica_status(conn, ctx.servers.flavor)
    finally:
        engine.dispose()
    return status is not None and status.threads_running


def _skipped(reason: str) -> BenchResult:
    return BenchResult(
        key="link",
        title="6. The shaped link's own cost",
        summary=f"Not measured: {reason}.",
        checks=[Check("link", f"link p50 - direct p50 ≤ {TARGET_MS} ms", "-", None)],
    )


def run(ctx: BenchContext) -> BenchResult:
    if ctx.testbed_dir is None:
        return _skipped("the bench puts a link only into a testbed of its own (no --config)")
    params = FULL if ctx.full else QUICK
    started = time.monotonic()
    topology = NativeTopology(ctx.testbed_dir, flavor=None, bind_to_parent=True)
    topology.attach_link(REPLICA)
    samples: dict[str, list[float]] = {route: [] for route in ROUTES}
    ctx.progress(
        f"link: {params.blocks} blocks of {params.per_block} commits, direct and through "
        "the link in turn"
    )
    try:
        with Probe.open(ctx.servers.admin, ctx.servers.replica_admins[0]) as probe:
            for block in range(params.blocks):
                route = ROUTES[block % 2]
                topology.route_replica(REPLICA, through_link=route == "link")
                if not wait_for(lambda: replica_threads_run(ctx), Deadline(30.0), interval=0.05):
                    raise RuntimeError(f"{REPLICA} did not replicate again ({route})")
                probe.samples(params.warmup)
                samples[route].extend(probe.samples(params.per_block))
    finally:
        topology.detach_link(REPLICA)
    summaries = {route: summarize(samples[route]).scaled(1000) for route in ROUTES}
    difference = summaries["link"].median - summaries["direct"].median
    rows = [
        [
            route,
            str(summaries[route].n),
            fmt(summaries[route].median, 3),
            fmt(summaries[route].p99, 3),
            fmt(summaries[route].max, 3),
        ]
        for route in ROUTES
    ]
    data: dict[str, Any] = {route: summaries[route].as_dict(4) for route in ROUTES}
    data["p50_difference_ms"] = round(difference, 4)
    return BenchResult(
        key="link",
        title="6. The shaped link's own cost",
        summary=(
            f"One-row commits on the primary, timed until visible on {REPLICA} to a plain "
            f"polling client; {params.blocks} alternating blocks of {params.per_block} "
            f"(after {params.warmup} unmeasured), the replica straight on the primary or "
            "through its link proxy with no toxic."
        ),
        tables=[
            Table(
                "Commit to visible on the replica (milliseconds)",
                ["route", "n", "p50 ms", "p99 ms", "max ms"],
                rows,
                note=f"link p50 - direct p50 = {difference:.3f} ms",
            )
        ],
        checks=[
            Check(
                "link",
                f"link p50 - direct p50 ≤ {TARGET_MS} ms",
                f"{difference:.3f} ms",
                difference <= TARGET_MS,
            )
        ],
        data=data,
        seconds=time.monotonic() - started,
    )
