"""What an experiment records, and the CSV files it keeps it in.

Three kinds of rows, each a frozen dataclass whose fields are the CSV columns:

* ``Sample`` — one look at one replica (``samples.csv``, every 100 ms): heartbeat
  lag, reachability, GTID distance, the server's own ``Seconds_Behind``;
* ``RunRow`` — one run of one periodic task (``runs.csv``): where its reads
  went, how stale the data it read was, what the guard and the primary did;
* ``Event`` — one injection as it really happened (``events.csv``): its start
  and end on the experiment's clock.

Times are seconds since the experiment started (monotonic clock).  Empty cells
mean "unknown" (``None``).  Reading and writing are pure file I/O, so summaries
and plots can be rebuilt from a recorded directory.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ROUTES",
    "Event",
    "RunRow",
    "Sample",
    "format_reasons",
    "parse_reasons",
    "read_csv",
    "read_events",
    "read_runs",
    "read_samples",
    "replicas_in",
    "write_csv",
]

#: where a task run's reads went
#: replica: a replica within max_lag; stale: a replica beyond it (lag_policy = stale);
#: primary: fell back to the primary; skip: the run was skipped (lag_policy = skip);
#: none: the run read nothing through READ_REPLICA; error: the run failed
ROUTES = ("replica", "stale", "primary", "skip", "none", "error")


@dataclass(frozen=True, slots=True)
class Sample:
    """One replica, at one moment."""

    t: float
    replica: str
    #: heartbeat lag in seconds (None: unreachable or no heartbeat yet)
    lag: float | None
    reachable: bool
    #: transactions received but not applied (None: status unreadable)
    gtid_distance: int | None = None
    #: Seconds_Behind_Master as the server reports it (never trusted alone)
    seconds_behind: int | None = None
    io_running: str = ""
    sql_running: str = ""


@dataclass(frozen=True, slots=True)
class RunRow:
    """One run of one periodic task."""

    t: float
    end: float
    task: str
    run: str
    route: str
    #: replica read (replica0...), '' when none
    replica: str = ""
    #: age of the data the run read: the replica's heartbeat lag when the route was
    #: chosen; 0 for the primary; None when it read nothing (skip, none, error)
    staleness: float | None = None
    #: the best replica's lag when the route was chosen (None: no decision)
    decision_lag: float | None = None
    #: fallbacks to the primary by reason (lag, unreachable, no_heartbeat,
    #: causal_timeout) as ``reason=count`` joined with ';'
    reasons: str = ""
    fallbacks: int = 0
    skips: int = 0
    stale_reads: int = 0
    causal_waits: int = 0
    #: guarded writes the primary refused / accepted
    rejected: int = 0
    written: int = 0
    items: int = 0
    replica_selects: int = 0
    #: SELECTs of READ_REPLICA/READ_PRIMARY sessions that ran on the primary
    primary_reads: int = 0
    primary_writes: int = 0
    #: every statement of the run on the primary (reads, writes, GTID lookups)
    primary_statements: int = 0
    duration: float = 0.0
    error: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """One injection as it happened."""

    t: float
    #: when it was lifted (None: lasted to the end / instantaneous)
    end: float | None
    kind: str
    label: str
    #: replica0... or 'primary' for a burst
    target: str = ""
    detail: str = ""


Row = TypeVar("Row", Sample, RunRow, Event)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}".rstrip("0").rstrip(".")
    return str(value)


def write_csv(path: Path, rows: Iterable[Any], row_type: type[Any]) -> Path:
    """Write dataclass rows as CSV with a header of the field names."""
    names = [f.name for f in dataclasses.fields(row_type)]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in rows:
            writer.writerow([_cell(getattr(row, name)) for name in names])
    return path


def _convert(text: str, annotation: str) -> Any:
    optional = "None" in annotation
    if text == "":
        if optional:
            return None
        if annotation.startswith("str"):
            return ""
    if annotation.startswith("bool"):
        return text.strip().lower() in ("1", "true", "yes")
    if annotation.startswith("int"):
        return int(text)
    if annotation.startswith("float"):
        return float(text)
    return text


def read_csv(path: Path, row_type: type[Row]) -> list[Row]:
    """Rows of ``row_type`` from a CSV ``write_csv`` wrote (extra columns are ignored)."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(row_type)}
    rows: list[Row] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            values = {
                name: _convert(record.get(name) or "", kind)
                for name, kind in fields.items()
                if name in record
            }
            rows.append(row_type(**values))
    return rows


def read_samples(path: Path) -> list[Sample]:
    return read_csv(path, Sample)


def read_runs(path: Path) -> list[RunRow]:
    return read_csv(path, RunRow)


def read_events(path: Path) -> list[Event]:
    return read_csv(path, Event) if path.exists() else []


def parse_reasons(text: str) -> dict[str, int]:
    """``'lag=2;causal_timeout=1'`` → {'lag': 2, 'causal_timeout': 1}."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        reason, _, number = part.partition("=")
        counts[reason] = counts.get(reason, 0) + (int(number) if number else 1)
    return counts


def format_reasons(counts: dict[str, int]) -> str:
    """The inverse of ``parse_reasons`` (reasons sorted)."""
    return ";".join(f"{reason}={n}" for reason, n in sorted(counts.items()) if n)


def replicas_in(samples: Sequence[Sample]) -> list[str]:
    """The replica names of a sample list, in order of first appearance."""
    return list(dict.fromkeys(s.replica for s in samples))
