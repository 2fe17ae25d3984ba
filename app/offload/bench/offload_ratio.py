"""Benchmark 1 — offload: how many of the tasks' SELECTs leave the primary.

Every periodic task runs once per *cycle* for host compute-1 (about 500
instances), in three configurations of the same compute host (one hypervisor,
one data set), cycle after cycle in rotating order:

* ``replica``          — ``slave_connection`` set (causal reads on: the default);
* ``replica, no causal`` — the same with ``[replica] causal_reads = false``;
* ``primary``          — no ``slave_connection``: every read on the primary, as Nova.

After each cycle the servers' own statement history (performance_schema,
tagged statements of the cycle's task runs) says what arrived where.  A
*data read* is a SELECT sent by a reader or writer session; the GTID lookup
asked when a replica read of the same run follows a commit (route ``causal``:
``SELECT @@GLOBAL.gtid_binlog_pos`` / ``gtid_executed``, no table) is counted
apart — it is what causal reads cost the primary.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

from offload.bench.env import BenchContext, StatementEvent, TaggedStatements
from offload.bench.report import BenchResult, Check, Table, fmt, fmt_ratio
from offload.bench.stats import median, p99, ratio, reduction, rotation, summarize
from offload.compute.catalogue import TASKS
from offload.compute.context import RunReport
from offload.compute.host import build_manager
from offload.compute.manager import ComputeManager
from offload.db import Database
from offload.routes import Route

__all__ = ["CONFIGS", "Params", "run"]

#: configuration → (slave_connection set, causal_reads)
CONFIGS: dict[str, tuple[bool, bool]] = {
    "replica": (True, True),
    "replica, no causal": (True, False),
    "primary": (False, True),
}
_HOST = "compute-1"
#: the issue's target for all task SELECTs (GTID lookups included) off the primary
ALL_SELECTS_TARGET = 0.999


@dataclass(frozen=True, slots=True)
class Params:
    cycles: int


QUICK = Params(cycles=5)
FULL = Params(cycles=15)


@dataclass(slots=True)
class _Cycle:
    """What one cycle of one configuration sent, by the servers' count."""

    config: str
    seconds: float
    primary_data_selects: int = 0
    primary_gtid_selects: int = 0
    primary_writes: int = 0
    replica_selects: int = 0
    #: what the client's trace says went to the primary (cross-check)
    client_primary: int = 0
    per_task: dict[str, Counter[str]] = dataclasses.field(default_factory=dict)

    @property
    def primary_total(self) -> int:
        return self.primary_data_selects + self.primary_gtid_selects + self.primary_writes


def _cycle(manager: ComputeManager) -> tuple[list[RunReport], float]:
    started = time.perf_counter()
    reports = [manager.run(spec.name) for spec in TASKS]
    return reports, time.perf_counter() - started


def _count(
    config: str,
    reports: list[RunReport],
    seconds: float,
    primary: list[StatementEvent],
    replica: list[StatementEvent],
) -> _Cycle:
    runs = {report.run: report.task for report in reports}
    cycle = _Cycle(config, seconds)
    cycle.per_task = {report.task: Counter() for report in reports}
    for event in primary:
        if event.run not in runs:
            continue
        counts = cycle.per_task[runs[event.run]]
        if event.is_select and event.route == Route.CAUSAL:
            cycle.primary_gtid_selects += 1
            counts["primary_gtid"] += 1
        elif event.is_select:
            cycle.primary_data_selects += 1
            counts["primary_data"] += 1
        else:
            cycle.primary_writes += 1
            counts["primary_writes"] += 1
    for event in replica:
        if event.run in runs and event.is_select:
            cycle.replica_selects += 1
            cycle.per_task[runs[event.run]]["replica"] += 1
    cycle.client_primary = sum(
        sum(report.details["statements"]["by_target"].get("primary", {}).values())
        for report in reports
    )
    return cycle


