"""``offload lag matrix``: options → a grid, a testbed (its own, or a native one's config),
a line per cell, the files at the end."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from offload.config import LagPolicy, ReplicaSettings, Settings, load_settings
from offload.errors import ConfigError
from offload.experiments.commands import terminal
from offload.experiments.provision import topology_of
from offload.extras import require
from offload.matrix.grid import Cell, Grid
from offload.matrix.report import OUTPUTS, write_matrix
from offload.matrix.run import CellResult, MatrixPlan, MatrixRun, run_matrix
from offload.testbed.native import NativeTopology
from offload.testbed.own import OwnTestbed

__all__ = ["DEFAULT_CELL_SECONDS", "DEFAULT_MAX_LAG", "DEFAULT_OUT", "matrix_command"]

DEFAULT_OUT = "matrix-results"
DEFAULT_CELL_SECONDS = 12.0
#: the matrix's max_lag: link RTTs are tens of milliseconds
DEFAULT_MAX_LAG = 0.1


def grid_from(args: argparse.Namespace) -> Grid:
    return Grid.parse(
        rtt=args.rtt,
        write_rate=args.write_rate,
        workers=args.workers,
        semi_sync=args.semi_sync,
        group_commit=args.group_commit,
    )


def plan_from(args: argparse.Namespace) -> MatrixPlan:
    if not 2 <= args.cell_seconds <= 3600:
        raise ConfigError(
            f"--cell-seconds {args.cell_seconds:g} is out of range", hint="use 2 to 3600"
        )
    return MatrixPlan(
        grid=grid_from(args),
        cell_seconds=args.cell_seconds,
        task_interval=args.task_interval,
        instances=args.instances,
    )


def _replica(args: argparse.Namespace, base: ReplicaSettings) -> ReplicaSettings:
    if not 0 < args.max_lag < 3600:
        raise ConfigError(f"--max-lag {args.max_lag:g} is out of range", hint="use e.g. 0.1")
    return dataclasses.replace(base, max_lag=args.max_lag, lag_policy=LagPolicy.PRIMARY)


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _line(index: int, total: int, cell: Cell, row: CellResult | None) -> str:
    head = (
        f"[{index + 1}/{total}] RTT {cell.rtt * 1e3:g} ms, {cell.write_rate:g} writes/s, "
        f"{cell.setting}"
    )
    if row is None:
        return head
    p99 = "-" if row.lag_p99 is None else f"{row.lag_p99 * 1e3:.0f} ms"
    commit = "-" if row.commit_p99_ms is None else f"{row.commit_p99_ms:.1f} ms"
    return (
        f"{head}: lag p99 {p99}, {row.fallbacks} fallbacks, commit p99 {commit}, "
        f"{row.writes_per_s:g} writes/s done, {row.applied_tps or 0:g} tx/s applied"
    )


def _run(
    console: Console,
    settings: Settings,
    plan: MatrixPlan,
    out: Path,
    topology: NativeTopology,
) -> MatrixRun:
    def on_cell(index: int, total: int, cell: Cell, row: CellResult | None) -> None:
        console.print(_line(index, total, cell, row))

    return run_matrix(settings, plan, out, topology=topology, on_cell=on_cell)


def matrix_command(args: argparse.Namespace, settings: Settings) -> int:
    """``offload lag matrix``: on the native testbed of ``--config``, else on one of its own."""
    plan = plan_from(args)  # usage errors before any server starts
    _replica(args, settings.replica)
    require("matplotlib", purpose="`offload lag matrix` (matrix.png)")
    out = Path(args.out)
    for name in OUTPUTS:  # never mix the files of two runs
        (out / name).unlink(missing_ok=True)
    console = terminal()
    cells = len(plan.grid.cells())
    console.print(f"lag matrix: {plan.grid.describe()} = {cells} cells of {plan.cell_seconds:g} s")
    started, clock, load_before = datetime.now(UTC), time.monotonic(), _load()
    if args.matrix_config:
        existing = load_settings(Path(args.matrix_config), os.environ)
        topology = topology_of(existing)
        if topology is None:
            raise ConfigError(
                f"{args.matrix_config} is not a native testbed's config",
                hint="the matrix shapes the replicas' links: use a native testbed "
                "(`offload testbed up --backend native`), or run without --config",
            )
        configured = dataclasses.replace(existing, replica=_replica(args, existing.replica))
        testbed_seconds = 0.0
        done = _run(console, configured, plan, out, topology)
    else:
        console.print("starting a testbed of its own (1 replica, free ports); stopped afterwards")
        with OwnTestbed(replicas=1, prefix="offload-matrix-") as own:
            testbed_seconds = time.monotonic() - clock
            configured = own.info.settings(base=Settings(replica=_replica(args, ReplicaSettings())))
            done = _run(console, configured, plan, out, own.topology)
    from offload.bench.runner import machine  # noqa: PLC0415 - platform, metadata: lazily

    meta: dict[str, Any] = {
        "grid": plan.grid.describe(),
        "server": done.server,
        "machine": machine(done.server),
        "replicas": done.replicas,
        "cell_seconds": plan.cell_seconds,
        "task_interval": plan.task_interval,
        "instances": plan.instances,
        "heartbeat_interval": plan.heartbeat_interval,
        "sample_interval": plan.sample_interval,
        "max_lag": args.max_lag,
        "lag_policy": "primary",
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - clock, 1),
        "testbed_seconds": round(testbed_seconds, 1),
        "load_before": load_before,
        "load_after": _load(),
    }
    files = write_matrix(out, done.rows, meta)
    console.print(f"{cells} cells in {meta['seconds']:g} s; written to {out}/: " + ", ".join(files))
    return 0
