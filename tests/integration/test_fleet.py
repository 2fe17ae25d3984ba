"""A small fleet on the real testbed: the servers' own counters say where the reads went."""

from __future__ import annotations

import csv
from pathlib import Path

from offload.bench.env import Servers
from offload.fleet.report import write_outputs
from offload.fleet.run import COLUMNS, FleetParams, sweep
from offload.testbed import TestbedInfo


def test_fleet_moves_task_reads_off_the_primary(
    offload_testbed: TestbedInfo, tmp_path: Path
) -> None:
    params = FleetParams(
        hosts=(3,),
        instances_per_host=40,
        time_factor=60.0,  # the 60 s tasks every second
        window=4.0,
        pairs=1,
        warmup=1.0,
        processes=2,
        threads=2,
        write_rate=5.0,
    )
    result = sweep(params, Servers.from_testbed(offload_testbed), lambda _line: None)
    rows = {row["config"]: row for row in result.rows}
    replica, primary = rows["replica"], rows["primary"]
    for row in (replica, primary):
        assert row["hosts"] == 3
        assert row["task_runs"] > 0
        assert row["task_errors"] == 0
        assert row["api_writes_per_s"] > 0
    # counted by the primary itself: none of the tasks' data reads with the replica,
    # some without it
    assert replica["primary_data_selects_per_s"] == 0
    assert primary["primary_data_selects_per_s"] > 0
    assert replica["replica_selects_per_s"] > primary["replica_selects_per_s"]
    assert result.rss_end[3] > 0
    write_outputs(tmp_path, result, params, server=offload_testbed.server, seconds=1.0)
    with (tmp_path / "fleet.csv").open(encoding="utf-8") as stream:
        read = list(csv.DictReader(stream))
    assert [r["config"] for r in read] == ["replica", "primary"]
    assert set(COLUMNS) <= set(read[0])
    assert (tmp_path / "fleet.png").stat().st_size > 0
    assert "Knee" in (tmp_path / "fleet.md").read_text(encoding="utf-8")
