"""Summary arithmetic on a recorded experiment (tests/unit/data/lag_pause), and its files.

The data is a cut (4.5 s .. 9 s) of a real run of ``pause:3@5`` with
``max_lag = 0.5`` and ``lag_policy = primary`` on MariaDB: the applier stopped
from 5.05 s to 8.04 s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from offload.experiments.compare import compare, render_comparison
from offload.experiments.records import (
    Event,
    RunRow,
    Sample,
    format_reasons,
    parse_reasons,
    read_events,
    read_runs,
    read_samples,
    write_csv,
)
from offload.experiments.runner import OUTPUTS, rebuild, write_outputs
from offload.experiments.summary import (
    lag_stats,
    percentile,
    render_markdown,
    run_stats,
    summarize,
)

DATA = Path(__file__).parent / "data" / "lag_pause"
META = {
    "scenario": "pause:3@5",
    "duration": 15.0,
    "max_lag": 0.5,
    "lag_policy": "primary",
    "causal_reads": True,
    "write_rate": 20.0,
    "task_interval": 1,
    "instances": 400,
    "flavor": "mariadb",
    "replicas": 1,
}


@pytest.fixture(scope="module")
def recorded() -> tuple[list[Sample], list[RunRow], list[Event]]:
    return (
        read_samples(DATA / "samples.csv"),
        read_runs(DATA / "runs.csv"),
        read_events(DATA / "events.csv"),
    )


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_is_numpys_linear_interpolation(q: float) -> None:
    values = [3.0, 0.5, 7.25, 1.0, 1.0, 12.0, 0.0]
    assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0
    assert percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_the_recorded_files_read_back(
    recorded: tuple[list[Sample], list[RunRow], list[Event]],
) -> None:
    samples, runs, events = recorded
    assert len(samples) == 45 and {s.replica for s in samples} == {"replica0"}
    assert len(runs) == 54
    assert events == [Event(5.0521, 8.038, "pause", "pause:3@5", "replica0", "")]
    first = samples[0]
    assert (first.t, first.lag, first.reachable, first.gtid_distance) == (4.5019, 0.0, True, 0)


def test_lag_stats_on_the_recorded_samples(
    recorded: tuple[list[Sample], list[RunRow], list[Event]],
) -> None:
    samples = recorded[0]
    lags = [s.lag for s in samples if s.lag is not None]
    stats = lag_stats(samples, 0.5)
    assert stats["samples"] == 45
    assert stats["lag_p50"] == pytest.approx(np.percentile(lags, 50), abs=1e-4)
    assert stats["lag_p99"] == pytest.approx(np.percentile(lags, 99), abs=1e-4)
    assert stats["lag_max"] == 2.962
    # the lag crossed 0.5 s about half a second into the pause and fell at its end
    assert stats["seconds_above_max_lag"] == pytest.approx(2.498, abs=1e-3)
    assert stats["gtid_distance_max"] == 114
    assert stats["unreachable_samples"] == 0
    assert stats["interval"] == pytest.approx(0.1, abs=0.01)


def test_run_stats_shares_and_staleness(
    recorded: tuple[list[Sample], list[RunRow], list[Event]],
) -> None:
    runs = recorded[1]
    stats = run_stats(runs, 0.5)
    assert stats["runs"] == stats["decided"] == 54
    assert stats["routes"] == {"replica": 26, "primary": 28}
    assert stats["replica_share"] == round(26 / 54, 4)
    assert stats["primary_share"] == round(28 / 54, 4)
    assert stats["skip_share"] == stats["stale_share"] == 0.0
    assert stats["staleness_max"] == 0.3638  # read in the pause's first half second
    assert stats["staleness_p50"] == 0.0
    assert stats["stale_data_reads"] == 0
    assert stats["fallbacks"] == 28 and stats["fallbacks_by_reason"] == {"lag": 28}
    assert stats["rejected_writes"] == 9
    assert stats["primary_reads"] == 582
    assert stats["primary_statements"] == 1692
    sync = run_stats([r for r in runs if r.task == "_sync_power_states"], 0.5)
    assert sync["routes"] == {"replica": 1, "primary": 3}
    assert sync["rejected_writes"] == 7 and sync["primary_reads"] == 545


def test_summary_document(recorded: tuple[list[Sample], list[RunRow], list[Event]]) -> None:
    samples, runs, events = recorded
    summary = summarize(samples, runs, events, META)
    assert summary["experiment"] == META
    assert set(summary["lag"]) == {"replica0"}
    assert summary["all"]["runs"] == 54
    assert sum(t["runs"] for t in summary["tasks"].values()) == 54
    # every run that met a replica beyond max_lag went to the primary (policy primary)
    assert summary["over_max_lag"] == {"runs": 28, "routes": {"primary": 28}, "stale_data_reads": 0}
    (pause,) = summary["phases"]
    assert (pause["label"], pause["start"], pause["end"]) == ("pause:3@5", 5.052, 8.038)
    assert pause["routes"] == {"replica": 11, "primary": 28}
    assert pause["lag_max"] == 2.962
    json.dumps(summary)  # JSON-ready


def test_markdown(recorded: tuple[list[Sample], list[RunRow], list[Event]]) -> None:
    text = render_markdown(summarize(*recorded, META))
    assert text.startswith("# Lag experiment: `pause:3@5`")
    assert "| **all**" in text
    assert "| replica0 |" in text
    assert "28 runs (primary 28)" in text


def test_csv_round_trip(tmp_path: Path) -> None:
    rows = [
        RunRow(
            t=1.5,
            end=2.0,
            task="t",
            run="r",
            route="skip",
            staleness=None,
            decision_lag=0.75,
            reasons=format_reasons({"lag": 2, "causal_timeout": 1}),
            error="x, y",
        ),
        RunRow(t=2.5, end=3.0, task="t", run="s", route="replica", staleness=0.0),
    ]
    back = read_runs(write_csv(tmp_path / "runs.csv", rows, RunRow))
    assert back == rows
    assert parse_reasons(back[0].reasons) == {"causal_timeout": 1, "lag": 2}
    samples = [
        Sample(0.1, "replica0", None, False),
        Sample(0.2, "replica0", 1.25, True, 7, 1, "Yes", "No"),
    ]
    assert read_samples(write_csv(tmp_path / "s.csv", samples, Sample)) == samples


def test_outputs_and_plot_rebuilt_from_a_directory(
    tmp_path: Path, recorded: tuple[list[Sample], list[RunRow], list[Event]]
) -> None:
    result = write_outputs(tmp_path, *recorded, META)
    assert sorted(p.name for p in result.files.values()) == sorted(OUTPUTS)
    assert (tmp_path / "lag.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = rebuild(tmp_path)
    assert again.summary == result.summary


def test_compare_side_by_side(tmp_path: Path) -> None:
    first, second = tmp_path / "primary", tmp_path / "stale"
    for where in (first, second):
        where.mkdir()
        for name in ("samples.csv", "runs.csv", "events.csv"):
            shutil.copy(DATA / name, where / name)
    write_outputs(
        first,
        read_samples(DATA / "samples.csv"),
        read_runs(DATA / "runs.csv"),
        read_events(DATA / "events.csv"),
        META,
    )
    stale_runs = [
        RunRow(
            t=r.t,
            end=r.end,
            task=r.task,
            run=r.run,
            route="stale",
            staleness=r.decision_lag,
            decision_lag=r.decision_lag,
            rejected=r.rejected + 1,
        )
        for r in read_runs(DATA / "runs.csv")
    ]
    write_outputs(
        second, read_samples(DATA / "samples.csv"), stale_runs, [], {**META, "lag_policy": "stale"}
    )
    table = compare([first, second])
    assert list(table.columns) == ["", "primary", "stale"]
    rows = {row[0].strip(): list(row[1:]) for row in table.rows}
    assert rows["lag_policy"] == ["primary", "stale"]
    assert rows["rejected guarded writes"] == ["9", "63"]
    assert rows["primary reads (SELECTs)"] == ["582", "0"]
    unknown = render_comparison(["a"], [{"experiment": {}, "all": {}, "lag": {}}])
    assert sum(row[1] == "?" for row in unknown.rows) > 3