def run(ctx: BenchContext) -> BenchResult:
    params = FULL if ctx.full else QUICK
    scratch, data = ctx.shared()
    started = time.monotonic()
    databases: dict[str, Database] = {}
    admin = ctx.servers.admin_engine()
    replica_admin = ctx.servers.replica_admin_engines()[0]
    try:
        for name, (with_replica, causal) in CONFIGS.items():
            base = ctx.servers.base.replica
            databases[name] = scratch.database(
                with_replica=with_replica,
                host=_HOST,
                replica=dataclasses.replace(base, causal_reads=causal),
            )
        first = build_manager(scratch.settings(host=_HOST), databases["replica"])
        # one compute host (one hypervisor, one memory) seen through each configuration
        managers = {
            name: ComputeManager(dataclasses.replace(first.compute, db=db))
            for name, db in databases.items()
        }
        first.init_host()
        on_primary = TaggedStatements(admin, scratch.name)
        on_replica = TaggedStatements(replica_admin, scratch.name)
        waiter = databases["replica"]
        ctx.progress(
            f"offload: one unmeasured warm-up cycle per configuration, then "
            f"{params.cycles} measured cycles each"
        )
        for name in CONFIGS:  # first runs on fresh data do one-off clean-up: not measured
            _cycle(managers[name])
        waiter.wait_for_replicas(timeout=120)
        on_primary.skip()
        on_replica.skip()
        cycles: list[_Cycle] = []
        for index in range(params.cycles):
            for name in rotation(list(CONFIGS), index):
                reports, seconds = _cycle(managers[name])
                waiter.wait_for_replicas(timeout=120)
                cycles.append(_count(name, reports, seconds, on_primary.poll(), on_replica.poll()))
    finally:
        for db in databases.values():
            db.dispose()
        admin.dispose()
        replica_admin.dispose()
    return _result(ctx, params, cycles, data.instances, len(data.hosts), time.monotonic() - started)


