"""Unit tests of the lag scenarios' link steps: link:TOXICS@A..B and cut@A..B (parsing only)."""

from __future__ import annotations

import pytest

from offload.errors import ConfigError
from offload.experiments.scenarios import Kind, ScenarioError, link_toxics, parse_scenario


def test_a_link_step_round_trips() -> None:
    scenario = parse_scenario("link:delay=40ms@5..20")
    (step,) = scenario.injections
    assert (step.kind, step.at, step.end, step.link) == (Kind.LINK, 5.0, 20.0, "delay=40ms")
    assert scenario.spec == "link:delay=40ms@5..20"
    assert parse_scenario(scenario.spec) == scenario


def test_link_toxics_joined_with_commas_on_another_replica() -> None:
    (step,) = parse_scenario("link:delay=40ms,jitter=5ms,rate=1mbit@5..20#1").injections
    assert step.replica == 1
    assert link_toxics(step.link) == pytest.approx(
        {"delay": 0.04, "jitter": 0.005, "rate": 125_000.0}
    )


def test_a_link_step_without_end_lasts_to_the_end() -> None:
    scenario = parse_scenario("link:rate=1mbit@3")
    assert scenario.injections[0].end is None
    assert scenario.last_event == 3.0


def test_a_cut_needs_its_span() -> None:
    (step,) = parse_scenario("cut@10..15").injections
    assert (step.kind, step.at, step.end) == (Kind.CUT, 10.0, 15.0)
    with pytest.raises(ScenarioError, match="cut@10"):
        parse_scenario("cut@10")
    with pytest.raises(ScenarioError):
        parse_scenario("cut:5@10..15")


@pytest.mark.parametrize(
    "spec",
    [
        "link@5..20",
        "link:latency=40ms@5..20",
        "link:delay=fast@5",
        "link:rate=0mbit@5",
        "link:delay=40ms,delay=10ms@5",
        "link:delay=40ms@20..5",
    ],
)
def test_bad_link_steps_are_refused_when_parsed(spec: str) -> None:
    with pytest.raises(ConfigError):  # ScenarioError, or the toxic's own ConfigError
        parse_scenario(spec)


def test_a_cut_during_a_link_step_on_the_same_replica_is_refused() -> None:
    with pytest.raises(ScenarioError, match="same time"):
        parse_scenario("link:delay=40ms@5..20+cut@10..12")
    assert len(parse_scenario("link:delay=40ms@5..20+cut@10..12#1").injections) == 2
