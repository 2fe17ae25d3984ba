"""Benchmark 4 — task scaling: time per task as the data set grows.

One scratch database per size, seeded with hosts of about 500 instances, so
that host compute-1 holds the same number of instances at every size and only
the *other* hosts grow.  With the replica configured:

1. **all hosts** (sizes up to ``all_hosts_max``): every task once for every
   host, task by task, sizes side by side — the first run on every host, so it
   includes the one-off clean-up fresh data needs (as a service starting on a
   whole fleet);
2. **one host**: every task for compute-1, ``reps`` times, each task timed at
   every size in turn (rotating order) — steady state, after the pass above or
   an unmeasured warm-up cycle.  If the queries use their indexes, one host's
   time does not grow with the others' instances.

Peak RSS: the process's peak resident set during each run, restarted before it
(Linux ``clear_refs``), minus the resident set just before: what the run needed.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass

from offload.bench.env import (
    BenchContext,
    Scratch,
    TaggedStatements,
    peak_rss_kib,
    reset_peak_rss,
    rss_kib,
)
from offload.bench.report import BenchResult, Check, Table, fmt, fmt_ratio
from offload.bench.stats import median, ratio, rotation, summarize
from offload.compute.catalogue import TASKS
from offload.compute.host import build_manager
from offload.compute.manager import ComputeManager
from offload.db import Database
from offload.seed import host_names

__all__ = ["INSTANCES_PER_HOST", "Params", "run"]

INSTANCES_PER_HOST = 500
#: one host's cycle at the largest size / at the smallest: above this, it grew
GROWTH_LIMIT = 1.25
#: a task's rows examined at the largest size / at the second: above this, no index
EXAMINED_LIMIT = 1.5
_HOST = "compute-1"
#: rows a run may examine on one host by index ranges of the host's own rows alone
_HOST_BOUND = EXAMINED_LIMIT * INSTANCES_PER_HOST


@dataclass(frozen=True, slots=True)
class Params:
    sizes: tuple[int, ...]
    reps: int
    all_hosts_max: int


QUICK = Params(sizes=(1_000, 5_000, 25_000), reps=4, all_hosts_max=5_000)
FULL = Params(sizes=(1_000, 10_000, 50_000, 100_000), reps=7, all_hosts_max=100_000)


@dataclass(slots=True, eq=False)
class _Size:
    instances: int
    hosts: int
    scratch: Scratch
    db: Database
    manager: ComputeManager
    one_host: dict[str, list[float]] = dataclasses.field(default_factory=lambda: defaultdict(list))
    one_host_rss: list[int] = dataclasses.field(default_factory=list)
    all_hosts: dict[str, float] = dataclasses.field(default_factory=dict)
    all_hosts_rss: list[int] = dataclasses.field(default_factory=list)
    peak_kib: int = 0
    #: rows the servers examined for each one-host run (replica + primary)
    examined: dict[str, list[int]] = dataclasses.field(default_factory=lambda: defaultdict(list))
    servers: tuple[TaggedStatements, ...] = ()

    def count_examined(self, task: str, run: str) -> None:
        self.examined[task].append(
            sum(
                event.rows_examined
                for server in self.servers
                for event in server.poll()
                if event.run == run
            )
        )


def _timed(
    size: _Size, action: list[ComputeManager], task: str, rss: list[int]
) -> tuple[float, str]:
    """Seconds to run ``task`` for every manager of ``action``; the last run's id."""
    before = rss_kib() or 0
    reset_peak_rss()
    run_id = ""
    started = time.perf_counter()
    for manager in action:
        run_id = manager.run(task).run
    elapsed = time.perf_counter() - started
    peak = peak_rss_kib() or 0
    rss.append(max(0, peak - before))
    size.peak_kib = max(size.peak_kib, peak)
    return elapsed, run_id


