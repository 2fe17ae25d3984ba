"""The sweep: for each host count, the fleet in alternating windows with and without the replica.

One testbed (native, free ports, stopped afterwards), one scratch database that grows
with the fleet: before each host count, the hosts it adds are seeded
(``instances_per_host`` instances each, ``seed_block`` hosts per transaction, so the
replica applies one block while the next is planned and sent); a larger count reuses
the smaller one's hosts and rows.  For each host count the hosts are dealt over
``processes`` worker processes; then windows alternate ``replica``, ``primary``, ...
(``pairs`` of each after a warm-up).  Windows are lock-step: the parent reads the servers'
counters, tells every worker to go, and reads them again once every worker has finished
the runs it started — so every statement of a window is counted in that window.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from offload.bench.env import Scratch, Servers, TaggedStatements
from offload.config import ComputeSettings, Settings
from offload.db import Database
from offload.errors import ConfigError
from offload.fleet.measure import ApiWriteLoad, ServerMeter
from offload.fleet.params import FleetParams
from offload.fleet.stats import buffer_pool_bytes, percentile, split_hosts
from offload.fleet.worker import WorkerPlan, run_worker
from offload.seed import host_names, seed
from offload.testbed.native import NativeTopology

__all__ = ["COLUMNS", "Sweep", "run_fleet", "sweep", "write_csv"]

COLUMNS = (
    "hosts",
    "config",
    "replicas",
    "time_factor",
    "windows",
    "seconds",
    "primary_statements_per_s",
    "primary_selects_per_s",
    "primary_data_selects_per_s",
    "primary_causal_selects_per_s",
    "replica_selects_per_s",
    "replica_selects_per_s_each",
    "primary_cpu_s_per_s",
    "replica_cpu_s_per_s",
    "task_runs",
    "task_overruns",
    "task_missed",
    "task_errors",
    "task_error_kinds",
    "task_run_p50_ms",
    "task_run_p99_ms",
    "fallbacks",
    "rejected_writes",
    "replica_lag_p50_ms",
    "replica_lag_p99_ms",
    "replica_lag_max_ms",
    "api_writes_per_s",
    "rss_per_host_kib",
    "rss_end_per_host_kib",
    "workers_rss_mib",
    "instances",
)


@dataclass(slots=True)
class _Window:
    config: str
    seconds: float = 0.0
    primary: dict[str, float | None] = dataclasses.field(default_factory=dict)
    replica: list[dict[str, float | None]] = dataclasses.field(default_factory=list)
    data_selects: int = 0
    causal_selects: int = 0
    lag: list[float] = dataclasses.field(default_factory=list)
    tallies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    writes: int = 0


class _Sampler(threading.Thread):
    """Every 0.2 s: the worst replica's heartbeat lag; every 1 s: the primary's tagged history."""

    def __init__(self, db: Database, tagged: TaggedStatements) -> None:
        super().__init__(name="fleet-sampler", daemon=True)
        self.db, self.tagged = db, tagged
        self.window: _Window | None = None
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.error: str | None = None

    def poll(self) -> None:
        events = self.tagged.poll()
        with self.lock:
            if self.window is not None:
                self.window.data_selects += sum(1 for e in events if e.is_data_read)
                self.window.causal_selects += sum(
                    1 for e in events if e.is_select and e.route == "causal"
                )

    def run(self) -> None:
        tick = 0
        while not self.stop.wait(0.2):
            try:
                lags = [r.lag for r in self.db.guard.readings().values() if r.lag is not None]
                with self.lock:
                    if self.window is not None and lags:
                        self.window.lag.append(max(lags) * 1000)
                tick += 1
                if tick % 5 == 0:
                    self.poll()
            except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                self.error = str(exc).splitlines()[0]


def _settings(scratch: Scratch, *, with_replica: bool, max_lag: float) -> Settings:
    settings = scratch.settings(with_replica=with_replica, compute=ComputeSettings())
    return dataclasses.replace(
        settings, replica=dataclasses.replace(settings.replica, max_lag=max_lag)
    )


def _window(
    config: str,
    seconds: float,
    pipes: list[Connection],
    sampler: _Sampler,
    meters: list[ServerMeter],
    writer: ApiWriteLoad,
) -> _Window:
    """One lock-step window: counters, go, every worker's tally, counters again."""
    window = _Window(config)
    sampler.poll()
    before = [m.read() for m in meters]
    writes = writer.writes
    with sampler.lock:
        sampler.window = window
    for pipe in pipes:
        pipe.send({"config": config, "seconds": seconds})
    window.tallies = [pipe.recv() for pipe in pipes]
    sampler.poll()
    with sampler.lock:
        sampler.window = None
    after = [m.read() for m in meters]
    window.writes = writer.writes - writes
    window.seconds = after[0].at - before[0].at
    window.primary = after[0].rates(before[0])
    window.replica = [a.rates(b) for a, b in zip(after[1:], before[1:], strict=True)]
    return window


