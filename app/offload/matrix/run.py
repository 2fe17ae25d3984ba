"""Running the matrix: one testbed, each cell a short lag experiment.

For each cell of the grid, on the same native testbed (servers never restarted):

1. every replica reaches the primary through its link (``offload link``), in every
   cell, so the cells differ only in what the grid varies;
2. ``run_experiment`` runs for ``cell_seconds`` at the cell's write rate a scenario
   of one step, ``link:delay=RTT/2@0..END`` (half the RTT each way; none at RTT 0),
   with the cell's knobs set for the run (``STOP REPLICA``, ``SET GLOBAL
   slave_parallel_threads`` / ``replica_parallel_workers``, semi-sync, group commit,
   ``START REPLICA``; put back afterwards) — the same workload, task schedule, recorder
   and summary as ``offload lag run``; its files go to ``OUT/cells/<cell>/``;
3. a ``GtidWindow`` reads the primary's and the replica's GTID positions when the load
   starts and stops: transactions committed and applied a second, as the servers count
   them.

Each cell becomes one ``CellResult`` row; ``report.py`` writes the matrix files.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import URL

from offload import replication
from offload.config import Settings
from offload.dberrors import unpooled_engine
from offload.errors import ConfigError
from offload.experiments.runner import ExperimentPlan, run_experiment
from offload.experiments.scenarios import Injection, Kind, Scenario
from offload.gtid import gtid_distance
from offload.link.toxics import format_duration
from offload.matrix.grid import Cell, Grid
from offload.testbed.native import NativeTopology

__all__ = [
    "CellResult",
    "GtidWindow",
    "MatrixPlan",
    "MatrixRun",
    "cell_result",
    "cell_scenario",
    "gtid_rates",
    "run_matrix",
]

log = logging.getLogger("offload.matrix")


@dataclass(frozen=True, slots=True)
class MatrixPlan:
    """The grid and what every cell shares."""

    grid: Grid
    #: seconds of load per cell (the measured window)
    cell_seconds: float = 12.0
    task_interval: int = 1
    instances: int = 200
    #: the heartbeat lag is exact to one heartbeat interval: a link's tens of
    #: milliseconds need a fine one (the default 0.1 s would read a 20 ms delay as 0)
    heartbeat_interval: float = 0.02
    #: not a multiple of the heartbeat interval, so the samples fall at every phase of
    #: it (a 100 ms sampler on a 20 ms heartbeat would see the same phase every time)
    sample_interval: float = 0.0937


@dataclass(frozen=True, slots=True)
class CellResult:
    """What one cell measured (the matrix.csv columns; times in seconds)."""

    rtt_ms: float
    write_rate: float
    workers: int
    semi_sync: bool
    group_commit_ms: float
    setting: str
    seconds: float
    lag_p50: float | None
    lag_p99: float | None
    lag_max: float | None
    seconds_over_max_lag: float
    task_runs: int
    fallbacks: int
    stale_refused: int
    rejected_writes: int
    writes_per_s: float
    commit_p50_ms: float | None
    commit_p99_ms: float | None
    primary_tps: float | None
    applied_tps: float | None
    gtid_distance_max: int | None
    out: str


@dataclass(frozen=True, slots=True)
class MatrixRun:
    """The rows, in cell order, and the server they were measured on."""

    rows: list[CellResult]
    #: ``mariadb 11.8.3``, as the primary reports it
    server: str
    replicas: int


def gtid_rates(
    start: tuple[float, str, str], end: tuple[float, str, str], flavor: replication.Flavor
) -> tuple[float | None, float | None]:
    """(time, primary position, replica executed) at both ends → transactions a second
    committed and applied between them (pure)."""
    seconds = end[0] - start[0]
    if seconds <= 0:
        return None, None
    committed = gtid_distance(end[1], start[1], flavor)
    applied = gtid_distance(end[2], start[2], flavor)
    return committed / seconds, applied / seconds


class GtidWindow:
    """GTID positions of the primary and of one replica when the load starts and stops."""

    def __init__(
        self,
        primary: URL,
        replica: URL,
        flavor: replication.Flavor,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flavor = flavor
        self._primary = unpooled_engine(primary, name="primary")
        self._replica = unpooled_engine(replica, name="replica0")
        self._clock = clock
        self.start: tuple[float, str, str] | None = None
        self.end: tuple[float, str, str] | None = None

    def _read(self) -> tuple[float, str, str]:
        with self._primary.connect() as conn:
            committed = replication.gtid_position(conn, self.flavor)
        with self._replica.connect() as conn:
            status = replication.replica_status(conn, self.flavor)
        applied = status.executed_gtid if status is not None else ""
        return self._clock(), committed, applied

    def opened(self) -> None:
        self.start, self.end = self._read(), None

    def closed(self) -> None:
        self.end = self._read()

    def rates(self) -> tuple[float | None, float | None]:
        """Transactions a second the primary committed and the replica applied."""
        if self.start is None or self.end is None:
            return None, None
        return gtid_rates(self.start, self.end, self.flavor)

    def close(self) -> None:
        self._primary.dispose()
        self._replica.dispose()


def _ms(value: object) -> float | None:
    return None if value is None else round(float(value) * 1e3, 3)  # type: ignore[arg-type]


def cell_result(
    cell: Cell,
    summary: dict[str, Any],
    rates: tuple[float | None, float | None],
    *,
    seconds: float,
    out: str,
) -> CellResult:
    """One row from an experiment's summary and the window's GTID rates (pure)."""
    lag: dict[str, Any] = next(iter(summary["lag"].values()), {})
    total = summary["all"]
    workload = summary["experiment"].get("workload", {})
    transactions = int(workload.get("transactions", 0))
    committed, applied = rates
    return CellResult(
        rtt_ms=round(cell.rtt * 1e3, 3),
        write_rate=cell.write_rate,
        workers=cell.workers,
        semi_sync=cell.semi_sync,
        group_commit_ms=round(cell.group_commit * 1e3, 3),
        setting=cell.setting,
        seconds=round(seconds, 3),
        lag_p50=lag.get("lag_p50"),
        lag_p99=lag.get("lag_p99"),
        lag_max=lag.get("lag_max"),
        seconds_over_max_lag=float(lag.get("seconds_above_max_lag", 0.0)),
        task_runs=int(total["runs"]),
        fallbacks=int(total["fallbacks"]),
        stale_refused=int(total["fallbacks_by_reason"].get("lag", 0)),
        rejected_writes=int(total["rejected_writes"]),
        writes_per_s=round(transactions / seconds, 2) if seconds > 0 else 0.0,
        commit_p50_ms=_ms(workload.get("commit_p50")),
        commit_p99_ms=_ms(workload.get("commit_p99")),
        primary_tps=None if committed is None else round(committed, 2),
        applied_tps=None if applied is None else round(applied, 2),
        gtid_distance_max=lag.get("gtid_distance_max"),
        out=out,
    )


def cell_scenario(cell: Cell, seconds: float, replicas: int) -> Scenario:
    """The cell's RTT as link steps over the whole run (steady at RTT 0)."""
    steps = (
        tuple(
            Injection(
                Kind.LINK,
                at=0.0,
                until=seconds,
                replica=index,
                link=f"delay={format_duration(cell.rtt / 2)}",
            )
            for index in range(replicas)
        )
        if cell.rtt
        else ()
    )
    return Scenario(injections=steps, name=cell.name)


