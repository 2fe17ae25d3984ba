"""The lag matrix's pure pieces: the grid's options, a cell's scenario and row, the report."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from offload.errors import ConfigError
from offload.experiments.records import RunRow, Sample
from offload.experiments.summary import summarize
from offload.flavor import Flavor
from offload.matrix.grid import DEFAULT_GRID, Cell, Grid
from offload.matrix.report import HEADER, OUTPUTS, by_setting, render_markdown, write_matrix
from offload.matrix.run import CellResult, cell_result, cell_scenario, gtid_rates
from offload.testbed.knobs import ApplierKnobs, current_knobs


def test_the_default_grid_is_small() -> None:
    cells = DEFAULT_GRID.cells()
    assert len(cells) == 8
    assert {c.rtt for c in cells} == {0.0, 0.040}
    assert {c.write_rate for c in cells} == {50.0, 400.0}
    assert {c.workers for c in cells} == {1, 4}
    assert {c.semi_sync for c in cells} == {False}
    assert DEFAULT_GRID.describe() == (
        "RTT 0/40 ms x 50/400 writes/s x 1/4 appliers x semi-sync off"
    )


def test_options_make_a_bigger_grid_knobs_outermost() -> None:
    grid = Grid.parse(
        rtt="0,10,40ms,0.08s",
        write_rate="50,200,800",
        workers="1,4",
        semi_sync="off,on",
        group_commit="0,2ms",
    )
    assert grid.rtts == (0.0, 0.010, 0.040, 0.08)
    assert grid.group_commit == (0.0, 0.002)
    cells = grid.cells()
    assert len(cells) == 4 * 3 * 2 * 2 * 2
    # the knobs change as seldom as possible: every RTT x rate runs before the next setting
    assert [c.setting for c in cells[:12]] == ["1 applier, semi-sync off"] * 12
    assert cells[12].setting == "1 applier, semi-sync off, group commit 2ms"
    assert len(grid.settings()) == 8
    assert "group commit 0ms/2ms" in grid.describe()


def test_an_option_left_out_keeps_its_default() -> None:
    grid = Grid.parse(rtt="80")  # a bare number is milliseconds
    assert grid.rtts == (0.080,)
    assert grid.write_rates == DEFAULT_GRID.write_rates
    assert grid.workers == DEFAULT_GRID.workers


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rtt": "0,,40"}, "--rtt: '0,,40' is not a comma-separated list"),
        ({"rtt": "fast"}, "--rtt: 'fast' is not a duration"),
        ({"rtt": "20s"}, "--rtt: 20s is more than 10s"),
        ({"rtt": "40,40ms"}, "--rtt: '40,40ms' names a value twice"),
        ({"write_rate": "50,-1"}, "--write-rate: '-1' is not a rate above 0"),
        ({"write_rate": "inf"}, "--write-rate: 'inf' is not a rate above 0"),
        ({"workers": "0,4"}, "--workers: '0' is not a whole number from 1 to 64"),
        ({"workers": "2.5"}, "--workers: '2.5' is not a whole number"),
        ({"semi_sync": "maybe"}, "--semi-sync: 'maybe' is not on or off"),
        ({"group_commit": "2s"}, "--group-commit: 2s is more than 1s"),
    ],
)
def test_bad_options_are_refused_in_one_line(options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Grid.parse(**options)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_cell_names_its_knobs_and_its_link() -> None:
    cell = Cell(rtt=0.040, write_rate=400, workers=4, semi_sync=True, group_commit=0.002)
    assert cell.knobs == ApplierKnobs(replica_workers=4, semi_sync=True, group_commit_delay=0.002)
    assert cell.setting == "4 appliers, semi-sync on, group commit 2ms"
    assert cell.name == "rtt40ms-w400-a4-ss1-gc2000us"
    scenario = cell_scenario(cell, 12.0, replicas=2)
    assert scenario.spec == "link:delay=20ms@0..12+link:delay=20ms@0..12#1"
    scenario.check(12.0, replicas=2)  # it fits the cell
    assert cell_scenario(Cell(0.0, 50, 1, False), 12.0, replicas=1).spec == "steady"


def test_gtid_rates_count_transactions_per_second() -> None:
    maria = gtid_rates((10.0, "0-1-100", "0-1-90"), (12.0, "0-1-300", "0-1-250"), Flavor.MARIADB)
    assert maria == (100.0, 80.0)
    uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
    mysql = gtid_rates(
        (0.0, f"{uuid}:1-10", f"{uuid}:1-10"),
        (4.0, f"{uuid}:1-50", f"{uuid}:1-30"),
        Flavor.MYSQL,
    )
    assert mysql == (10.0, 5.0)
    assert gtid_rates((1.0, "", ""), (1.0, "", ""), Flavor.MARIADB) == (None, None)


def _summary(lags: list[float], reasons: list[str]) -> dict[str, Any]:
    samples = [
        Sample(t=i * 0.1, replica="replica0", lag=lag, reachable=True) for i, lag in enumerate(lags)
    ]
    runs = [
        RunRow(
            t=float(i),
            end=i + 0.05,
            task="_sync_power_states",
            run=f"r{i}",
            route="primary" if reason else "replica",
            reasons=reason,
            fallbacks=1 if reason else 0,
            rejected=1 if i == 0 else 0,
        )
        for i, reason in enumerate(reasons)
    ]
    meta = {
        "max_lag": 0.1,
        "duration": 10.0,
        "server": "mariadb 10.11.19",
        "workload": {"transactions": 500, "commit_p50": 0.0031, "commit_p99": 0.0123},
    }
    return summarize(samples, runs, [], meta)


def test_a_cells_row_from_its_summary_and_gtid_rates() -> None:
    cell = Cell(rtt=0.040, write_rate=50, workers=1, semi_sync=False)
    summary = _summary([0.0, 0.02, 0.2, 0.3, 0.0], ["", "lag=1", "unreachable=1", "lag=1"])
    row = cell_result(cell, summary, (75.5, 70.25), seconds=10.0, out="cells/x")
    assert (row.rtt_ms, row.write_rate, row.workers, row.setting) == (
        40.0,
        50,
        1,
        "1 applier, semi-sync off",
    )
    assert row.lag_max == 0.3
    assert row.lag_p50 == 0.02
    assert row.seconds_over_max_lag == pytest.approx(0.2)  # two samples 0.1 s apart beyond 0.1
    assert (row.task_runs, row.fallbacks, row.stale_refused, row.rejected_writes) == (4, 3, 2, 1)
    assert row.writes_per_s == 50.0
    assert (row.commit_p50_ms, row.commit_p99_ms) == (3.1, 12.3)
    assert (row.primary_tps, row.applied_tps) == (75.5, 70.25)


def _row(rtt_ms: float, rate: float, workers: int, p99: float | None) -> CellResult:
    cell = Cell(rtt=rtt_ms / 1e3, write_rate=rate, workers=workers, semi_sync=False)
    return CellResult(
        rtt_ms=rtt_ms,
        write_rate=rate,
        workers=workers,
        semi_sync=False,
        group_commit_ms=0.0,
        setting=cell.setting,
        seconds=12.0,
        lag_p50=0.0,
        lag_p99=p99,
        lag_max=p99,
        seconds_over_max_lag=0.0,
        task_runs=90,
        fallbacks=2,
        stale_refused=1,
        rejected_writes=0,
        writes_per_s=rate * 0.98,
        commit_p50_ms=3.0,
        commit_p99_ms=15.5,
        primary_tps=rate + 50,
        applied_tps=rate + 49,
        gtid_distance_max=3,
        out=f"cells/{cell.name}",
    )


ROWS = [
    _row(0, 50, 1, 0.0),
    _row(40, 50, 1, 0.023),
    _row(0, 50, 4, 0.0),
    _row(40, 50, 4, None),
]
META = {
    "grid": "RTT 0/40 ms x 50 writes/s x 1/4 appliers x semi-sync off",
    "server": "mysql 9.7.4",
    "machine": {"cpus": 2, "cpu": "AMD EPYC", "memory_gib": 23.5, "os": "Debian 12"},
    "replicas": 1,
    "cell_seconds": 12.0,
    "task_interval": 1,
    "instances": 200,
    "heartbeat_interval": 0.02,
    "sample_interval": 0.0937,
    "max_lag": 0.1,
    "lag_policy": "primary",
    "seconds": 140.2,
    "testbed_seconds": 20.1,
    "started_at": "2026-11-30T17:00:00+00:00",
    "load_before": "4.1/2.9/2.1",
    "load_after": "4.2/3.0/2.2",
}


def test_the_markdown_names_server_and_machine_and_has_a_table_per_setting() -> None:
    text = render_markdown(ROWS, META)
    assert text.startswith("# Lag matrix: RTT 0/40 ms x 50 writes/s")
    assert "server **mysql 9.7.4**" in text
    assert "2 CPUs (AMD EPYC), 23.5 GiB RAM, Debian 12; load average 4.1/2.9/2.1" in text
    assert "## 1 applier, semi-sync off" in text and "## 4 appliers, semi-sync off" in text
    assert text.count("| " + " | ".join(HEADER) + " |") == 2
    assert (
        "| 40 | 50 | 49.0 | 0 | 23 | 23 | 0.0 | 90 | 2 | 1 | 0 | 3.0 | 15.5 | 100.0 | 99.0 |"
        in text
    )
    assert "| 40 | 50 | 49.0 | 0 | - | - |" in text  # a lag nobody measured is not a number
    assert "a heartbeat every 20 ms, so exact to that), sampled every 93.7 ms" in text
    assert list(by_setting(ROWS)) == ["1 applier, semi-sync off", "4 appliers, semi-sync off"]


def test_the_matrix_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    files = write_matrix(tmp_path, ROWS, META)
    assert sorted(files) == sorted(OUTPUTS)
    with (tmp_path / "matrix.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["rtt_ms"], r["workers"], r["lag_p99"]) for r in rows] == [
        ("0", "1", "0"),
        ("40", "1", "0.023"),
        ("0", "4", "0"),
        ("40", "4", ""),
    ]
    assert (tmp_path / "matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_knobs_found_on_the_servers_can_be_put_back() -> None:
    maria = current_knobs(
        {"rpl_semi_sync_master_enabled": "OFF", "binlog_commit_wait_usec": "2000"},
        {"slave_parallel_threads": "0", "rpl_semi_sync_slave_enabled": "ON"},
    )
    assert maria == ApplierKnobs(replica_workers=1, semi_sync=True, group_commit_delay=0.002)
    off = current_knobs(
        {"binlog_commit_wait_count": "0", "binlog_commit_wait_usec": "100000"},
        {"slave_parallel_threads": "4"},
    )
    assert off == ApplierKnobs(replica_workers=4, semi_sync=False, group_commit_delay=0.0)
    mysql = current_knobs(
        {"binlog_group_commit_sync_delay": "0"},
        {"replica_parallel_workers": "4", "rpl_semi_sync_replica_enabled": "-"},
    )
    assert mysql == ApplierKnobs(replica_workers=4, semi_sync=False, group_commit_delay=0.0)


def test_group_commit_delay_is_bounded() -> None:
    with pytest.raises(ConfigError, match="--group-commit-delay 2s is out of range"):
        ApplierKnobs(group_commit_delay=2.0)
    assert not ApplierKnobs(group_commit_delay=0.0).empty
    assert ApplierKnobs(group_commit_delay=0.0).replica_empty
