"""The arithmetic of an experiment: percentiles, shares, counts — no I/O, no servers.

``summarize(samples, runs, events, experiment)`` turns the recorded rows into
the ``summary.json`` document; ``render_markdown`` into ``summary.md``.  Both
are pure, so a recorded directory can be summarised again (and is, in the unit
tests).

Definitions:

* *staleness* of a run: the age of the data it read — the replica's heartbeat
  lag when its route was chosen, 0 for the primary; runs that read nothing
  (skipped, failed, no replica read) have none;
* *shares* are over the runs that asked for a replica read (routes replica,
  stale, primary, skip);
* percentiles interpolate linearly between the closest ranks (numpy's default);
* a *stale data read* is a run whose staleness exceeded ``max_lag``: with
  ``lag_policy`` primary or skip there must be none.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from offload.experiments.records import ROUTES, Event, RunRow, Sample, parse_reasons

__all__ = [
    "DECIDED",
    "LAG_HEADER",
    "TASK_HEADER",
    "lag_rows",
    "lag_stats",
    "percentile",
    "render_markdown",
    "run_stats",
    "summarize",
    "task_rows",
    "task_table",
]

#: the routes of runs that asked for a replica read
DECIDED = ("replica", "stale", "primary", "skip")


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {q!r}")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def lag_stats(samples: Sequence[Sample], max_lag: float) -> dict[str, Any]:
    """One replica's samples: lag percentiles, time above max_lag, GTID distance."""
    ordered = sorted(samples, key=lambda s: s.t)
    lags = [s.lag for s in ordered if s.lag is not None]
    above = 0.0
    for before, after in itertools.pairwise(ordered):
        if before.lag is not None and before.lag > max_lag:
            above += after.t - before.t
    distances = [s.gtid_distance for s in ordered if s.gtid_distance is not None]
    return {
        "samples": len(ordered),
        "interval": _round((ordered[-1].t - ordered[0].t) / (len(ordered) - 1))
        if len(ordered) > 1
        else None,
        "lag_p50": _round(percentile(lags, 50)),
        "lag_p99": _round(percentile(lags, 99)),
        "lag_max": _round(max(lags, default=None)) if lags else None,
        "seconds_above_max_lag": round(above, 3),
        "unreachable_samples": sum(not s.reachable for s in ordered),
        "gtid_distance_max": max(distances) if distances else None,
    }


def run_stats(runs: Sequence[RunRow], max_lag: float) -> dict[str, Any]:
    """Counts, shares and staleness percentiles of a group of task runs."""
    routes = Counter(r.route for r in runs)
    decided = sum(routes[r] for r in DECIDED)
    staleness = [r.staleness for r in runs if r.staleness is not None]
    fallbacks: Counter[str] = Counter()
    for run in runs:
        fallbacks.update(parse_reasons(run.reasons))
    return {
        "runs": len(runs),
        "routes": {route: routes[route] for route in ROUTES if routes[route]},
        "decided": decided,
        "replica_share": _share(routes["replica"], decided),
        "stale_share": _share(routes["stale"], decided),
        "primary_share": _share(routes["primary"], decided),
        "skip_share": _share(routes["skip"], decided),
        "staleness_p50": _round(percentile(staleness, 50)),
        "staleness_p99": _round(percentile(staleness, 99)),
        "staleness_max": _round(max(staleness)) if staleness else None,
        "stale_data_reads": sum(1 for s in staleness if s > max_lag),
        "rejected_writes": sum(r.rejected for r in runs),
        "written": sum(r.written for r in runs),
        "fallbacks": sum(r.fallbacks for r in runs),
        "fallbacks_by_reason": dict(sorted(fallbacks.items())),
        "skips": sum(r.skips for r in runs),
        "stale_reads": sum(r.stale_reads for r in runs),
        "causal_waits": sum(r.causal_waits for r in runs),
        "replica_selects": sum(r.replica_selects for r in runs),
        "primary_reads": sum(r.primary_reads for r in runs),
        "primary_writes": sum(r.primary_writes for r in runs),
        "primary_statements": sum(r.primary_statements for r in runs),
        "errors": routes["error"],
    }