def _prepare(ctx: BenchContext, instances: int) -> _Size:
    hosts = max(1, instances // INSTANCES_PER_HOST)
    scratch = ctx.scratch(f"scale{instances // 1000}k")
    started = time.monotonic()
    scratch.seed(instances, hosts)
    ctx.progress(
        f"scaling: seeded {instances:,} instances over {hosts} hosts, replicated, "
        f"in {time.monotonic() - started:.1f} s"
    )
    db = scratch.database(host=_HOST)
    manager = build_manager(scratch.settings(host=_HOST), db)
    manager.init_host()
    return _Size(instances, hosts, scratch, db, manager)


def run(ctx: BenchContext) -> BenchResult:
    params = FULL if ctx.full else QUICK
    started = time.monotonic()
    sizes: list[_Size] = []
    fleets: dict[int, list[ComputeManager]] = {}
    admin = ctx.servers.admin_engine()
    replica_admin = ctx.servers.replica_admin_engines()[0]
    try:
        for instances in params.sizes:
            sizes.append(_prepare(ctx, instances))
        fleet_sizes = [s for s in sizes if s.instances <= params.all_hosts_max]
        for size in fleet_sizes:
            fleets[size.instances] = [size.manager] + [
                build_manager(size.scratch.settings(host=host), size.db)
                for host in host_names(size.hosts)[1:]
            ]
            for manager in fleets[size.instances][1:]:
                manager.init_host()
        ctx.progress(
            f"scaling: every task for all hosts at "
            f"{', '.join(f'{s.instances:,}' for s in fleet_sizes) or 'no size'}"
        )
        for index, spec in enumerate(TASKS):
            for size in [s for s in rotation(sizes, index) if s in fleet_sizes]:
                size.all_hosts[spec.name] = _timed(
                    size, fleets[size.instances], spec.name, size.all_hosts_rss
                )[0]
        for size in sizes:
            if size not in fleet_sizes:  # steady state for the one-host runs, unmeasured
                for spec in TASKS:
                    size.manager.run(spec.name)
            size.db.wait_for_replicas(timeout=300)
        ctx.progress(f"scaling: every task for {_HOST}, {params.reps} times, sizes interleaved")
        for size in sizes:
            size.servers = (
                TaggedStatements(admin, size.scratch.name),
                TaggedStatements(replica_admin, size.scratch.name),
            )
            for server in size.servers:
                server.skip()
        turn = 0
        for _ in range(params.reps):
            for spec in TASKS:
                for size in rotation(sizes, turn):
                    elapsed, run_id = _timed(size, [size.manager], spec.name, size.one_host_rss)
                    size.one_host[spec.name].append(elapsed)
                    size.count_examined(spec.name, run_id)  # after the clock stopped
                turn += 1
    finally:
        for size in sizes:
            size.db.dispose()
        admin.dispose()
        replica_admin.dispose()
    return _result(params, sizes, time.monotonic() - started)


def _result(params: Params, sizes: list[_Size], seconds: float) -> BenchResult:
    smallest, largest = sizes[0], sizes[-1]
    labels = [f"{s.instances // 1000}k" for s in sizes]
    task_rows = []
    examined_rows = []
    data_tasks: dict[str, object] = {}
    for spec in TASKS:
        medians = [median(s.one_host[spec.name]) * 1000 for s in sizes]
        growth = ratio(medians[-1], medians[0])
        examined = [median(s.examined[spec.name]) for s in sizes]
        row = [spec.name, *(fmt(m, 1) for m in medians), fmt_ratio(growth)]
        examined_rows.append(
            [spec.name, *(fmt(e, 0) for e in examined), fmt_ratio(ratio(examined[-1], examined[0]))]
        )
        row += [fmt(s.all_hosts[spec.name], 2) if spec.name in s.all_hosts else "-" for s in sizes]
        task_rows.append(row)
        data_tasks[spec.name] = {
            "one_host_ms": {
                str(s.instances): summarize(s.one_host[spec.name]).scaled(1000).as_dict(3)
                for s in sizes
            },
            "one_host_growth": growth,
            "one_host_rows_examined": {
                str(s.instances): summarize(s.examined[spec.name]).as_dict(1) for s in sizes
            },
            "all_hosts_s": {
                str(s.instances): round(s.all_hosts[spec.name], 4)
                for s in sizes
                if spec.name in s.all_hosts
            },
        }
    cycle = {s.instances: sum(median(v) for v in s.one_host.values()) for s in sizes}
    examined_cycle = {s.instances: sum(median(v) for v in s.examined.values()) for s in sizes}
    size_rows = []
    data_sizes: dict[str, object] = {}
    for s in sizes:
        all_hosts = sum(s.all_hosts.values()) if s.all_hosts else None
        per_k = None if all_hosts is None else all_hosts * 1000 / (s.instances / 1000)
        size_rows.append(
            [
                f"{s.instances:,}",
                str(s.hosts),
                fmt(cycle[s.instances] * 1000, 0),
                fmt_ratio(ratio(cycle[s.instances], cycle[smallest.instances])),
                fmt(examined_cycle[s.instances], 0),
                fmt(all_hosts, 1),
                fmt(per_k, 0),
                fmt(max(s.one_host_rss, default=0) / 1024, 1),
                fmt(max(s.all_hosts_rss, default=0) / 1024, 1) if s.all_hosts_rss else "-",
                fmt(s.peak_kib / 1024, 0),
            ]
        )
        data_sizes[str(s.instances)] = {
            "hosts": s.hosts,
            "one_host_cycle_ms": round(cycle[s.instances] * 1000, 2),
            "one_host_cycle_vs_smallest": ratio(cycle[s.instances], cycle[smallest.instances]),
            "one_host_cycle_rows_examined": examined_cycle[s.instances],
            "all_hosts_cycle_s": None if all_hosts is None else round(all_hosts, 3),
            "all_hosts_ms_per_1k_instances": None if per_k is None else round(per_k, 2),
            "one_host_peak_rss_increase_mib": round(max(s.one_host_rss, default=0) / 1024, 2),
            "all_hosts_peak_rss_increase_mib": round(max(s.all_hosts_rss, default=0) / 1024, 2),
            "process_peak_rss_mib": round(s.peak_kib / 1024, 1),
        }
    growth = ratio(cycle[largest.instances], cycle[smallest.instances])
    # against the second size: at the smallest, each host holds a large share of the
    # table and a table scan can be the optimizer's right choice
    reference = sizes[1] if len(sizes) > 2 else smallest
    growing = []
    for spec in TASKS:
        at_largest = median(largest.examined[spec.name])
        grown = ratio(at_largest, median(reference.examined[spec.name]))
        # a plan bounded by the host (its index range of the host's rows) may replace a
        # cheaper one as the table grows, as MySQL's does for _poll_rebooting_instances
        # (task_state's range while the table has fewer rebooting rows than the host
        # has instances): growth counts only beyond what a host-bounded plan reads
        if grown is not None and grown > EXAMINED_LIMIT and at_largest > _HOST_BOUND:
            growing.append(f"{spec.name} {grown:.1f}x ({at_largest:,.0f} rows)")
    skipped = [f"{s.instances:,}" for s in sizes if not s.all_hosts]
    summary = (
        f"Hosts of {INSTANCES_PER_HOST} instances; {_HOST} has the same instances at "
        f"every size.  One host: median of {params.reps} runs per task, sizes "
        f"interleaved task by task.  All hosts: one pass, each task for every host "
        f"(first runs on fresh data)"
        + (
            f"; not run at {', '.join(skipped)} in this mode (too long for quick)"
            if skipped
            else ""
        )
        + "."
    )
    return BenchResult(
        key="scaling",
        title="4. Task scaling with the number of instances",
        summary=summary,
        tables=[
            Table(
                "Per size: one host vs all hosts",
                [
                    "instances",
                    "hosts",
                    "one host: cycle ms",
                    "vs smallest",
                    "one host: rows examined",
                    "all hosts: cycle s",
                    "all hosts: ms per 1k inst.",
                    "one host: peak RSS +MiB",
                    "all hosts: peak RSS +MiB",
                    "process peak RSS MiB",
                ],
                size_rows,
                note="cycle = sum over the 13 tasks of their median time; rows examined = "
                "ROWS_EXAMINED of the cycle's statements on both servers "
                "(performance_schema); peak RSS +MiB = peak during a run minus RSS "
                "before it (largest run).",
            ),
            Table(
                "Per task: one host (median ms) and all hosts (s)",
                [
                    "task",
                    *(f"1 host {lab} ms" for lab in labels),
                    f"{labels[-1]}/{labels[0]}",
                    *(f"all {lab} s" for lab in labels),
                ],
                task_rows,
            ),
            Table(
                "Per task: rows the servers examined for one run on one host (median)",
                ["task", *(f"{lab} rows" for lab in labels), f"{labels[-1]}/{labels[0]}"],
                examined_rows,
                note="ROWS_EXAMINED from performance_schema, the run's tagged statements on "
                "the replica and the primary: flat when every query uses an index.",
            ),
        ],
        checks=[
            Check(
                "scaling",
                f"one host's cycle at {largest.instances:,} / at "
                f"{smallest.instances:,} instances ≤ {GROWTH_LIMIT} "
                f"(index use; threshold of this bench)",
                fmt_ratio(growth),
                None if growth is None else growth <= GROWTH_LIMIT,
            ),
            Check(
                "scaling",
                f"no task's rows examined (one host) grow from "
                f"{reference.instances:,} to {largest.instances:,} instances "
                f"by more than {EXAMINED_LIMIT}x beyond {_HOST_BOUND:,.0f} rows, what "
                f"a plan bounded by the host's {INSTANCES_PER_HOST} instances reads "
                f"(threshold of this bench)",
                ", ".join(growing) or "none grew",
                not growing,
            ),
        ],
        data={
            "sizes": data_sizes,
            "tasks": data_tasks,
            "reps": params.reps,
            "rows_examined_growing": growing,
        },
        seconds=seconds,
    )