@dataclass(frozen=True, slots=True)
class _Memory:
    """The worker processes' RSS (KiB), summed: growth once the hosts were built, at the end."""

    built_growth: int
    end_growth: int
    end_total: int


def _point(
    params: FleetParams,
    scratch: Scratch,
    servers: Servers,
    hosts: int,
    progress: Callable[[str], None],
) -> tuple[list[_Window], _Memory]:
    names = host_names(hosts)
    groups = split_hosts(names, params.processes)
    threads = max(2, min(params.threads, max(len(g) for g in groups)))
    replica = _settings(scratch, with_replica=True, max_lag=params.max_lag)
    primary = _settings(scratch, with_replica=False, max_lag=params.max_lag)
    context = multiprocessing.get_context("spawn")
    pipes = []
    processes = []
    for index, group in enumerate(groups):
        parent_end, child_end = context.Pipe()
        plan = WorkerPlan(
            tuple(group), replica, primary, params.time_factor, threads, params.seed + index
        )
        process = context.Process(target=run_worker, args=(plan, child_end), daemon=True)
        process.start()
        pipes.append(parent_end)
        processes.append(process)
    admin = servers.admin_engine()
    replica_admins = servers.replica_admin_engines()
    monitor = Database(replica)
    sampler = _Sampler(monitor, TaggedStatements(admin, scratch.name))
    api = create_engine(scratch.url(), pool_size=1)
    writer = ApiWriteLoad(api, params.write_rate)
    windows: list[_Window] = []
    try:
        ready = [pipe.recv() for pipe in pipes]
        progress(f"fleet: {hosts} hosts in {len(groups)} processes ({threads} threads each) ready")
        meters = [ServerMeter(admin)] + [ServerMeter(e) for e in replica_admins]
        sampler.tagged.skip()
        sampler.start()
        writer.start()
        plan_windows = [("warmup", params.warmup)] + [
            (config, params.window)
            for _ in range(params.pairs)
            for config in ("replica", "primary")
        ]
        for config, seconds in plan_windows:
            window = _window(config, seconds, pipes, sampler, meters, writer)
            windows.append(window)
            progress(
                f"fleet: {hosts} hosts, {config} window {window.seconds:.1f} s: "
                f"{window.data_selects} task data SELECTs on the primary, "
                f"{sum(t['runs'] for t in window.tallies)} runs"
            )
        for pipe in pipes:
            pipe.send(None)
        final = [pipe.recv() for pipe in pipes]
        memory = _Memory(
            sum(r["hosts_rss_kib"] - r["base_rss_kib"] for r in ready),
            sum(f["end_rss_kib"] - f["base_rss_kib"] for f in final),
            sum(f["end_rss_kib"] for f in final),
        )
    finally:
        writer.stop.set()
        sampler.stop.set()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        monitor.dispose()
        api.dispose()
        admin.dispose()
        for engine in replica_admins:
            engine.dispose()
    if writer.error:
        raise ConfigError(f"the API write load failed: {writer.error}")
    return windows, memory


