"""A small fleet on the real testbed: the servers' own counters say where the reads went."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import text

from offload.bench.env import Servers
from offload.fleet.params import FleetParams
from offload.fleet.report import write_outputs
from offload.fleet.run import COLUMNS, sweep
from offload.testbed import TestbedInfo


def test_fleet_moves_task_reads_off_the_primary(
    offload_testbed: TestbedInfo, tmp_path: Path
) -> None:
    params = FleetParams(
        hosts=(2, 3),
        instances_per_host=40,
        time_factor=60.0,  # the 60 s tasks every second
        window=3.0,
        pairs=1,
        warmup=1.0,
        processes=2,
        threads=2,
        write_rate=5.0,
        seed_block=2,  # the 3-host count adds its host to the 2-host count's
    )
    servers = Servers.from_testbed(offload_testbed)
    result = sweep(params, servers, lambda _line: None)
    engine = servers.admin_engine()
    try:
        with engine.connect() as conn:
            left = conn.execute(text(r"SHOW DATABASES LIKE 'offload\_bench\_fleet\_%'")).all()
    finally:
        engine.dispose()
    assert left == []  # the scratch database is gone
    assert [(r["hosts"], r["config"]) for r in result.rows] == [
        (2, "replica"),
        (2, "primary"),
        (3, "replica"),
        (3, "primary"),
    ]
    assert result.seeded.keys() == {2, 3}
    assert [n for n, _ in result.seeded.values()] == [80, 40]
    for row in result.rows:
        assert row["task_runs"] > 0
        assert row["task_errors"] == 0
        assert row["api_writes_per_s"] > 0
        assert row["rss_per_host_kib"] > 0
        assert row["workers_rss_mib"] > 0
        assert row["instances"] == row["hosts"] * 40
        each = row["replica_selects_per_s_each"].split(";")
        assert len(each) == len(offload_testbed.replica_urls(None))
    for hosts in (2, 3):
        replica, primary = (r for r in result.rows if r["hosts"] == hosts)
        # counted by the primary itself: none of the tasks' data reads with the replica,
        # some without it, at every host count
        assert replica["primary_data_selects_per_s"] == 0
        assert primary["primary_data_selects_per_s"] > 0
        assert replica["replica_selects_per_s"] > primary["replica_selects_per_s"]
    write_outputs(tmp_path, result, params, server=offload_testbed.server, seconds=1.0)
    with (tmp_path / "fleet.csv").open(encoding="utf-8") as stream:
        read = list(csv.DictReader(stream))
    assert [r["config"] for r in read] == ["replica", "primary"] * 2
    assert set(COLUMNS) <= set(read[0])
    assert (tmp_path / "fleet.png").stat().st_size > 0
    note = (tmp_path / "fleet.md").read_text(encoding="utf-8")
    assert "Knee" in note
    assert "not reached up to 3 hosts" in note or "first exceeds max_lag" in note
