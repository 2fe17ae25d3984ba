"""The statistics every benchmark reports: median, p99, sample count, ratios.

Pure functions on lists of numbers, unit-tested on known samples.  Percentiles
interpolate linearly between the two nearest ranks (the "inclusive" method:
numpy's default, ``statistics.quantiles(method="inclusive")``), so p99 of a
small sample lies between its two largest values instead of jumping to the
maximum.  Ratios are ``b / a`` of numbers measured in the same run; a ratio
with a zero denominator is ``None`` (shown as "-"), never infinity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "Summary",
    "median",
    "p99",
    "percentile",
    "ratio",
    "reduction",
    "rotation",
    "summarize",
]


def _checked(samples: Sequence[float]) -> list[float]:
    if not samples:
        raise ValueError("no samples: a statistic of nothing is not a measurement")
    values = sorted(float(x) for x in samples)
    if any(math.isnan(x) for x in values):
        raise ValueError("a sample is NaN")
    return values


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the nearest ranks."""
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {q!r}")
    values = _checked(samples)
    position = (len(values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    fraction = position - low
    return values[low] + (values[high] - values[low]) * fraction


def median(samples: Sequence[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count)."""
    return percentile(samples, 50)


def p99(samples: Sequence[float]) -> float:
    """The 99th percentile."""
    return percentile(samples, 99)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; None when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def reduction(after: float, before: float) -> float | None:
    """The share of ``before`` that is gone in ``after`` (1.0: all of it); None if before is 0."""
    share = ratio(after, before)
    return None if share is None else 1.0 - share


T = TypeVar("T")


def rotation(names: Sequence[T], index: int) -> list[T]:
    """``names`` rotated by ``index``: round i of an interleaved run starts with a new one.

    Rotating the order cancels any advantage of going first (warm caches,
    a pool connection just returned) across rounds.
    """
    if not names:
        return []
    shift = index % len(names)
    return [*names[shift:], *names[:shift]]


@dataclass(frozen=True, slots=True)
class Summary:
    """Median, p99, extremes and count of one series of samples."""

    n: int
    median: float
    p99: float
    mean: float
    min: float
    max: float

    def scaled(self, factor: float) -> Summary:
        """The same summary in other units (seconds x 1000 = milliseconds)."""
        return Summary(
            self.n,
            self.median * factor,
            self.p99 * factor,
            self.mean * factor,
            self.min * factor,
            self.max * factor,
        )

    def as_dict(self, digits: int = 6) -> dict[str, float | int]:
        return {
            "n": self.n,
            "median": round(self.median, digits),
            "p99": round(self.p99, digits),
            "mean": round(self.mean, digits),
            "min": round(self.min, digits),
            "max": round(self.max, digits),
        }


def summarize(samples: Sequence[float]) -> Summary:
    """The :class:`Summary` of ``samples`` (at least one)."""
    values = _checked(samples)
    return Summary(
        n=len(values),
        median=median(values),
        p99=p99(values),
        mean=math.fsum(values) / len(values),
        min=values[0],
        max=values[-1],
    )
