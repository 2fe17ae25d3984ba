"""The fleet's pure figures: percentiles, the host split, scaled intervals, the knee."""

from __future__ import annotations

import pytest

from offload.fleet.stats import (
    BYTES_PER_INSTANCE,
    buffer_pool_bytes,
    knee,
    percentile,
    scaled_spacing,
    split_hosts,
)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_split_hosts_round_robin_and_never_empty() -> None:
    hosts = [f"compute-{i}" for i in range(1, 8)]
    groups = split_hosts(hosts, 3)
    assert groups == [
        ["compute-1", "compute-4", "compute-7"],
        ["compute-2", "compute-5"],
        ["compute-3", "compute-6"],
    ]
    assert split_hosts(hosts[:2], 4) == [["compute-1"], ["compute-2"]]
    assert split_hosts(hosts[:1], 0) == [["compute-1"]]


def test_scaled_spacing() -> None:
    assert scaled_spacing(60.0, 20.0) == 3.0
    with pytest.raises(ValueError, match="time factor"):
        scaled_spacing(60.0, 0.0)


def test_knee_is_the_first_count_over_max_lag() -> None:
    lags = [(200, 2500.0), (10, 40.0), (50, None), (100, 1200.0)]
    assert knee(lags, 1000.0) == 100
    assert knee(lags, 5000.0) is None
    assert knee([], 1000.0) is None


def test_buffer_pool_holds_the_data_in_whole_chunks() -> None:
    mib = 1024 * 1024
    assert buffer_pool_bytes(0) == 128 * mib
    for instances in (5_000, 100_000, 500_000):
        pool = buffer_pool_bytes(instances)
        assert pool % (128 * mib) == 0
        assert pool >= instances * BYTES_PER_INSTANCE * 1.25 + 128 * mib
        assert pool < instances * BYTES_PER_INSTANCE * 1.25 + 256 * mib
