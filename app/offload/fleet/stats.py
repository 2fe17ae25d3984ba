"""Pure figures of the fleet: percentiles, the host split, scaled intervals, the knee."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["buffer_pool_bytes", "knee", "percentile", "scaled_spacing", "split_hosts"]

#: data and indexes of one seeded instance with its rows in the other tables (measured:
#: 285 MiB in information_schema.tables for 100,000 instances, 500 per host)
BYTES_PER_INSTANCE = 3 * 1024
_MIB = 1024 * 1024


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` (0-100) percentile, nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def split_hosts(hosts: Sequence[str], processes: int) -> list[list[str]]:
    """``hosts`` dealt round-robin over at most ``processes`` non-empty groups."""
    count = max(1, min(processes, len(hosts)))
    groups: list[list[str]] = [[] for _ in range(count)]
    for index, host in enumerate(hosts):
        groups[index % count].append(host)
    return [g for g in groups if g]


def scaled_spacing(spacing: float, time_factor: float) -> float:
    """A task's interval in the simulation: its real interval divided by the time factor."""
    if time_factor <= 0:
        raise ValueError(f"time factor must be > 0, not {time_factor}")
    return spacing / time_factor


def knee(lag_p99_ms: Sequence[tuple[int, float | None]], max_lag_ms: float) -> int | None:
    """The smallest host count whose replica lag p99 exceeds ``max_lag_ms`` (None: never)."""
    for hosts, lag in sorted(lag_p99_ms):
        if lag is not None and lag > max_lag_ms:
            return hosts
    return None


def buffer_pool_bytes(instances: int) -> int:
    """An InnoDB buffer pool that holds the data of ``instances`` seeded instances, with room.

    A quarter more than the data, plus the testbed's own 128 MiB, in whole 128 MiB chunks.
    """
    wanted = instances * BYTES_PER_INSTANCE * 5 // 4 + 128 * _MIB
    chunk = 128 * _MIB
    return -(-wanted // chunk) * chunk