def _window(event: Event, duration: float) -> tuple[float, float]:
    end = event.end if event.end is not None else duration
    return event.t, max(end, event.t)


def summarize(
    samples: Sequence[Sample],
    runs: Sequence[RunRow],
    events: Sequence[Event],
    experiment: Mapping[str, Any],
) -> dict[str, Any]:
    """The summary.json document.

    ``experiment`` must hold ``max_lag`` and ``duration``; everything in it is
    copied into the document's ``experiment`` section.
    """
    max_lag = float(experiment["max_lag"])
    duration = float(experiment["duration"])
    by_replica: dict[str, list[Sample]] = {}
    for sample in samples:
        by_replica.setdefault(sample.replica, []).append(sample)
    by_task: dict[str, list[RunRow]] = {}
    for run in sorted(runs, key=lambda r: (r.task, r.t)):
        by_task.setdefault(run.task, []).append(run)
    over = [r for r in runs if r.decision_lag is not None and r.decision_lag > max_lag]
    phases = []
    for event in events:
        start, end = _window(event, duration)
        inside = [r for r in runs if start <= r.t < end]
        lags = [
            s.lag
            for s in samples
            if start <= s.t <= end
            and s.lag is not None
            and (event.target in ("", "primary") or s.replica == event.target)
        ]
        phases.append(
            {
                "label": event.label,
                "kind": event.kind,
                "target": event.target,
                "start": round(start, 3),
                "end": round(end, 3),
                "detail": event.detail,
                "lag_max": _round(max(lags)) if lags else None,
                **{
                    key: value
                    for key, value in run_stats(inside, max_lag).items()
                    if key
                    in (
                        "runs",
                        "routes",
                        "staleness_max",
                        "stale_data_reads",
                        "rejected_writes",
                        "primary_reads",
                    )
                },
            }
        )
    return {
        "experiment": dict(experiment),
        "lag": {name: lag_stats(rows, max_lag) for name, rows in by_replica.items()},
        "all": run_stats(runs, max_lag),
        "tasks": {task: run_stats(rows, max_lag) for task, rows in sorted(by_task.items())},
        "over_max_lag": {
            "runs": len(over),
            "routes": dict(Counter(r.route for r in over)),
            "stale_data_reads": sum(
                1 for r in over if r.staleness is not None and r.staleness > max_lag
            ),
        },
        "phases": phases,
    }


# --- markdown -----------------------------------------------------------------


def _seconds(value: object) -> str:
    return "-" if value is None else f"{float(value):.3f}"  # type: ignore[arg-type]


def _percent(value: object) -> str:
    return "-" if value is None else f"{float(value) * 100:.0f}%"  # type: ignore[arg-type]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return [line(header), rule, *(line(r) for r in rows)]


#: the columns of the per-task table (summary.md and the terminal)
TASK_HEADER = (
    "task",
    "runs",
    "replica",
    "stale",
    "primary",
    "skip",
    "p50 s",
    "p99 s",
    "max s",
    ">max_lag",
    "rejected",
    "primary reads",
    "primary stmts",
)


def _task_row(name: str, stats: Mapping[str, Any]) -> list[str]:
    return [
        name,
        str(stats["runs"]),
        _percent(stats["replica_share"]),
        _percent(stats["stale_share"]),
        _percent(stats["primary_share"]),
        _percent(stats["skip_share"]),
        _seconds(stats["staleness_p50"]),
        _seconds(stats["staleness_p99"]),
        _seconds(stats["staleness_max"]),
        str(stats["stale_data_reads"]),
        str(stats["rejected_writes"]),
        str(stats["primary_reads"]),
        str(stats["primary_statements"]),
    ]


