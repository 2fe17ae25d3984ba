"""One short, real lag experiment on the session testbed: the outputs exist and make sense.

The applier of replica0 is stopped from 0.3 s to 1.8 s of a 3 s run with
``max_lag = 0.5``, and a burst of 20,000 rows is written at 0.1 s.  Nothing
here asserts timing beyond "the pause was seen": the assertions are about
consistency — every run that met a replica beyond max_lag went to the
primary, no run read data older than max_lag, the files agree with each
other — and the replica is back to normal afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine, text

from offload import replication
from offload.config import ReplicaSettings, Settings
from offload.experiments.records import read_events, read_runs, read_samples
from offload.experiments.runner import OUTPUTS, ExperimentPlan, run_experiment
from offload.experiments.scenarios import parse_scenario
from offload.testbed import TestbedInfo


def test_a_short_pause_experiment(
    offload_testbed: TestbedInfo,
    tmp_path: Path,
    offload_replica_admin: list[Engine],
    offload_primary_admin: Engine,
) -> None:
    settings = offload_testbed.settings(base=Settings(replica=ReplicaSettings(max_lag=0.5)))
    plan = ExperimentPlan(
        scenario=parse_scenario("burst:20k@0.1+pause:1.5@0.3"),
        duration=3.0,
        write_rate=20,
        instances=60,
    )

    result = run_experiment(settings, plan, tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(OUTPUTS)
    assert (tmp_path / "lag.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == result.summary
    assert summary["experiment"]["scenario"] == "burst:20000@0.1+pause:1.5@0.3"
    assert summary["experiment"]["lag_policy"] == "primary"

    samples = read_samples(tmp_path / "samples.csv")
    runs = read_runs(tmp_path / "runs.csv")
    burst, pause = read_events(tmp_path / "events.csv")
    assert (burst.kind, burst.target) == ("burst", "primary")
    assert "20000 rows committed" in burst.detail and "applied" in burst.detail
    assert summary["experiment"]["workload"]["burst_rows"] == 20000
    assert (pause.kind, pause.target) == ("pause", "replica0")
    assert pause.end is not None and pause.t < pause.end < plan.duration
    assert len(samples) >= 15  # every 100 ms for 3 s, give or take a slow one
    assert all(s.replica == "replica0" for s in samples)
    # the stopped applier shows: lag beyond max_lag, transactions waiting
    assert summary["lag"]["replica0"]["lag_max"] > 0.5
    assert summary["lag"]["replica0"]["gtid_distance_max"] > 0
    # (only inside the pause: before it, the burst alone can put the applier behind)
    assert all(
        s.sql_running == "No"
        for s in samples
        if s.lag is not None and s.lag > 0.5 and pause.t <= s.t < pause.end
    )
    # the guard held: whoever met the lagging replica went to the primary
    over = [r for r in runs if r.decision_lag is not None and r.decision_lag > 0.5]
    assert over and all(r.route == "primary" and r.staleness == 0 for r in over)
    assert summary["all"]["stale_data_reads"] == 0
    assert summary["all"]["fallbacks_by_reason"].get("lag", 0) >= len(over)
    assert summary["all"]["primary_reads"] > 0
    assert {r.route for r in runs} <= {"replica", "primary", "none"}
    assert all(r.staleness is None or r.staleness <= 0.5 for r in runs)
    assert summary["all"]["runs"] == len(runs) > 0
    assert summary["experiment"]["workload"]["operations"]

    # afterwards: the applier runs again, and the experiment's database is gone
    with offload_replica_admin[0].connect() as conn:
        status = replication.replica_status(conn, offload_testbed.flavor)
    assert status is not None and status.threads_running and not status.sql_delay
    with offload_primary_admin.connect() as conn:
        left = conn.execute(text("SHOW DATABASES LIKE 'offload\\_lag\\_%'")).all()
    assert left == []