def _row(
    hosts: int,
    config: str,
    params: FleetParams,
    windows: list[_Window],
    memory: _Memory,
    instances: int,
) -> dict[str, Any]:
    chosen = [w for w in windows if w.config == config]
    seconds = sum(w.seconds for w in chosen)

    def weighted(key: str, part: Callable[[_Window], dict[str, float | None]]) -> float | None:
        values = [(part(w).get(key), w.seconds) for w in chosen]
        if any(v is None for v, _ in values):
            return None
        return sum(float(v or 0) * s for v, s in values) / seconds

    tallies = [t for w in chosen for t in w.tallies]
    durations = [d * 1000 for t in tallies for ds in t["durations"].values() for d in ds]
    lag = [v for w in chosen for v in w.lag]

    def replica_each(key: str) -> list[float | None]:
        if not chosen or not chosen[0].replica:
            return []
        return [
            weighted(key, functools.partial(_nth_replica, index=i))
            for i in range(len(chosen[0].replica))
        ]

    def replica_sum(key: str) -> float | None:
        per = replica_each(key)
        if not per or any(p is None for p in per):
            return None
        return sum(float(p or 0) for p in per)

    return {
        "hosts": hosts,
        "config": config,
        "replicas": params.replicas,
        "time_factor": params.time_factor,
        "windows": len(chosen),
        "seconds": round(seconds, 1),
        "primary_statements_per_s": _r(weighted("statements_per_s", lambda w: w.primary)),
        "primary_selects_per_s": _r(weighted("selects_per_s", lambda w: w.primary)),
        "primary_data_selects_per_s": _r(sum(w.data_selects for w in chosen) / seconds),
        "primary_causal_selects_per_s": _r(sum(w.causal_selects for w in chosen) / seconds),
        "replica_selects_per_s": _r(replica_sum("selects_per_s")),
        # one figure per replica (Com_select): several replicas share the reads
        "replica_selects_per_s_each": ";".join(
            "-" if v is None else f"{v:.1f}" for v in replica_each("selects_per_s")
        ),
        "primary_cpu_s_per_s": _r(weighted("cpu_s_per_s", lambda w: w.primary), 3),
        "replica_cpu_s_per_s": _r(replica_sum("cpu_s_per_s"), 3),
        "task_runs": sum(t["runs"] for t in tallies),
        "task_overruns": sum(t["overruns"] for t in tallies),
        "task_missed": sum(t["missed"] for t in tallies),
        "task_errors": sum(t["errors"] for t in tallies),
        "task_error_kinds": _kinds(tallies),
        "task_run_p50_ms": _r(percentile(durations, 50)),
        "task_run_p99_ms": _r(percentile(durations, 99)),
        "fallbacks": sum(t["fallbacks"] for t in tallies),
        "rejected_writes": sum(t["rejected"] for t in tallies),
        "replica_lag_p50_ms": _r(percentile(lag, 50)),
        "replica_lag_p99_ms": _r(percentile(lag, 99)),
        "replica_lag_max_ms": _r(max(lag, default=None)),
        "api_writes_per_s": _r(sum(w.writes for w in chosen) / seconds),
        "rss_per_host_kib": round(memory.built_growth / hosts, 1),
        "rss_end_per_host_kib": round(memory.end_growth / hosts, 1),
        "workers_rss_mib": round(memory.end_total / 1024, 1),
        "instances": instances,
    }


def _kinds(tallies: list[dict[str, Any]]) -> str:
    """Errors by exception class, ``Deadlock:3;ConnectionLost:1`` (empty: none)."""
    kinds: Counter[str] = Counter()
    for tally in tallies:
        kinds.update(tally["error_kinds"])
    return ";".join(f"{name}:{count}" for name, count in sorted(kinds.items()))


def _nth_replica(window: _Window, *, index: int) -> dict[str, float | None]:
    return window.replica[index]


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _per_task(windows: list[_Window], config: str) -> dict[str, tuple[float | None, float | None]]:
    durations: dict[str, list[float]] = defaultdict(list)
    for window in windows:
        if window.config == config:
            for tally in window.tallies:
                for name, values in tally["durations"].items():
                    durations[name].extend(v * 1000 for v in values)
    return {n: (percentile(v, 50), percentile(v, 99)) for n, v in sorted(durations.items())}


@dataclass(slots=True)
class Sweep:
    """The sweep's rows and what the note needs besides them."""

    rows: list[dict[str, Any]]
    tasks: dict[int, dict[str, dict[str, tuple[float | None, float | None]]]]
    #: host count -> (instances it added, seconds to seed them and see them replicated)
    seeded: dict[int, tuple[int, float]] = dataclasses.field(default_factory=dict)


