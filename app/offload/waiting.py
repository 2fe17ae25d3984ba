"""Waiting on a condition with a deadline — the one way offload waits.

``Deadline`` runs on a monotonic clock; ``wait_for`` polls a predicate until it
holds or the deadline passes.  Both take the clock and the sleep function as
arguments, so unit tests drive them with a fake clock and never really wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "Deadline", "Sleep", "wait_for"]

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class Deadline:
    """A point in monotonic time ``seconds`` from now."""

    def __init__(self, seconds: float, *, clock: Clock = time.monotonic) -> None:
        if not seconds >= 0:  # also NaN, which would never expire
            raise ValueError(f"a deadline cannot be in the past ({seconds}s)")
        self.seconds = seconds
        self._clock = clock
        self._start = clock()

    def elapsed(self) -> float:
        return self._clock() - self._start

    def remaining(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    def expired(self) -> bool:
        return self.elapsed() >= self.seconds


def wait_for(
    predicate: Callable[[], bool],
    deadline: Deadline,
    *,
    interval: float = 0.05,
    sleep: Sleep = time.sleep,
) -> bool:
    """Call ``predicate`` until it returns True (→ True) or ``deadline`` expires (→ False).

    The predicate is always tried once more at the deadline, so a condition that
    became true during the last sleep is not reported as a timeout.
    """
    while True:
        if predicate():
            return True
        if deadline.expired():
            return False
        sleep(min(interval, deadline.remaining()))