def run_matrix(
    settings: Settings,
    plan: MatrixPlan,
    out: Path,
    *,
    topology: NativeTopology,
    on_cell: Callable[[int, int, Cell, CellResult | None], None] | None = None,
) -> MatrixRun:
    """Every cell of ``plan.grid`` on the testbed of ``settings``; rows in cell order.

    ``topology`` is the native testbed (its links are put in the replicas' paths and
    stay there, without toxics, afterwards).  ``on_cell(i, n, cell, None)`` is called
    before a cell, ``on_cell(i, n, cell, row)`` after it.
    """
    settings = dataclasses.replace(
        settings,
        replica=dataclasses.replace(settings.replica, heartbeat_interval=plan.heartbeat_interval),
    )
    admin = settings.testbed.admin_connection
    replica_admins = settings.testbed.replica_admin_connections
    if admin is None or not replica_admins:
        raise ConfigError(
            "the matrix sets the servers' knobs and reads their GTIDs: it needs the "
            "testbed's privileged accounts",
            hint="use a native testbed's config, or run without --config (a testbed of its own)",
        )
    for index in range(len(replica_admins)):
        topology.attach_link(f"replica{index}")
    engine = unpooled_engine(admin, name="primary")
    try:
        with engine.connect() as conn:
            flavor = replication.server_flavor(conn)
    finally:
        engine.dispose()
    cells = plan.grid.cells()
    rows: list[CellResult] = []
    server = flavor.value
    for index, cell in enumerate(cells):
        if on_cell is not None:
            on_cell(index, len(cells), cell, None)
        window = GtidWindow(admin, replica_admins[0], flavor)
        where = out / "cells" / cell.name
        try:
            result = run_experiment(
                settings,
                ExperimentPlan(
                    scenario=cell_scenario(cell, plan.cell_seconds, len(replica_admins)),
                    duration=plan.cell_seconds,
                    write_rate=cell.write_rate,
                    task_interval=plan.task_interval,
                    instances=plan.instances,
                    sample_interval=plan.sample_interval,
                    knobs=cell.knobs,
                ),
                where,
                topology=topology,
                testbed="matrix",
                window=window,
            )
        finally:
            window.close()
        seconds = window.end[0] - window.start[0] if window.start and window.end else 0.0
        row = cell_result(
            cell, result.summary, window.rates(), seconds=seconds, out=str(where.relative_to(out))
        )
        rows.append(row)
        server = str(result.summary["experiment"].get("server", server))
        if on_cell is not None:
            on_cell(index, len(cells), cell, row)
    return MatrixRun(rows, server, len(replica_admins))
