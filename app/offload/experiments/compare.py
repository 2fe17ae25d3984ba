"""``offload lag compare DIR...``: experiments side by side, one column each.

Reads each directory's ``summary.json`` and prints (a rich table) the settings that differ
and the figures that matter — staleness, where reads went, what the primary
paid, what the guard refused — so a trade-off (``max_lag`` 0.1 against 1.0,
``lag_policy`` primary against stale) reads across one line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from offload.bench.report import Table
from offload.errors import ConfigError

__all__ = ["ROWS", "compare", "load_summary", "render_comparison"]

Summary = Mapping[str, Any]


def load_summary(directory: Path) -> dict[str, Any]:
    """The summary.json of an experiment directory (ConfigError if there is none)."""
    path = directory / "summary.json" if directory.is_dir() else directory
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist", hint="give directories written by `offload lag run --out DIR`"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if "experiment" not in data or "all" not in data:
        raise ConfigError(f"{path} is not an experiment summary")
    return data


def _seconds(value: object) -> str:
    return "-" if value is None else f"{float(value):.3f}"  # type: ignore[arg-type]


def _percent(value: object) -> str:
    return "-" if value is None else f"{float(value) * 100:.1f}%"  # type: ignore[arg-type]


def _lag(key: str) -> Callable[[Summary], str]:
    def get(summary: Summary) -> str:
        values = [s[key] for s in summary["lag"].values() if s.get(key) is not None]
        return _seconds(max(values)) if values else "-"

    return get


def _reasons(summary: Summary) -> str:
    reasons = summary["all"]["fallbacks_by_reason"]
    return ", ".join(f"{k} {v}" for k, v in reasons.items()) or "-"


#: (label, how to read it from a summary)
ROWS: tuple[tuple[str, Callable[[Summary], str]], ...] = (
    ("scenario", lambda s: str(s["experiment"].get("scenario"))),
    ("max_lag s", lambda s: f"{s['experiment'].get('max_lag'):g}"),
    ("lag_policy", lambda s: str(s["experiment"].get("lag_policy"))),
    ("causal_reads", lambda s: "on" if s["experiment"].get("causal_reads") else "off"),
    ("write rate /s", lambda s: f"{s['experiment'].get('write_rate'):g}"),
    ("duration s", lambda s: f"{s['experiment'].get('duration'):g}"),
    ("replica lag p50 s", _lag("lag_p50")),
    ("replica lag max s", _lag("lag_max")),
    ("task runs", lambda s: str(s["all"]["runs"])),
    ("  read a fit replica", lambda s: _percent(s["all"]["replica_share"])),
    ("  read a stale replica", lambda s: _percent(s["all"]["stale_share"])),
    ("  fell back to primary", lambda s: _percent(s["all"]["primary_share"])),
    ("  skipped", lambda s: _percent(s["all"]["skip_share"])),
    ("staleness p50 s", lambda s: _seconds(s["all"]["staleness_p50"])),
    ("staleness p99 s", lambda s: _seconds(s["all"]["staleness_p99"])),
    ("staleness max s", lambda s: _seconds(s["all"]["staleness_max"])),
    ("reads older than max_lag", lambda s: str(s["all"]["stale_data_reads"])),
    ("rejected guarded writes", lambda s: str(s["all"]["rejected_writes"])),
    ("fallbacks by reason", _reasons),
    ("primary reads (SELECTs)", lambda s: str(s["all"]["primary_reads"])),
    ("primary statements", lambda s: str(s["all"]["primary_statements"])),
    ("replica SELECTs", lambda s: str(s["all"]["replica_selects"])),
    ("failed runs", lambda s: str(s["all"]["errors"])),
)


def render_comparison(names: Sequence[str], summaries: Sequence[Summary]) -> Table:
    """One row per figure, one column per experiment ('?' where a summary lacks it)."""
    rows = [[label, *(_safe(read, s) for s in summaries)] for label, read in ROWS]
    return Table("Lag experiments side by side", ["", *names], rows)


def _safe(read: Callable[[Summary], str], summary: Summary) -> str:
    try:
        return read(summary)
    except (KeyError, TypeError, ValueError):
        return "?"


def compare(directories: Sequence[Path]) -> Table:
    """The comparison of the experiments in ``directories``, ready to print."""
    if not directories:
        raise ConfigError("give at least one experiment directory")
    summaries = [load_summary(d) for d in directories]
    names = [d.name or str(d) for d in directories]
    if len(set(names)) < len(names):
        names = [str(d) for d in directories]
    return render_comparison(names, summaries)
