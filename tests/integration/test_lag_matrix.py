"""`offload lag matrix` on real replication: a 2-cell grid on the session's native testbed;
and the servers' knobs set for one lag run, then put back.

The two cells differ only in the link's RTT (0 and 200 ms); the replica's heartbeat lag
must be larger behind the longer link, and every file must hold what the cells measured.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.cli import main
from offload.config import ReplicaSettings, Settings
from offload.dberrors import unpooled_engine
from offload.experiments.runner import ExperimentPlan, run_experiment
from offload.experiments.scenarios import parse_scenario
from offload.flavor import Flavor
from offload.link.runner import LinkRunner
from offload.testbed import TestbedInfo
from offload.testbed.knobs import ApplierKnobs, current_knobs, read_knobs
from offload.testbed.native import NativeTopology

REPLICA = "replica0"


@pytest.fixture
def native_dir(offload_testbed: TestbedInfo) -> Iterator[Path]:
    if offload_testbed.backend != "native" or offload_testbed.dir is None:
        pytest.skip("the matrix shapes the replicas' links: native testbeds only")
    topology = NativeTopology(offload_testbed.dir, flavor=None, bind_to_parent=True)
    topology.attach_link(REPLICA)  # bound to this run; the matrix finds it in place
    try:
        yield offload_testbed.dir
    finally:
        topology.detach_link(REPLICA)


def test_a_two_cell_matrix_measures_more_lag_behind_the_longer_link(
    native_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "matrix"
    argv = ["lag", "matrix", "--config", str(native_dir / "offload.conf")]
    argv += ["--rtt", "0,200ms", "--write-rate", "30", "--workers", "1"]
    argv += ["--cell-seconds", "3", "--instances", "60", "--out", str(out)]
    assert main(argv) == 0

    for name in ("matrix.csv", "matrix.md", "matrix.json", "matrix.png"):
        assert (out / name).stat().st_size > 0, name
    with (out / "matrix.csv").open(encoding="utf-8") as handle:
        near, far = list(csv.DictReader(handle))
    assert (near["rtt_ms"], far["rtt_ms"]) == ("0", "200")
    # 100 ms each way: the heartbeat (every 20 ms) is seen late by about that much
    assert float(far["lag_p99"]) > float(near["lag_p99"] or 0)
    assert float(far["lag_p99"]) >= 0.05, far
    for row in (near, far):
        assert float(row["writes_per_s"]) > 0, row
        assert float(row["commit_p50_ms"]) > 0, row
        assert float(row["primary_tps"]) > 0 and float(row["applied_tps"]) > 0, row
        assert int(row["task_runs"]) > 0, row
        assert (out / row["out"] / "samples.csv").exists()
    document = json.loads((out / "matrix.json").read_text(encoding="utf-8"))
    assert document["matrix"]["server"].split()[0] in ("mariadb", "mysql")
    markdown = (out / "matrix.md").read_text(encoding="utf-8")
    assert document["matrix"]["server"] in markdown
    assert "## 1 applier, semi-sync off" in markdown
    # the link stays in place, without toxics, and the applier knob was put back
    state = LinkRunner(native_dir).control(REPLICA, "GET", "/link")
    assert state["toxics"]["delay"] == 0


class KnobsSeen:
    """A run's window: the knobs the servers report when the load starts."""

    def __init__(self, info: TestbedInfo) -> None:
        self.info = info
        self.primary: dict[str, str] = {}
        self.replica: dict[str, str] = {}

    def _read(self) -> tuple[dict[str, str], dict[str, str]]:
        found = []
        for url, primary in (
            (self.info.admin_url(), True),
            (self.info.replica_admin_urls()[0], False),
        ):
            engine = unpooled_engine(url, name="primary" if primary else REPLICA)
            try:
                with engine.connect() as conn:
                    found.append(read_knobs(conn, self.info.flavor, primary=primary))
            finally:
                engine.dispose()
        return found[0], found[1]

    def opened(self) -> None:
        self.primary, self.replica = self._read()

    def closed(self) -> None:
        pass


def test_a_lag_run_sets_the_servers_knobs_for_the_run_and_puts_them_back(
    offload_testbed: TestbedInfo, tmp_path: Path
) -> None:
    mariadb = offload_testbed.flavor is Flavor.MARIADB
    seen = KnobsSeen(offload_testbed)
    before = seen._read()
    plan = ExperimentPlan(
        scenario=parse_scenario("steady"),
        duration=2.0,
        write_rate=20,
        instances=40,
        knobs=ApplierKnobs(replica_workers=3, group_commit_delay=0.003),
    )
    settings = offload_testbed.settings(base=Settings(replica=ReplicaSettings(max_lag=0.5)))
    result = run_experiment(settings, plan, tmp_path, window=seen)
    workers = "slave_parallel_threads" if mariadb else "replica_parallel_workers"
    delay = "binlog_commit_wait_usec" if mariadb else "binlog_group_commit_sync_delay"
    assert seen.replica[workers] == "3"
    assert seen.primary[delay] == "3000"
    assert result.summary["experiment"]["knobs"] == {
        "replica_workers": 3,
        "group_commit_delay": 0.003,
    }
    # a 3 ms group commit delay with one writer: every commit waits it out
    assert result.summary["experiment"]["workload"]["commit_p50"] >= 0.003
    # as the servers had them (MariaDB: a group commit wait with count 0 is off, whatever
    # its usec)
    assert current_knobs(*seen._read()) == current_knobs(*before)
