"""How the recorder files a task run: route, staleness, fallbacks — with fake lag probes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest

from offload.compute.context import RunReport
from offload.config import LagPolicy, Settings
from offload.experiments.recorder import Recorder, RecordingSelector
from offload.lag import LagProbe, LagReading
from offload.periodic import PeriodicTask
from offload.staleness import ReplicaSelector, RoutingStats, SkipRun
from offload.tracing import StatementRecord, Tracer, task_scope


@dataclass
class FakeProbe:
    name: str
    lag: float | None
    reachable: bool = True

    def read(self) -> LagReading:
        return LagReading(self.name, self.lag, self.reachable, at=time.monotonic())


@dataclass
class Bench:
    """A recorder on a stand-in Database, and a recording selector over fake probes."""

    recorder: Recorder
    probes: list[FakeProbe] = field(default_factory=list)
    selector: RecordingSelector | None = None

    def use(self, policy: LagPolicy, *lags: float | None) -> RecordingSelector:
        self.probes = [FakeProbe(f"replica{i}", lag) for i, lag in enumerate(lags)]
        inner = ReplicaSelector(
            cast("list[LagProbe]", self.probes),  # FakeProbe: read() as LagProbe's
            max_lag=0.5,
            policy=policy,
            refresh=0.1,
            stats=RoutingStats(),
        )
        self.selector = RecordingSelector(inner, self.recorder._decided)
        return self.selector

    def statement(
        self, run: str, route: str, target: str, verb: str = "SELECT", times: int = 1
    ) -> None:
        for _ in range(times):
            self.recorder._statements(
                StatementRecord(
                    task="task",
                    run=run,
                    route=route,
                    target=target,
                    server=None,
                    verb=verb,
                    tables=(),
                    duration=0.001,
                    at=time.time(),
                )
            )


@pytest.fixture
def bench() -> Bench:
    db: Any = SimpleNamespace(settings=Settings(), replicas=(), tracer=Tracer())
    return Bench(Recorder(db))


def _report(run: str, **details: Any) -> RunReport:
    report = RunReport(task="task", host="compute-1", run=run)
    report.details.update(details)
    return report


def test_a_fit_replica_is_a_replica_read_at_its_lag(bench: Bench) -> None:
    selector = bench.use(LagPolicy.PRIMARY, 0.2, 0.1)
    with task_scope("task", run="r1"):
        assert selector.choose().replica == "replica1"
    bench.statement("r1", "replica", "replica1", times=3)
    bench.statement("r1", "write", "primary", "UPDATE", times=2)
    row = bench.recorder.record(_report("r1"), 1.0, 1.5)
    assert (row.route, row.replica, row.staleness, row.decision_lag) == (
        "replica",
        "replica1",
        0.1,
        0.1,
    )
    assert (row.replica_selects, row.primary_reads, row.primary_writes, row.primary_statements) == (
        3,
        0,
        2,
        2,
    )


def test_beyond_max_lag_policy_primary_falls_back(bench: Bench) -> None:
    selector = bench.use(LagPolicy.PRIMARY, 2.0)
    with task_scope("task", run="r2"):
        assert selector.choose().replica is None
    bench.statement("r2", "replica", "primary", times=4)  # READ_REPLICA session on the primary
    bench.statement("r2", "causal", "primary")  # a GTID lookup: a statement, not a read
    row = bench.recorder.record(_report("r2", routing={"fallbacks": {"lag": 1}}), 0.0, 0.1)
    assert (row.route, row.staleness, row.decision_lag) == ("primary", 0.0, 2.0)
    assert (row.reasons, row.fallbacks) == ("lag=1", 1)
    assert (row.primary_reads, row.primary_statements) == (4, 5)


def test_policy_stale_reads_the_lagging_replica(bench: Bench) -> None:
    selector = bench.use(LagPolicy.STALE, 2.0)
    with task_scope("task", run="r3"):
        assert selector.choose().stale
    bench.statement("r3", "replica", "replica0")
    row = bench.recorder.record(_report("r3", routing={"stale_reads": 1}), 0.0, 0.1)
    assert (row.route, row.staleness, row.stale_reads) == ("stale", 2.0, 1)


def test_policy_skip(bench: Bench) -> None:
    selector = bench.use(LagPolicy.SKIP, 2.0)
    with task_scope("task", run="r4"), pytest.raises(SkipRun):
        selector.choose()
    row = bench.recorder.record(_report("r4", routing={"skips": {"lag": 1}}), 0.0, 0.1)
    assert (row.route, row.staleness, row.decision_lag, row.skips) == ("skip", None, 2.0, 1)


def test_unreachable_replica(bench: Bench) -> None:
    selector = bench.use(LagPolicy.PRIMARY, None)
    bench.probes[0].reachable = False
    with task_scope("task", run="r5"):
        assert selector.choose().reason == "unreachable"
    row = bench.recorder.record(_report("r5", routing={"fallbacks": {"unreachable": 1}}), 0.0, 0.1)
    assert (row.route, row.staleness, row.decision_lag) == ("primary", 0.0, None)


def test_causal_timeout_after_choosing_a_replica_is_a_primary_read(bench: Bench) -> None:
    selector = bench.use(LagPolicy.PRIMARY, 0.1)
    with task_scope("task", run="r6"):
        selector.choose()
    bench.statement("r6", "replica", "primary", times=2)
    row = bench.recorder.record(
        _report("r6", routing={"fallbacks": {"causal_timeout": 1}}), 0.0, 0.1
    )
    assert (row.route, row.staleness, row.reasons) == ("primary", 0.0, "causal_timeout=1")


def test_a_run_without_replica_reads(bench: Bench) -> None:
    row = bench.recorder.record(_report("r7"), 0.0, 0.1)
    assert (row.route, row.staleness, row.decision_lag) == ("none", None, None)


def test_wrapped_tasks_file_their_runs_and_failures(bench: Bench) -> None:
    calls: Iterator[RunReport | Exception] = iter(
        [_report("r8"), RuntimeError("replica went away")]
    )

    def task() -> RunReport:
        result = next(calls)
        if isinstance(result, Exception):
            raise result
        return result

    wrapped = bench.recorder.wrap(PeriodicTask("task", task, 1.0))
    assert isinstance(wrapped.func(), RunReport)
    with pytest.raises(RuntimeError):
        wrapped.func()
    routes = [(r.route, r.error) for r in bench.recorder.runs]
    assert routes == [("none", ""), ("error", "RuntimeError: replica went away")]


def test_events_are_filed_on_the_experiment_clock(bench: Bench) -> None:
    event = bench.recorder.event("pause", "pause:1@1", start=1.00004, end=2.5, target="replica0")
    assert (event.t, event.end, event.kind) == (1.0, 2.5, "pause")
    assert bench.recorder.events == [event]
