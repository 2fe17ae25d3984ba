"""The command line's number checks (argparse ``type=``), one home for every command.

Each raises ``argparse.ArgumentTypeError`` with one line saying what to give; argparse
turns it into the usage error (exit 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["SECONDS", "above_zero", "at_least_zero", "positive_int"]


def positive_int(value: str) -> int:
    """A whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def _real(value: str, unit: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {unit}, got {value!r}") from None


def above_zero(unit: str) -> Callable[[str], float]:
    """A number above 0 in ``unit`` ('seconds', 'writes a second')."""

    def check(value: str) -> float:
        number = _real(value, unit)
        if not number > 0:
            raise argparse.ArgumentTypeError(f"must be more than 0 {unit}, got {value}")
        return number

    return check


def at_least_zero(unit: str) -> Callable[[str], float]:
    """A number of 0 or more in ``unit``."""

    def check(value: str) -> float:
        number = _real(value, unit)
        if not number >= 0:
            raise argparse.ArgumentTypeError(f"must be 0 or more {unit}, got {value}")
        return number

    return check


#: seconds above 0 (timeouts, windows, intervals)
SECONDS = above_zero("seconds")
