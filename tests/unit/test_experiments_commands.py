"""``offload lag``: options, the plan they make, and usage errors before any server starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from offload.cli import build_parser, main
from offload.config import LagPolicy, Settings
from offload.experiments.commands import _replica_options, plan_from
from offload.experiments.records import read_events, read_runs, read_samples
from offload.experiments.runner import write_outputs

DATA = Path(__file__).parent / "data" / "lag_pause"


def test_defaults() -> None:
    args = build_parser().parse_args(["lag", "run"])
    plan = plan_from(args)
    assert plan.scenario.spec == "steady"
    assert (plan.duration, plan.write_rate, plan.task_interval, plan.instances) == (
        20,
        20.0,
        1,
        400,
    )
    assert args.out == "lag-results" and args.lag_config is None
    assert _replica_options(args, Settings()).replica == Settings().replica


def test_options_make_the_plan_and_the_replica_settings() -> None:
    args = build_parser().parse_args(
        [
            "lag",
            "run",
            "--scenario",
            "pause:3@5+burst:20k@12",
            "--write-rate",
            "5",
            "--max-lag",
            "0.25",
            "--policy",
            "stale",
            "--no-causal",
            "--task-interval",
            "2",
        ]
    )
    plan = plan_from(args)
    assert plan.scenario.spec == "pause:3@5+burst:20000@12"
    assert (plan.duration, plan.write_rate, plan.task_interval) == (22, 5.0, 2)
    replica = _replica_options(args, Settings()).replica
    assert (replica.max_lag, replica.lag_policy, replica.causal_reads) == (
        0.25,
        LagPolicy.STALE,
        False,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lag", "run", "--scenario", "wobble:3"], "cannot read the scenario step"),
        (["lag", "run", "--scenario", "pause:3@5", "--duration", "6"], "does not fit"),
        (["lag", "run", "--duration", "-1"], "--duration"),
        (["lag", "run", "--write-rate", "nan"], "--write-rate"),
        (["lag", "run", "--max-lag", "0"], "--max-lag"),
        (["lag", "run", "--policy", "maybe"], "invalid choice"),
        (["lag", "compare"], "required"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("offload: error: ") and message in err
    assert err.count("\n") == 1


def test_compare_prints_the_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = {
        "scenario": "pause:3@5",
        "duration": 15.0,
        "max_lag": 0.5,
        "lag_policy": "primary",
        "causal_reads": True,
        "write_rate": 20.0,
    }
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        write_outputs(
            tmp_path / name,
            read_samples(DATA / "samples.csv"),
            read_runs(DATA / "runs.csv"),
            read_events(DATA / "events.csv"),
            meta,
        )
    assert main(["lag", "compare", str(tmp_path / "one"), str(tmp_path / "two")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["one", "two"]
    assert "staleness p50 s" in out


def test_compare_of_a_directory_without_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lag", "compare", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
