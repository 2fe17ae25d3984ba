"""matrix.csv, matrix.md, matrix.json and matrix.png from the cells' rows.

``render_markdown`` is pure (unit-tested); ``plot_matrix`` draws the heatmap with
matplotlib's Agg backend (the ``lab`` extra), imported only when it runs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from offload.experiments.records import write_csv
from offload.extras import require
from offload.matrix.run import CellResult

__all__ = ["HEADER", "OUTPUTS", "by_setting", "render_markdown", "table_rows", "write_matrix"]

#: the files of a matrix (besides cells/)
OUTPUTS = ("matrix.csv", "matrix.md", "matrix.json", "matrix.png")
#: matrix.md's columns, per knob setting
HEADER = (
    "RTT ms",
    "writes/s asked",
    "writes/s done",
    "lag p50 ms",
    "lag p99 ms",
    "lag max ms",
    "s > max_lag",
    "task runs",
    "fallbacks",
    "stale refused",
    "rejected writes",
    "commit p50 ms",
    "commit p99 ms",
    "primary tx/s",
    "applied tx/s",
)


def _n(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.0f}"


def by_setting(rows: Sequence[CellResult]) -> dict[str, list[CellResult]]:
    """Rows grouped by knob setting, in the order they were run."""
    groups: dict[str, list[CellResult]] = {}
    for row in rows:
        groups.setdefault(row.setting, []).append(row)
    return groups


def table_rows(rows: Sequence[CellResult]) -> list[list[str]]:
    """One line per cell: the HEADER's columns."""
    return [
        [
            f"{r.rtt_ms:g}",
            f"{r.write_rate:g}",
            _n(r.writes_per_s),
            _ms(r.lag_p50),
            _ms(r.lag_p99),
            _ms(r.lag_max),
            _n(r.seconds_over_max_lag),
            str(r.task_runs),
            str(r.fallbacks),
            str(r.stale_refused),
            str(r.rejected_writes),
            _n(r.commit_p50_ms),
            _n(r.commit_p99_ms),
            _n(r.primary_tps),
            _n(r.applied_tps),
        ]
        for r in rows
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def render_markdown(rows: Sequence[CellResult], meta: Mapping[str, Any]) -> str:
    """matrix.md: what ran where, then one table per knob setting, then the definitions."""
    machine = meta.get("machine", {})
    lines = [
        f"# Lag matrix: {meta.get('grid', '?')}",
        "",
        f"- server **{meta.get('server', '?')}**, one primary and {meta.get('replicas', 1)} "
        "replica(s) on one machine (native testbed), each replica behind offload's link proxy",
        f"- machine: {machine.get('cpus', '?')} CPUs ({machine.get('cpu', '?')}), "
        f"{machine.get('memory_gib', '?')} GiB RAM, {machine.get('os', '?')}; load average "
        f"{meta.get('load_before', '?')} before the run, {meta.get('load_after', '?')} after "
        "(a shared, loaded machine makes every figure an upper bound)",
        f"- each cell: {meta.get('cell_seconds', '?')} s of the `offload lag` workload at the "
        f"cell's write rate, every periodic task every {meta.get('task_interval', '?')} s on "
        f"{meta.get('instances', '?')} seeded instances; max_lag "
        f"{meta.get('max_lag', '?')} s, lag_policy {meta.get('lag_policy', '?')}",
        f"- {len(rows)} cells in {meta.get('seconds', '?')} s (testbed start included: "
        f"{meta.get('testbed_seconds', '?')} s), started {meta.get('started_at', '?')}",
        "",
    ]
    for setting, group in by_setting(rows).items():
        lines += [f"## {setting}", ""]
        lines += _table(HEADER, table_rows(group))
        lines.append("")
    lines += [
        "RTT: the link's round trip (half of it added each way by the proxy).  "
        f"Lag: the replica's heartbeat lag (a heartbeat every "
        f"{_ms(meta.get('heartbeat_interval'))} ms, so exact to that), sampled every "
        f"{_n(1e3 * float(meta.get('sample_interval', 0.0)))} ms.  s > max_lag: seconds the "
        "replica spent beyond max_lag.  Fallbacks: replica reads the staleness guard sent "
        "to the primary (any reason); stale refused: those refused because the replica was "
        "beyond max_lag.  Rejected writes: guarded writes the primary refused because the "
        "row had changed since the task read it (a stale replica copy, or the workload's "
        "own write in between).  Commit: the workload's transactions, BEGIN to COMMIT "
        "returned (semi-sync's acknowledgement and group commit's wait included).  Primary "
        "and applied tx/s: transactions the primary committed and the replica applied per "
        "second of the cell, counted from their GTID positions (heartbeat and task writes "
        "included).  Writes/s done below writes/s asked: the one writer could not go "
        "faster (its commits took longer than 1/rate).",
        "",
    ]
    return "\n".join(lines)


def plot_matrix(rows: Sequence[CellResult], path: Path, *, title: str, max_lag: float) -> Path:
    """matrix.png: lag p99 (ms) over RTT x write rate, one panel per knob setting."""
    import matplotlib  # noqa: PLC0415 - the lab extra, only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.colors import Normalize  # noqa: PLC0415

    groups = by_setting(rows)
    rtts = sorted({r.rtt_ms for r in rows})
    rates = sorted({r.write_rate for r in rows})
    values = [r.lag_p99 * 1e3 for r in rows if r.lag_p99 is not None]
    norm = Normalize(vmin=0.0, vmax=max([*values, max_lag * 1e3, 1.0]))
    figure, axes = plt.subplots(
        1, len(groups), figsize=(3.4 * len(groups) + 1.4, 0.55 * len(rtts) + 2.4), squeeze=False
    )
    image = None
    for axis, (setting, group) in zip(axes[0], groups.items(), strict=True):
        cells = {(r.rtt_ms, r.write_rate): r for r in group}
        grid = [
            [
                cells[(rtt, rate)].lag_p99 * 1e3  # type: ignore[operator]
                if (rtt, rate) in cells and cells[(rtt, rate)].lag_p99 is not None
                else float("nan")
                for rate in rates
            ]
            for rtt in rtts
        ]
        image = axis.imshow(grid, cmap="magma_r", norm=norm, origin="lower", aspect="auto")
        for y, line in enumerate(grid):
            for x, value in enumerate(line):
                text = "-" if value != value else f"{value:.0f}"  # noqa: PLR0124 - NaN test
                dark = value == value and norm(value) > 0.55  # noqa: PLR0124
                axis.text(x, y, text, ha="center", va="center", color="white" if dark else "black")
        axis.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
        axis.set_yticks(range(len(rtts)), [f"{r:g}" for r in rtts])
        axis.set_xlabel("writes/s asked")
        if axis is axes[0][0]:
            axis.set_ylabel("link RTT ms")
        axis.set_title(setting, fontsize=9)
    if image is not None:
        figure.colorbar(image, ax=axes[0].tolist(), label="replica lag p99 (ms)")
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def write_matrix(out: Path, rows: Sequence[CellResult], meta: Mapping[str, Any]) -> dict[str, Path]:
    """The matrix files in ``out``: CSV, Markdown, JSON (meta and rows), heatmap."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"matrix.csv": write_csv(out / "matrix.csv", rows, CellResult)}
    files["matrix.md"] = out / "matrix.md"
    files["matrix.md"].write_text(render_markdown(rows, meta), encoding="utf-8")
    files["matrix.json"] = out / "matrix.json"
    document = {"matrix": dict(meta), "cells": [dataclasses.asdict(r) for r in rows]}
    files["matrix.json"].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    require("matplotlib", purpose="matrix.png (`offload lag matrix`)")
    files["matrix.png"] = plot_matrix(
        rows,
        out / "matrix.png",
        title=f"replica lag p99 - {meta.get('server', '?')}, {meta.get('cell_seconds', '?')} s "
        f"a cell, max_lag {meta.get('max_lag', '?')} s",
        max_lag=float(meta.get("max_lag", 0.0)),
    )
    return files