def _grow(scratch: Scratch, params: FleetParams, have: int, want: int) -> tuple[int, float]:
    """Seed hosts ``have + 1`` .. ``want``, ``seed_block`` per transaction; wait for the replicas.

    Returns the instances added and the seconds it took, replication included.
    """
    began = time.monotonic()
    added = 0
    with scratch.database() as db:
        for first in range(have, want, params.seed_block):
            count = min(params.seed_block, want - first)
            summary = seed(
                db,
                instances=count * params.instances_per_host,
                hosts=count,
                seed=params.seed + first,  # other uuids for every block
                first_host=first,
            )
            added += summary.instances
        db.wait_for_replicas(timeout=600)
    return added, time.monotonic() - began


def sweep(
    params: FleetParams,
    servers: Servers,
    progress: Callable[[str], None],
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> Sweep:
    """Each host count in turn: seed the hosts it adds, then its windows.

    ``on_rows`` gets the rows so far after each host count (a long sweep keeps them).
    """
    if not params.hosts or min(params.hosts) < 1:
        raise ConfigError("host counts must be positive", hint="e.g. --hosts 10,50,200")
    result = Sweep([], {})
    with Scratch(servers, "fleet") as scratch:
        seeded_hosts = instances = 0
        for hosts in sorted(set(params.hosts)):
            added, seconds = _grow(scratch, params, seeded_hosts, hosts)
            seeded_hosts, instances = hosts, instances + added
            result.seeded[hosts] = (added, seconds)
            progress(
                f"fleet: seeded {added:,} instances for hosts up to {hosts} "
                f"({instances:,} in all), replicated, in {seconds:.1f} s"
            )
            windows, memory = _point(params, scratch, servers, hosts, progress)
            result.tasks[hosts] = {c: _per_task(windows, c) for c in ("replica", "primary")}
            for config in ("replica", "primary"):
                result.rows.append(_row(hosts, config, params, windows, memory, instances))
            if on_rows is not None:
                on_rows(result.rows)
    return result


def _size_buffer_pools(servers: Servers, size: int) -> None:
    """Every server's buffer pool at least ``size`` bytes (set at run time; resized in place).

    A database server holds its working set in memory; the testbed's 128 MiB would make a
    large fleet's seeding and reads go to disk.  Only the sweep's own testbed is resized.
    """
    for engine in [servers.admin_engine(), *servers.replica_admin_engines()]:
        try:
            with engine.connect() as conn:
                current = int(conn.execute(text("SELECT @@innodb_buffer_pool_size")).scalar_one())
                if current < size:
                    conn.execute(text(f"SET GLOBAL innodb_buffer_pool_size = {int(size)}"))
        finally:
            engine.dispose()


def run_fleet(
    params: FleetParams, out: Path, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Run the sweep on a testbed of its own; write fleet.csv, fleet.md, fleet.png in ``out``."""
    load_before = os.getloadavg()[0]
    directory = Path(tempfile.mkdtemp(prefix="offload-fleet-"))
    topology = NativeTopology(directory, port=0, replicas=params.replicas, bind_to_parent=True)
    started = time.monotonic()
    try:
        info = topology.up()
        servers = Servers.from_testbed(info)
        progress(f"fleet: testbed up ({info.server}, {params.replicas} replica(s), free ports)")
        pool = buffer_pool_bytes(max(params.hosts) * params.instances_per_host)
        _size_buffer_pools(servers, pool)
        progress(f"fleet: InnoDB buffer pools of {pool // 2**20} MiB, for the largest count's data")
        out.mkdir(parents=True, exist_ok=True)
        result = sweep(
            params, servers, progress, on_rows=lambda rows: write_csv(out / "fleet.csv", rows)
        )
    finally:
        topology.down()
        shutil.rmtree(directory, ignore_errors=True)
    elapsed = time.monotonic() - started
    from offload.fleet.report import write_outputs  # noqa: PLC0415 - matplotlib only here

    write_outputs(
        out,
        result,
        params,
        server=info.server,
        seconds=elapsed,
        load=(load_before, os.getloadavg()[0]),
    )
    progress(f"fleet: {elapsed:.0f} s in all; fleet.csv, fleet.md, fleet.png in {out}")
    return result.rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
