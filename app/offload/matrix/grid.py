"""The grid of ``offload lag matrix``: its dimensions, parsed from options, and its cells.

Pure: nothing here touches a server.  Each dimension is a comma-separated list::

    --rtt 0,10,40,80          round-trip time of the replica's link (a bare number is ms;
                              the link delays each direction by half of it)
    --write-rate 50,200,800   workload transactions a second offered to the primary
    --workers 1,4             the replica's appliers (1: the SQL thread alone)
    --semi-sync off,on        semi-synchronous replication
    --group-commit 0,2ms      binlog group commit delay on the primary (0: off)

The cells are ordered knob setting first (workers, semi-sync, group commit), then RTT,
then write rate, so the servers' knobs change as seldom as possible.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from offload.errors import ConfigError
from offload.link.toxics import format_duration, parse_duration
from offload.testbed.knobs import MAX_GROUP_COMMIT_DELAY, MAX_WORKERS, ApplierKnobs

__all__ = [
    "DEFAULT_GRID",
    "Cell",
    "Grid",
    "parse_counts",
    "parse_durations",
    "parse_rates",
    "parse_switches",
]

T = TypeVar("T")
_ON = {"on": True, "off": False, "yes": True, "no": False, "1": True, "0": False}


def _items(text: str, option: str) -> list[str]:
    items = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise ConfigError(f"{option}: {text!r} is not a comma-separated list", hint=None)
    return items


def _unique(values: list[T], option: str, text: str) -> tuple[T, ...]:
    if len(set(values)) != len(values):
        raise ConfigError(f"{option}: {text!r} names a value twice", hint="name each value once")
    return tuple(values)


def _parsed(text: str, option: str, parse: Callable[[str], T]) -> tuple[T, ...]:
    return _unique([parse(item) for item in _items(text, option)], option, text)


def parse_durations(text: str, *, option: str, maximum: float) -> tuple[float, ...]:
    """``0,40ms,0.1s`` → seconds (a bare number is milliseconds), each 0..maximum."""

    def one(item: str) -> float:
        value = parse_duration(item, option=option)
        if value > maximum:
            raise ConfigError(
                f"{option}: {item} is more than {format_duration(maximum)}",
                hint=f"use 0 to {format_duration(maximum)}",
            )
        return value

    return _parsed(text, option, one)


def parse_rates(text: str, *, option: str = "--write-rate") -> tuple[float, ...]:
    """``50,200,800`` → transactions a second, each > 0."""

    def one(item: str) -> float:
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(
                f"{option}: {item!r} is not a rate above 0", hint="write it like 50,200,800"
            )
        return value

    return _parsed(text, option, one)


def parse_counts(text: str, *, option: str = "--workers") -> tuple[int, ...]:
    """``1,4`` → applier counts, each 1..MAX_WORKERS."""

    def one(item: str) -> int:
        if not item.isdigit() or not 1 <= int(item) <= MAX_WORKERS:
            raise ConfigError(
                f"{option}: {item!r} is not a whole number from 1 to {MAX_WORKERS}",
                hint="write it like 1,4 (1: one applier)",
            )
        return int(item)

    return _parsed(text, option, one)


def parse_switches(text: str, *, option: str = "--semi-sync") -> tuple[bool, ...]:
    """``off,on`` → (False, True)."""

    def one(item: str) -> bool:
        if item.lower() not in _ON:
            raise ConfigError(f"{option}: {item!r} is not on or off", hint="write it like off,on")
        return _ON[item.lower()]

    return _parsed(text, option, one)


@dataclass(frozen=True, slots=True)
class Cell:
    """One run of the matrix: the link's RTT, the load, the servers' knobs."""

    rtt: float
    write_rate: float
    workers: int
    semi_sync: bool
    group_commit: float = 0.0

    @property
    def knobs(self) -> ApplierKnobs:
        return ApplierKnobs(
            replica_workers=self.workers,
            semi_sync=self.semi_sync,
            group_commit_delay=self.group_commit,
        )

    @property
    def setting(self) -> str:
        """The knob setting in words (a heatmap panel's title, a table's group)."""
        words = [
            f"{self.workers} applier{'s' if self.workers > 1 else ''}",
            f"semi-sync {'on' if self.semi_sync else 'off'}",
        ]
        if self.group_commit:
            words.append(f"group commit {format_duration(self.group_commit)}")
        return ", ".join(words)

    @property
    def name(self) -> str:
        """A directory name: ``rtt40ms-w400-a4-ss0-gc0``."""
        return (
            f"rtt{self.rtt * 1e3:g}ms-w{self.write_rate:g}-a{self.workers}-"
            f"ss{int(self.semi_sync)}-gc{self.group_commit * 1e6:g}us"
        )


@dataclass(frozen=True, slots=True)
class Grid:
    """Every dimension's values; ``cells()`` is their product."""

    rtts: tuple[float, ...] = (0.0, 0.040)
    write_rates: tuple[float, ...] = (50.0, 400.0)
    workers: tuple[int, ...] = (1, 4)
    semi_sync: tuple[bool, ...] = (False,)
    group_commit: tuple[float, ...] = (0.0,)

    def __post_init__(self) -> None:
        for name in ("rtts", "write_rates", "workers", "semi_sync", "group_commit"):
            if not getattr(self, name):
                raise ConfigError(f"the matrix needs at least one value of {name}", hint=None)

    @classmethod
    def parse(
        cls,
        *,
        rtt: str | None = None,
        write_rate: str | None = None,
        workers: str | None = None,
        semi_sync: str | None = None,
        group_commit: str | None = None,
    ) -> Grid:
        """The grid the options ask for; an option left None keeps the default."""
        default = DEFAULT_GRID
        return cls(
            rtts=parse_durations(rtt, option="--rtt", maximum=10.0) if rtt else default.rtts,
            write_rates=parse_rates(write_rate) if write_rate else default.write_rates,
            workers=parse_counts(workers) if workers else default.workers,
            semi_sync=parse_switches(semi_sync) if semi_sync else default.semi_sync,
            group_commit=parse_durations(
                group_commit, option="--group-commit", maximum=MAX_GROUP_COMMIT_DELAY
            )
            if group_commit
            else default.group_commit,
        )

    def cells(self) -> list[Cell]:
        return [
            Cell(rtt, rate, workers, semi, group)
            for workers, semi, group, rtt, rate in itertools.product(
                self.workers, self.semi_sync, self.group_commit, self.rtts, self.write_rates
            )
        ]

    def settings(self) -> list[str]:
        """The knob settings in cell order (one heatmap panel each)."""
        return list(dict.fromkeys(cell.setting for cell in self.cells()))

    def describe(self) -> str:
        def join(values: Sequence[str]) -> str:
            return "/".join(values)

        parts = [
            f"RTT {join([f'{r * 1e3:g}' for r in self.rtts])} ms",
            f"{join([f'{w:g}' for w in self.write_rates])} writes/s",
            f"{join([str(w) for w in self.workers])} appliers",
            f"semi-sync {join(['on' if s else 'off' for s in self.semi_sync])}",
        ]
        if self.group_commit != (0.0,):
            parts.append(f"group commit {join([format_duration(g) for g in self.group_commit])}")
        return " x ".join(parts)


#: `make lag-matrix`: 8 cells, small enough for 5 minutes on 2 cores with the testbed's start
DEFAULT_GRID = Grid()