def task_rows(summary: Mapping[str, Any], *, total: str = "all") -> list[list[str]]:
    """The per-task table's rows, the total (named ``total``) last."""
    rows = [_task_row(name, stats) for name, stats in summary["tasks"].items()]
    rows.append(_task_row(total, summary["all"]))
    return rows


def task_table(summary: Mapping[str, Any], *, total: str = "**all**") -> list[str]:
    """The per-task table (markdown), with the total last."""
    return _table(TASK_HEADER, task_rows(summary, total=total))


#: the columns of the per-replica lag table (summary.md and the terminal)
LAG_HEADER = (
    "replica",
    "samples",
    "p50 s",
    "p99 s",
    "max s",
    "s > max_lag",
    "unreachable",
    "max GTID distance",
)


def lag_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """One row per replica: heartbeat lag percentiles, time above max_lag, GTID distance."""
    return [
        [
            name,
            str(s["samples"]),
            _seconds(s["lag_p50"]),
            _seconds(s["lag_p99"]),
            _seconds(s["lag_max"]),
            _seconds(s["seconds_above_max_lag"]),
            str(s["unreachable_samples"]),
            "-" if s["gtid_distance_max"] is None else str(s["gtid_distance_max"]),
        ]
        for name, s in summary["lag"].items()
    ]


def render_markdown(summary: Mapping[str, Any]) -> str:
    """summary.md: the experiment, lag per replica, the per-task table, the phases."""
    exp = summary["experiment"]
    total = summary["all"]
    lines = [
        f"# Lag experiment: `{exp.get('scenario', '?')}`",
        "",
        f"- duration {exp.get('duration')} s, write rate {exp.get('write_rate')}/s, tasks every "
        f"{exp.get('task_interval')} s, {exp.get('instances', '?')} instances",
        f"- max_lag {exp.get('max_lag')} s, lag_policy {exp.get('lag_policy')}, causal_reads "
        f"{exp.get('causal_reads')}; {exp.get('server', exp.get('flavor', '?'))} with "
        f"{exp.get('replicas', '?')} replica(s)",
        f"- {total['runs']} task runs: {total['stale_data_reads']} read data older than "
        f"max_lag, {total['rejected_writes']} guarded writes rejected, "
        f"{total['fallbacks']} fallbacks to the primary "
        f"({', '.join(f'{k} {v}' for k, v in total['fallbacks_by_reason'].items()) or 'none'}),"
        f" {total['skips']} skips",
        "",
        "## Replication lag (heartbeat)",
        "",
    ]
    lines += _table(LAG_HEADER, lag_rows(summary))
    lines += [
        "",
        "## Task runs",
        "",
        "Shares are of the runs that asked for a replica read; staleness is the age "
        "of the data a run read (0 on the primary).",
        "",
    ]
    lines += task_table(summary)
    if summary["phases"]:
        lines += ["", "## Phases", ""]
        phase_rows = [
            [
                p["label"],
                f"{p['start']:.1f}-{p['end']:.1f}",
                str(p["runs"]),
                ", ".join(f"{k} {v}" for k, v in p["routes"].items()) or "-",
                _seconds(p["lag_max"]),
                _seconds(p["staleness_max"]),
                str(p["stale_data_reads"]),
                str(p["rejected_writes"]),
            ]
            for p in summary["phases"]
        ]
        lines += _table(
            (
                "injection",
                "s",
                "runs",
                "routes",
                "max lag s",
                "max staleness s",
                ">max_lag",
                "rejected",
            ),
            phase_rows,
        )
    over = summary["over_max_lag"]
    lines += [
        "",
        f"While the best replica was more than max_lag behind: {over['runs']} runs "
        f"({', '.join(f'{k} {v}' for k, v in over['routes'].items()) or 'none'}), "
        f"{over['stale_data_reads']} of them read data older than max_lag.",
        "",
    ]
    return "\n".join(lines)
