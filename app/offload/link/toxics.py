"""The link's toxics, after Toxiproxy's: pure arithmetic on an injected clock.

``Toxics`` is what is in force (frozen; replaced whole when changed).  ``Pace``
schedules one direction of one connection: each chunk read at ``now`` is released
at ``release_at(now, size, toxics)`` — after the bandwidth cap has serialised it,
plus the delay and a uniform jitter, never before the chunk ahead of it (TCP keeps
order).  ``Gate`` is the cut: closed until a point in time, then open by itself.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from offload.errors import ConfigError

__all__ = ["Gate", "Pace", "Toxics", "format_duration", "parse_duration", "parse_rate"]

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s)?\s*$")
_DURATION_UNITS: Final = {"us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1e-3}
_RATE: Final = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(bit|kbit|mbit|gbit|b|kb|mb|gb)?\s*$", re.I)
#: bytes per second per unit; bits are divided by 8 (as tc does: "2mbit" is 250 000 bytes/s)
_RATE_UNITS: Final = {
    "bit": 1 / 8,
    "kbit": 1e3 / 8,
    "mbit": 1e6 / 8,
    "gbit": 1e9 / 8,
    "b": 1.0,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
}


def parse_duration(value: str, *, option: str = "a duration") -> float:
    """``40ms``, ``5s``, ``250us``, ``0`` (a bare number is milliseconds) → seconds."""
    match = _DURATION.match(value)
    if match is None:
        raise ConfigError(
            f"{option}: {value!r} is not a duration", hint="write it like 40ms, 1.5s or 250us"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    return f"{seconds * 1e3:g}ms" if seconds < 1 else f"{seconds:g}s"


def parse_rate(value: str, *, option: str = "a rate") -> float:
    """``2mbit``, ``500kbit``, ``1mb`` (bytes) → bytes per second (> 0)."""
    match = _RATE.match(value)
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(
            f"{option}: {value!r} is not a rate above 0",
            hint="write it like 2mbit, 500kbit or 1mb (bytes per second)",
        )
    unit = (match.group(2) or "bit").lower()
    return float(match.group(1)) * _RATE_UNITS[unit]


@dataclass(frozen=True)
class Toxics:
    """What the link does to each byte, in each direction (seconds, bytes per second)."""

    delay: float = 0.0
    jitter: float = 0.0
    rate: float | None = None
    stall: bool = False

    def __post_init__(self) -> None:
        if not (self.delay >= 0 and self.jitter >= 0 and math.isfinite(self.delay + self.jitter)):
            raise ConfigError(
                f"delay and jitter must be finite and >= 0 ({self.delay}, {self.jitter})"
            )
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError(f"the rate must be above 0 ({self.rate})")

    @property
    def active(self) -> bool:
        return bool(self.delay or self.jitter or self.rate is not None or self.stall)

    def merged(self, changes: dict[str, Any]) -> Toxics:
        """These toxics with the named fields changed (unknown names refused)."""
        unknown = sorted(set(changes) - set(asdict(self)))
        if unknown:
            raise ConfigError(f"unknown toxic(s): {', '.join(unknown)}")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = []
        if self.delay or self.jitter:
            parts.append(f"delay {format_duration(self.delay)}")
        if self.jitter:
            parts.append(f"jitter {format_duration(self.jitter)}")
        if self.rate is not None:
            parts.append(f"rate {self.rate * 8 / 1e6:g}mbit")
        if self.stall:
            parts.append("stalled")
        return ", ".join(parts) or "none"


class Pace:
    """One direction of one connection: when each chunk leaves the proxy."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._wire_free = -math.inf  # when the capped wire has sent what it was given
        self._last_release = -math.inf

    def release_at(self, now: float, size: int, toxics: Toxics) -> float:
        """The time a chunk of ``size`` bytes read at ``now`` is written onwards."""
        sent = now
        if toxics.rate is not None:
            sent = max(now, self._wire_free) + size / toxics.rate
            self._wire_free = sent
        delay = toxics.delay
        if toxics.jitter:
            delay = max(0.0, delay + self._rng.uniform(-toxics.jitter, toxics.jitter))
        release = max(sent + delay, self._last_release)
        self._last_release = release
        return release


class Gate:
    """The cut: new connections are refused until the gate opens again by itself."""

    def __init__(self) -> None:
        self._closed_until = -math.inf

    def cut(self, now: float, seconds: float) -> None:
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ConfigError(f"a cut lasts a finite time >= 0 ({seconds})")
        self._closed_until = now + seconds

    def reopen(self) -> None:
        self._closed_until = -math.inf

    def is_open(self, now: float) -> bool:
        return now >= self._closed_until

    def remaining(self, now: float) -> float:
        return max(0.0, self._closed_until - now)
