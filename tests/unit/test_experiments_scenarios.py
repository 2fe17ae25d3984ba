"""Scenario specs and TOML scenario files (pure parsing, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from offload.errors import ConfigError
from offload.experiments.scenarios import (
    Injection,
    Kind,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_rows,
    parse_scenario,
    parse_seconds,
)


def test_steady_injects_nothing() -> None:
    scenario = parse_scenario("steady")
    assert scenario.injections == ()
    assert scenario.spec == "steady"
    assert scenario.default_duration() == 20


def test_delay_defaults_to_the_start_and_lasts_to_the_end() -> None:
    (delay,) = parse_scenario("delay:2").injections
    assert delay == Injection(Kind.DELAY, at=0.0, seconds=2.0)
    assert delay.end is None
    assert delay.spec == "delay:2"


def test_delay_with_a_window() -> None:
    (delay,) = parse_scenario("delay:2@10..30").injections
    assert (delay.at, delay.seconds, delay.until, delay.end) == (10, 2, 30, 30)
    assert delay.spec == "delay:2@10..30"


@pytest.mark.parametrize(
    ("spec", "at", "seconds"),
    [
        ("pause:3@5", 5.0, 3.0),
        ("pause:0.25@5", 5.0, 0.25),
        ("pause:250ms@5", 5.0, 0.25),
        ("pause:.5@1.5s", 1.5, 0.5),
        ("pause:3", 0.0, 3.0),
    ],
)
def test_pause_spans_including_sub_second(spec: str, at: float, seconds: float) -> None:
    (pause,) = parse_scenario(spec).injections
    assert pause.kind is Kind.PAUSE
    assert (pause.at, pause.seconds, pause.end) == (at, seconds, at + seconds)


@pytest.mark.parametrize(
    ("text", "rows"), [("20000", 20000), ("20k", 20000), ("1.5k", 1500), ("1M", 1_000_000)]
)
def test_burst_rows(text: str, rows: int) -> None:
    assert parse_rows(text) == rows
    (burst,) = parse_scenario(f"burst:{text}@15").injections
    assert (burst.kind, burst.rows, burst.at, burst.end) == (Kind.BURST, rows, 15.0, 15.0)
    assert burst.spec == f"burst:{rows}@15"


def test_kill_replica_restarts_at_once_or_after_a_window() -> None:
    at_once, kept_down = parse_scenario("kill-replica@40+kill-replica@50..54").injections
    assert (at_once.kind, at_once.at, at_once.end) == (Kind.KILL, 40.0, 40.0)
    assert (kept_down.at, kept_down.until, kept_down.end) == (50.0, 54.0, 54.0)
    assert kept_down.spec == "kill-replica@50..54"


def test_composition_is_sorted_by_time_and_round_trips() -> None:
    scenario = parse_scenario("kill-replica@40 + pause:3@5 + burst:20k@15")
    assert [i.kind for i in scenario.injections] == [Kind.PAUSE, Kind.BURST, Kind.KILL]
    assert scenario.spec == "pause:3@5+burst:20000@15+kill-replica@40"
    assert parse_scenario(scenario.spec) == scenario
    assert scenario.last_event == 40
    assert scenario.default_duration() == 50


def test_replica_index() -> None:
    scenario = parse_scenario("pause:3@5#1+pause:3@5")
    assert {i.replica for i in scenario.injections} == {0, 1}
    assert scenario.replicas_needed() == 2
    assert "pause:3@5#1" in scenario.spec


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "wobble:3",
        "pause",
        "pause:0@1",
        "pause:abc",
        "pause:3@x",
        "delay:1.5",
        "delay:0",
        "burst",
        "burst:0",
        "burst:1.5",
        "burst:10@1#1",
        "kill-replica:3@1",
        "pause:3@5..9",
        "delay:2@10..5",
        "steady:1",
        "pause:3@5+pause:1@6",
        "delay:2+pause:1@5",
        "kill-replica@5..9+pause:1@6",
    ],
)
def test_bad_specs_are_config_errors_with_a_hint(spec: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(spec)
    assert isinstance(caught.value, ConfigError)
    assert caught.value.exit_code == 2


def test_overlap_on_different_replicas_is_fine() -> None:
    assert len(parse_scenario("pause:3@5+pause:3@5#1").injections) == 2


def test_check_against_the_duration_and_the_replicas() -> None:
    scenario = parse_scenario("pause:3@5")
    scenario.check(8)
    with pytest.raises(ScenarioError, match="does not fit"):
        scenario.check(7.5)
    with pytest.raises(ScenarioError, match="positive"):
        scenario.check(0)
    with pytest.raises(ScenarioError, match="replica1"):
        parse_scenario("pause:1@1#1").check(10, replicas=1)


def test_parse_seconds_units() -> None:
    assert parse_seconds("2") == 2.0
    assert parse_seconds("2s") == 2.0
    assert parse_seconds("1500ms") == 1.5
    with pytest.raises(ScenarioError):
        parse_seconds("-1")


def test_toml_phases_follow_each_other(tmp_path: Path) -> None:
    path = tmp_path / "pause-burst.toml"
    path.write_text(
        """
duration = 40
write_rate = 5

[[phase]]
kind = "steady"
for = 5

[[phase]]
kind = "pause"
seconds = 0.5          # 5 .. 5.5

[[phase]]
kind = "delay"
seconds = 2
for = 10               # 5.5 .. 15.5

[[phase]]
spec = "burst:20k@20"

[[phase]]
kind = "kill-replica"   # right after the burst's moment
for = 3
""",
        encoding="utf-8",
    )
    scenario = load_scenario(str(path))
    assert scenario.name == "pause-burst"
    assert (scenario.duration, scenario.write_rate) == (40, 5)
    assert scenario.default_duration() == 40
    pause, delay, burst, kill = scenario.injections
    assert (pause.kind, pause.at, pause.seconds) == (Kind.PAUSE, 5.0, 0.5)
    assert (delay.kind, delay.at, delay.until, delay.seconds) == (Kind.DELAY, 5.5, 15.5, 2.0)
    assert (burst.at, burst.rows) == (20.0, 20000)
    assert (kill.kind, kill.at, kill.until) == (Kind.KILL, 20.0, 23.0)


def test_toml_pause_with_for(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n[[phase]]\nkind = "pause"\nat = 2\nfor = 1.5\n', encoding="utf-8")
    assert load_scenario(str(path)) == Scenario(
        (Injection(Kind.PAUSE, at=2.0, seconds=1.5),), name="p"
    )


@pytest.mark.parametrize(
    "text",
    [
        '[[phase]]\nkind = "pause"\nseconds = 1\ncolour = "red"\n',
        '[[phase]]\nkind = "wobble"\n',
        '[[phase]]\nkind = "steady"\n',
        '[[phase]]\nspec = "pause:1@1"\nat = 3\n',
        'duration = 5\n[[phase]]\nkind = "pause"\nat = 4\nseconds = 3\n',
        "speed = 3\n",
        "phase = 3\n",
        '[[phase]]\nkind = "delay"\nseconds = 2\nfor = 1\nuntil = 4\n',
        '[[phase]]\nkind = "pause" \nseconds = 1\nreplica = -1\n',
        "this is not toml",
    ],
)
def test_bad_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError):
        load_scenario(str(path))


def test_missing_file() -> None:
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario("/nonexistent/scenario.toml")