def _result(
    ctx: BenchContext,
    params: Params,
    cycles: list[_Cycle],
    instances: int,
    hosts: int,
    seconds: float,
) -> BenchResult:
    by_config: dict[str, list[_Cycle]] = defaultdict(list)
    for cycle in cycles:
        by_config[cycle.config].append(cycle)
    rows = []
    data: dict[str, object] = {
        "instances": instances,
        "hosts": hosts,
        "host": _HOST,
        "tasks": len(TASKS),
        "cycles_per_config": params.cycles,
        "configs": {},
    }
    for name, series in by_config.items():
        columns = {
            "primary_data_selects": [c.primary_data_selects for c in series],
            "primary_gtid_selects": [c.primary_gtid_selects for c in series],
            "primary_writes": [c.primary_writes for c in series],
            "replica_selects": [c.replica_selects for c in series],
        }
        times = summarize([c.seconds for c in series]).scaled(1000)
        rows.append(
            [
                name,
                str(len(series)),
                fmt(median(columns["primary_data_selects"]), 0),
                fmt(p99(columns["primary_data_selects"]), 0),
                fmt(median(columns["primary_gtid_selects"]), 0),
                fmt(median(columns["primary_writes"]), 0),
                fmt(median(columns["replica_selects"]), 0),
                fmt(times.median, 0),
                fmt(times.p99, 0),
            ]
        )
        data["configs"][name] = {  # type: ignore[index]
            **{key: summarize(values).as_dict(2) for key, values in columns.items()},
            "cycle_ms": times.as_dict(2),
            "server_matches_client": all(c.primary_total == c.client_primary for c in series),
            "per_cycle": [
                dataclasses.asdict(c) | {"per_task": {t: dict(v) for t, v in c.per_task.items()}}
                for c in series
            ],
        }
    totals = {
        name: (
            sum(c.primary_data_selects for c in series),
            sum(c.primary_data_selects + c.primary_gtid_selects for c in series),
        )
        for name, series in by_config.items()
    }
    baseline_data, baseline_all = totals["primary"]
    share_rows = []
    shares: dict[str, dict[str, float | None]] = {}
    for name in ("replica", "replica, no causal"):
        data_share = reduction(totals[name][0], baseline_data)
        all_share = reduction(totals[name][1], baseline_all)
        cycle_ratio = ratio(
            median([c.seconds for c in by_config[name]]),
            median([c.seconds for c in by_config["primary"]]),
        )
        shares[name] = {
            "data_selects_moved": data_share,
            "all_selects_moved": all_share,
            "cycle_time_ratio": cycle_ratio,
        }
        share_rows.append(
            [
                name,
                fmt(None if data_share is None else data_share * 100, 1, " %"),
                fmt(None if all_share is None else all_share * 100, 1, " %"),
                fmt_ratio(cycle_ratio),
            ]
        )
    data["moved_off_primary"] = shares
    per_task_rows = []
    for spec in TASKS:

        def task_median(config: str, key: str, task: str = spec.name) -> float:
            return median([c.per_task.get(task, Counter())[key] for c in by_config[config]])

        per_task_rows.append(
            [
                spec.name,
                fmt(task_median("primary", "primary_data"), 0),
                fmt(task_median("replica", "primary_data"), 0),
                fmt(task_median("replica", "primary_gtid"), 0),
                fmt(task_median("replica", "replica"), 0),
                fmt(
                    task_median("replica, no causal", "primary_data")
                    + task_median("replica, no causal", "primary_gtid"),
                    0,
                ),
            ]
        )
    agree = all(c.primary_total == c.client_primary for c in cycles)
    all_share = shares["replica"]["all_selects_moved"]
    replica_share = shares["replica"]["data_selects_moved"]
    summary = (
        f"{instances:,} instances over {hosts} hosts; every task ({len(TASKS)}) run once "
        f"per cycle for {_HOST}; {params.cycles} measured cycles per configuration, "
        f"rotating order, after one warm-up cycle each.  Counted by the primary's and "
        f"the replica's performance_schema (tagged statements of each cycle's runs); "
        f"the client's trace {'agrees' if agree else 'DISAGREES'} with the primary's "
        f"count in every cycle."
    )
    return BenchResult(
        key="offload",
        title="1. Offload: task SELECTs on the primary",
        summary=summary,
        tables=[
            Table(
                "Statements per task cycle (median over cycles; counted by the servers)",
                [
                    "configuration",
                    "cycles",
                    "primary data SELECTs",
                    "p99",
                    "primary GTID lookups",
                    "primary writes",
                    "replica SELECTs",
                    "cycle ms",
                    "p99 ms",
                ],
                rows,
                note="GTID lookup: the primary's GTID position, asked when a replica read "
                "of the run follows its commit (causal reads), no table read.",
            ),
            Table(
                "Share of the tasks' primary SELECTs moved off (vs configuration 'primary')",
                [
                    "configuration",
                    "data SELECTs moved",
                    "all SELECTs moved",
                    "cycle time ratio vs primary",
                ],
                share_rows,
            ),
            Table(
                "Per task: SELECTs per run (median)",
                [
                    "task",
                    "primary: primary SELECTs",
                    "replica: primary data SELECTs",
                    "replica: primary GTID lookups",
                    "replica: replica SELECTs",
                    "no causal: primary SELECTs",
                ],
                per_task_rows,
            ),
        ],
        checks=[
            Check(
                "offload",
                "100 % of task data SELECTs off the primary with slave_connection",
                fmt(None if replica_share is None else replica_share * 100, 1, " %"),
                None if replica_share is None else replica_share >= 1.0,
            ),
            Check(
                "offload",
                "≥ 99.9 % of all task SELECTs (GTID lookups included) off the primary",
                fmt(None if all_share is None else all_share * 100, 1, " %"),
                None if all_share is None else all_share >= ALL_SELECTS_TARGET,
            ),
        ],
        data=data,
        seconds=seconds,
    )
