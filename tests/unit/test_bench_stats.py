"""The benchmark statistics on known samples (no timing anywhere)."""

from __future__ import annotations

import math

import pytest

from offload.bench.stats import (
    Summary,
    median,
    p99,
    percentile,
    ratio,
    reduction,
    rotation,
    summarize,
)


def test_median_of_an_odd_count_is_the_middle_value() -> None:
    assert median([5, 1, 3]) == 3


def test_median_of_an_even_count_is_the_mean_of_the_two_middle_values() -> None:
    assert median([4, 1, 3, 2]) == 2.5


def test_median_of_one_sample_is_that_sample() -> None:
    assert median([7.25]) == 7.25


def test_p99_of_1_to_100_interpolates_between_the_two_largest() -> None:
    # rank (100 - 1) * 0.99 = 98.01: 99 + 0.01 * (100 - 99)
    assert p99(range(1, 101)) == pytest.approx(99.01)


def test_p99_of_1_to_1001_is_exact_rank() -> None:
    # rank 1000 * 0.99 = 990 exactly: the 991st value
    assert p99(range(1, 1002)) == 991


def test_p99_of_a_small_sample_lies_below_its_maximum() -> None:
    samples = [1.0, 2.0, 3.0, 4.0, 100.0]
    # rank 4 * 0.99 = 3.96: 4 + 0.96 * 96
    assert p99(samples) == pytest.approx(96.16)
    assert p99(samples) < max(samples)


def test_p99_ignores_input_order() -> None:
    assert p99([100, 1, 50, 2]) == p99([1, 2, 50, 100])


def test_percentile_ends_are_min_and_max() -> None:
    samples = [3, 9, 1, 7]
    assert percentile(samples, 0) == 1
    assert percentile(samples, 100) == 9


def test_percentile_matches_the_inclusive_method_of_statistics() -> None:
    import statistics  # noqa: PLC0415

    samples = [0.8, 1.1, 0.95, 2.4, 1.05, 0.99, 1.3, 5.0, 1.01, 0.97]
    quartiles = statistics.quantiles(samples, n=4, method="inclusive")
    assert [percentile(samples, q) for q in (25, 50, 75)] == pytest.approx(quartiles)


@pytest.mark.parametrize("q", [-1, 100.5, math.nan])
def test_percentile_outside_0_to_100_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1, 2], q)


def test_no_samples_is_an_error_not_a_number() -> None:
    with pytest.raises(ValueError, match="no samples"):
        median([])
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_a_nan_sample_is_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        median([1.0, math.nan])


def test_ratio_is_b_over_a() -> None:
    assert ratio(1.5, 1.2) == pytest.approx(1.25)


def test_ratio_with_a_zero_or_missing_denominator_is_none() -> None:
    assert ratio(3.0, 0) is None
    assert ratio(3.0, None) is None
    assert ratio(None, 2.0) is None


def test_ratio_of_zero_is_zero() -> None:
    assert ratio(0, 4) == 0


def test_reduction_is_the_share_gone() -> None:
    assert reduction(0, 465) == 1.0
    assert reduction(4, 469) == pytest.approx(1 - 4 / 469)
    assert reduction(10, 10) == 0.0
    assert reduction(1, 0) is None


def test_summarize_on_known_samples() -> None:
    summary = summarize([4.0, 1.0, 3.0, 2.0])
    assert summary.p99 == pytest.approx(3.97)
    assert summary == Summary(n=4, median=2.5, p99=summary.p99, mean=2.5, min=1.0, max=4.0)


def test_scaled_summary_changes_units_but_not_the_count() -> None:
    summary = summarize([0.001, 0.002, 0.003]).scaled(1000)
    assert summary.n == 3
    assert summary.median == pytest.approx(2.0)
    assert summary.min == pytest.approx(1.0)
    assert summary.max == pytest.approx(3.0)


def test_summary_as_dict_rounds() -> None:
    assert summarize([1 / 3]).as_dict(3) == {
        "n": 1,
        "median": 0.333,
        "p99": 0.333,
        "mean": 0.333,
        "min": 0.333,
        "max": 0.333,
    }


def test_rotation_starts_each_round_with_the_next_name() -> None:
    names = ["a", "b", "c"]
    assert [rotation(names, i) for i in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def test_rotation_gives_every_name_every_position_equally() -> None:
    names = ["a", "b", "c"]
    firsts = [rotation(names, i)[0] for i in range(30)]
    assert {name: firsts.count(name) for name in names} == {"a": 10, "b": 10, "c": 10}


def test_rotation_of_nothing_is_nothing() -> None:
    assert rotation([], 3) == []
