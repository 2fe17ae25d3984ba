"""ReplicaSelector's choice, on an injected clock and scripted lag readings (no server)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from offload.config import LagPolicy
from offload.lag import LagProbe, LagReading
from offload.staleness import Choice, ReplicaSelector, RoutingStats, SkipRun
from offload.tracing import task_scope

MAX_LAG, REFRESH = 0.5, 0.125  # binary fractions: clock arithmetic is exact
#: never connected: the scripted probes do not read it
UNUSED_ENGINE = create_engine("sqlite://")


class Clock:
    def __init__(self) -> None:
        self.now = 128.0

    def __call__(self) -> float:
        return self.now


class ScriptedProbe(LagProbe):
    """A probe whose next reading is set by the test; counts how often it is read."""

    def __init__(self, name: str, clock: Clock, lag: float | None, *, reachable: bool = True):
        super().__init__(name, UNUSED_ENGINE, primary_server_id=lambda: None, clock=clock)
        self.lag, self.reachable, self.reads = lag, reachable, 0

    def read(self) -> LagReading:
        self.reads += 1
        return LagReading(self.name, self.lag, reachable=self.reachable, at=self._clock())


def _selector(
    clock: Clock,
    *probes: ScriptedProbe,
    policy: LagPolicy = LagPolicy.PRIMARY,
    wakes: list[float] | None = None,
) -> tuple[ReplicaSelector, RoutingStats]:
    stats = RoutingStats()
    selector = ReplicaSelector(
        probes,
        max_lag=MAX_LAG,
        policy=policy,
        refresh=REFRESH,
        stats=stats,
        clock=clock,
        wake=None if wakes is None else lambda: wakes.append(clock()),
    )
    return selector, stats


def test_the_least_lagged_fit_replica_wins() -> None:
    clock = Clock()
    probes = [ScriptedProbe("replica0", clock, 0.3), ScriptedProbe("replica1", clock, 0.1)]
    selector, stats = _selector(clock, *probes)
    assert selector.choose() == Choice("replica1", lag=0.1)
    assert not stats.fallbacks and not stats.skips and not stats.stale_reads


def test_caught_up_replicas_take_turns() -> None:
    clock = Clock()
    probes = [ScriptedProbe(f"replica{i}", clock, 0.0) for i in range(3)]
    selector, _ = _selector(clock, *probes, ScriptedProbe("replica3", clock, 0.25))
    chosen = [selector.choose().replica for _ in range(6)]
    assert chosen == ["replica0", "replica1", "replica2"] * 2  # never the one behind
    probes[1].lag = 0.125
    selector.refresh_all()  # the refresher reads every replica again
    assert {selector.choose().replica for _ in range(4)} == {"replica0", "replica2"}


def test_max_lag_itself_is_fit() -> None:
    clock = Clock()
    selector, _ = _selector(clock, ScriptedProbe("replica0", clock, MAX_LAG))
    assert selector.choose().replica == "replica0"


def test_a_fit_reading_is_a_lookup_and_wakes_the_refresher_once_due() -> None:
    clock, wakes = Clock(), list[float]()
    probe = ScriptedProbe("replica0", clock, 0.125)
    selector, _ = _selector(clock, probe, wakes=wakes)
    selector.choose()
    probe.lag = 0.875  # the replica falls behind: not seen until the next reading
    clock.now += REFRESH / 2
    assert selector.choose() == Choice("replica0", lag=0.125)
    assert probe.reads == 1 and wakes == []  # younger than one refresh period: a lookup
    clock.now += REFRESH / 2  # one refresh period old: still a lookup, the refresher woken
    assert selector.choose() == Choice("replica0", lag=0.125)
    assert probe.reads == 1 and wakes == [clock.now]


def test_a_late_reading_is_proof_while_its_lag_plus_its_age_is_within_max_lag() -> None:
    clock = Clock()
    probe = ScriptedProbe("replica0", clock, 0.125)
    selector, _ = _selector(clock, probe)
    selector.choose()
    probe.lag = 0.875
    clock.now += MAX_LAG - 0.125  # lag 0.125 + age 0.375 = max_lag: the replica may be at it
    assert selector.choose() == Choice("replica0", lag=0.125)
    assert probe.reads == 1
    clock.now += REFRESH  # beyond: unknown, so the replica is read inline first
    assert selector.choose() == Choice(None, reason="lag", lag=0.875)
    assert probe.reads == 2


def test_the_refresher_keeps_a_fit_reading_current() -> None:
    clock = Clock()
    probe = ScriptedProbe("replica0", clock, 0.125)
    selector, _ = _selector(clock, probe)
    selector.choose()
    probe.lag = 0.875
    clock.now += REFRESH / 2
    selector.refresh_all()  # the refresher's turn: the next decision sees the new lag
    assert selector.choose() == Choice(None, reason="lag", lag=0.875)
    assert probe.reads == 3  # the refresher's, then inline (unfit replicas are re-read)


def test_make_due_ages_every_reading_by_one_refresh_period() -> None:
    clock, wakes = Clock(), list[float]()
    probe = ScriptedProbe("replica0", clock, 0.0)
    selector, _ = _selector(clock, probe, wakes=wakes)
    selector.choose()
    selector.make_due()
    assert selector.choose() == Choice("replica0", lag=0.0)
    assert probe.reads == 1 and len(wakes) == 1


def test_an_unfit_replica_is_read_again_at_every_choice_and_back_at_once() -> None:
    clock = Clock()
    probe = ScriptedProbe("replica0", clock, 2.0)
    selector, stats = _selector(clock, probe)
    with task_scope("_sync_power_states"):
        assert selector.choose() == Choice(None, reason="lag", lag=2.0)
        assert selector.choose().replica is None
        assert probe.reads == 2  # no refresh period for an unfit reading
        probe.lag = 0.0  # caught up: chosen on the very next choice, no time passed
        assert selector.choose() == Choice("replica0", lag=0.0)
    assert stats.fallbacks == {("_sync_power_states", "lag"): 2}


@pytest.mark.parametrize(
    ("lag", "reachable", "reason"),
    [(None, True, "no_heartbeat"), (None, False, "unreachable"), (0.9, True, "lag")],
)
def test_the_reason_no_replica_is_fit(lag: float | None, reachable: bool, reason: str) -> None:
    clock = Clock()
    selector, stats = _selector(clock, ScriptedProbe("replica0", clock, lag, reachable=reachable))
    assert selector.choose() == Choice(None, reason=reason, lag=lag)
    assert stats.fallbacks == {("-", reason): 1}  # outside a task


def test_policy_stale_reads_the_least_lagged_reachable_replica() -> None:
    clock = Clock()
    probes = [
        ScriptedProbe("replica0", clock, 3.0),
        ScriptedProbe("replica1", clock, 1.5),
        ScriptedProbe("replica2", clock, None, reachable=False),
    ]
    selector, stats = _selector(clock, *probes, policy=LagPolicy.STALE)
    with task_scope("_poll_volume_usage"):
        assert selector.choose() == Choice("replica1", reason="lag", lag=1.5, stale=True)
    assert stats.stale_reads == {"_poll_volume_usage": 1}
    assert not stats.fallbacks


def test_policy_stale_with_nothing_reachable_falls_back_to_the_primary() -> None:
    clock = Clock()
    probe = ScriptedProbe("replica0", clock, None, reachable=False)
    selector, stats = _selector(clock, probe, policy=LagPolicy.STALE)
    assert selector.choose() == Choice(None, reason="unreachable")
    assert stats.fallbacks == {("-", "unreachable"): 1} and not stats.stale_reads


def test_policy_skip_skips_the_run() -> None:
    clock = Clock()
    probe = ScriptedProbe("replica0", clock, 0.75)
    selector, stats = _selector(clock, probe, policy=LagPolicy.SKIP)
    with task_scope("_heal_instance_info_cache"), pytest.raises(SkipRun, match=r"0\.750s behind"):
        selector.choose()
    assert stats.skips == {("_heal_instance_info_cache", "lag"): 1}
    assert not stats.fallbacks


class ActingPrimaryProbe(ScriptedProbe):
    """A replica URL whose endpoint leads to the primary (the reading the real probe makes
    when the answering @@server_id is the one the heartbeat is written to)."""

    def read(self) -> LagReading:
        self.reads += 1
        return LagReading(
            self.name,
            None,
            reachable=True,
            error="answers as the primary",
            at=self._clock(),
            acting_primary=True,
        )


def test_a_replica_answering_as_the_primary_is_never_read_and_is_counted() -> None:
    clock = Clock()
    selector, stats = _selector(clock, ActingPrimaryProbe("replica0", clock, 0.0))
    with task_scope("_poll_bandwidth_usage"):
        choice = selector.choose()
    assert choice == Choice(None, reason="replica_is_primary")
    assert stats.fallbacks == {("_poll_bandwidth_usage", "replica_is_primary"): 1}
    assert stats.why(["replica_is_primary"]) == {
        "replica_is_primary": "replica0: answers as the primary"
    }


def test_stale_policy_never_reads_a_replica_answering_as_the_primary() -> None:
    clock = Clock()
    selector, stats = _selector(
        clock, ActingPrimaryProbe("replica0", clock, 0.0), policy=LagPolicy.STALE
    )
    assert selector.choose().replica is None
    assert not stats.stale_reads


def test_a_fit_replica_wins_over_one_answering_as_the_primary() -> None:
    clock = Clock()
    probes = [ActingPrimaryProbe("replica0", clock, 0.0), ScriptedProbe("replica1", clock, 0.2)]
    selector, stats = _selector(clock, *probes)
    assert selector.choose() == Choice("replica1", lag=0.2)
    assert not stats.fallbacks
