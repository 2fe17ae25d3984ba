"""lag.png: replication lag over time, with what the tasks did about it.

Top panel — heartbeat lag of each replica (a line per replica), the ``max_lag``
line, the injections as shaded spans, and one marker per task run at the
moment it chose its route:

* green dot: read a replica within max_lag (at the staleness of what it read);
* red dot: read a replica beyond max_lag (``lag_policy = stale``);
* orange triangle: fell back to the primary (at the best replica's lag then);
* grey cross: skipped (``lag_policy = skip``).

Bottom panel — guarded writes the primary rejected, per run (bars), and the
GTID distance of each replica (transactions received but not applied).

Rendered with matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from offload.experiments.records import Event, RunRow, Sample, replicas_in

__all__ = ["plot_experiment"]

_SPAN_COLORS = {
    "pause": "#9ecae1",
    "delay": "#fdd0a2",
    "burst": "#c7e9c0",
    "kill-replica": "#d9d9d9",
    "link": "#dadaeb",
    "cut": "#fc9272",
}
_LINE_COLORS = ("#1f77b4", "#9467bd", "#8c564b", "#e377c2")
_ROUTE_STYLE = {
    "replica": ("o", "#2ca02c", "replica read (within max_lag)"),
    "stale": ("o", "#d62728", "stale replica read (beyond max_lag)"),
    "primary": ("v", "#ff7f0e", "fallback to the primary"),
    "skip": ("x", "#7f7f7f", "skipped run"),
}


def _route_y(run: RunRow) -> float | None:
    if run.route in ("replica", "stale"):
        return run.staleness
    if run.route in ("primary", "skip"):
        return run.decision_lag if run.decision_lag is not None else 0.0
    return None


def _spans(axes: Sequence[Axes], events: Sequence[Event], duration: float) -> None:
    """The injections as shaded spans on every panel, labelled on the first."""
    top = axes[0]
    seen: set[str] = set()
    for event in events:
        end = event.end if event.end is not None else duration
        end = max(end, event.t + duration / 400)  # instantaneous ones stay visible
        label = None if event.kind in seen else event.kind
        seen.add(event.kind)
        for axis in axes:
            axis.axvspan(
                event.t,
                end,
                color=_SPAN_COLORS.get(event.kind, "#eeeeee"),
                alpha=0.6,
                lw=0,
                label=label if axis is top else None,
            )
        top.annotate(
            event.label,
            (event.t, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -12),
            textcoords="offset points",
            fontsize=8,
            color="#444444",
        )


def _lag_lines(top: Axes, twin: Axes, samples: Sequence[Sample]) -> float:
    """Each replica's lag (top) and GTID distance (twin); returns the highest lag."""
    peak = 0.0
    for index, replica in enumerate(replicas_in(samples)):
        rows = [s for s in samples if s.replica == replica]
        color = _LINE_COLORS[index % len(_LINE_COLORS)]
        lags = [s.lag if s.lag is not None else math.nan for s in rows]
        top.plot([s.t for s in rows], lags, color=color, lw=1.4, label=f"{replica} heartbeat lag")
        down = [s.t for s in rows if not s.reachable]
        if down:
            top.plot(
                down, [0.0] * len(down), "|", color=color, ms=8, label=f"{replica} unreachable"
            )
        peak = max([peak, *(lag for lag in lags if not math.isnan(lag))])
        distances = [(s.t, s.gtid_distance) for s in rows if s.gtid_distance is not None]
        if distances:
            twin.plot(
                [t for t, _ in distances],
                [d for _, d in distances],
                color=color,
                lw=1,
                alpha=0.8,
                ls=":",
                label=f"{replica} GTID distance",
            )
    return peak


def _run_markers(top: Axes, runs: Sequence[RunRow]) -> float:
    """One marker per run at its route's height; returns the highest."""
    peak = 0.0
    for route, (marker, color, label) in _ROUTE_STYLE.items():
        points = [
            (r.t, y) for r in runs if r.route == route for y in [_route_y(r)] if y is not None
        ]
        if points:
            top.scatter(
                [t for t, _ in points],
                [y for _, y in points],
                marker=marker,
                s=18,
                color=color,
                alpha=0.75,
                zorder=3,
                label=f"{label} ({len(points)})",
            )
            peak = max([peak, *(y for _, y in points)])
    return peak


def plot_experiment(
    samples: Sequence[Sample],
    runs: Sequence[RunRow],
    events: Sequence[Event],
    *,
    max_lag: float,
    duration: float,
    title: str,
    path: Path,
) -> Path:
    """Draw the two panels into ``path`` (PNG)."""
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(14, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    try:
        twin = bottom.twinx()
        _spans((top, bottom), events, duration)
        peak = max(max_lag, _lag_lines(top, twin, samples), _run_markers(top, runs))
        top.axhline(max_lag, color="#d62728", ls="--", lw=1.2, label=f"max_lag {max_lag:g} s")
        top.set_ylim(0, peak * 1.12 + 0.05)
        top.set_ylabel("seconds behind the primary")
        top.set_title(title, fontsize=11)
        top.grid(alpha=0.3)
        top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.9)

        rejected = [(r.end, r.rejected) for r in runs if r.rejected]
        if rejected:
            bottom.bar(
                [t for t, _ in rejected],
                [n for _, n in rejected],
                width=max(duration / 300, 0.05),
                color="#d62728",
                label=f"rejected guarded writes ({sum(n for _, n in rejected)})",
            )
        bottom.set_ylabel("rejected writes per run", fontsize=9)
        bottom.set_xlabel("seconds since the start of the experiment")
        bottom.set_xlim(0, duration)
        bottom.grid(alpha=0.3)
        twin.set_ylabel("GTID distance (transactions)", fontsize=9)
        twin.set_ylim(bottom=0)
        handles, labels = bottom.get_legend_handles_labels()
        more_handles, more_labels = twin.get_legend_handles_labels()
        if handles or more_handles:
            bottom.legend(
                handles + more_handles,
                labels + more_labels,
                loc="upper left",
                bbox_to_anchor=(1.08, 1.0),
                fontsize=8,
                framealpha=0.9,
            )
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)
    return path
