"""``offload lag``: options, the plan they make, and usage errors before any server starts."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from offload.cli import build_parser, main
from offload.config import LagPolicy, Settings
from offload.errors import ConfigError
from offload.experiments.commands import _replica_options, plan_from, print_summary
from offload.experiments.records import read_events, read_runs, read_samples
from offload.experiments.runner import write_outputs
from offload.testbed.knobs import ApplierKnobs

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
    assert out.splitlines()[0].strip() == "Lag experiments side by side"
    assert ["one", "two"] in [line.split() for line in out.splitlines()]
    staleness = next(line for line in out.splitlines() if "staleness p50 s" in line)
    assert staleness.split()[-2:] == ["0.000", "0.000"]


def test_compare_of_a_directory_without_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lag", "compare", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_summary_in_the_terminal_is_the_summary_files_figures(tmp_path: Path) -> None:
    meta = {"scenario": "pause:3@5", "duration": 15.0, "max_lag": 0.5, "lag_policy": "primary"}
    meta |= {"causal_reads": True, "write_rate": 20.0}
    result = write_outputs(
        tmp_path,
        read_samples(DATA / "samples.csv"),
        read_runs(DATA / "runs.csv"),
        read_events(DATA / "events.csv"),
        meta,
    )
    console = Console(file=io.StringIO(), width=200, highlight=False)
    print_summary(console, result)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    rows = {line.split()[0]: line.split()[1:] for line in shown.splitlines() if line.split()}
    total, replica = result.summary["all"], result.summary["lag"]["replica0"]
    # the total row: runs, ..., >max_lag, rejected, primary reads, primary statements
    assert rows["all"][0] == str(total["runs"])
    assert rows["all"][-4:] == [
        str(total["stale_data_reads"]),
        str(total["rejected_writes"]),
        str(total["primary_reads"]),
        str(total["primary_statements"]),
    ]
    assert rows["replica0"][:2] == [str(replica["samples"]), f"{replica['lag_p50']:.3f}"]
    assert set(rows) >= set(result.summary["tasks"])
    assert "lag.png" in shown and "summary.md" in shown


def test_lag_run_without_matplotlib_names_the_extra_before_any_server_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    out = tmp_path / "out"
    assert main(["lag", "run", "--duration", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("offload: error: ") and err.count("\n") == 1
    assert "matplotlib" in err and "pip install 'offload[lab]'" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_the_servers_knobs_from_the_scenario_file_and_the_options(tmp_path: Path) -> None:
    path = tmp_path / "parallel.toml"
    path.write_text(
        'replica_workers = 4\nsemi_sync = true\ngroup_commit_delay = "2ms"\n'
        '[[phase]]\nspec = "pause:1@2"\n',
        encoding="utf-8",
    )
    from_file = plan_from(build_parser().parse_args(["lag", "run", "--scenario", str(path)]))
    assert from_file.knobs == ApplierKnobs(
        replica_workers=4, semi_sync=True, group_commit_delay=0.002
    )
    overridden = plan_from(
        build_parser().parse_args(
            ["lag", "run", "--scenario", str(path), "--replica-workers", "1", "--no-semi-sync"]
        )
    )
    assert overridden.knobs == ApplierKnobs(
        replica_workers=1, semi_sync=False, group_commit_delay=0.002
    )
    assert plan_from(build_parser().parse_args(["lag", "run"])).knobs.empty


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("replica_workers = 0", "replica_workers must be a whole number >= 1"),
        ("replica_workers = true", "replica_workers must be a whole number >= 1"),
        ('semi_sync = "on"', "semi_sync is true or false"),
        ('group_commit_delay = "soon"', "group_commit_delay must be seconds"),
    ],
)
def test_bad_knobs_in_a_scenario_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        plan_from(build_parser().parse_args(["lag", "run", "--scenario", str(path)]))
