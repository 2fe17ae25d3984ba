"""The ``offload lag`` commands: options → a plan, a progress bar, the table at the end.

``offload lag run`` starts a testbed of its own on free ports and stops it
afterwards, unless ``--config FILE`` names an existing testbed's config (as
``offload bench`` does).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from offload.bench.report import Table, rich_table
from offload.config import LagPolicy, Settings, load_settings
from offload.errors import ConfigError
from offload.experiments.compare import compare
from offload.experiments.provision import topology_of
from offload.experiments.runner import ExperimentPlan, ExperimentResult, run_experiment
from offload.experiments.scenarios import Scenario, load_scenario
from offload.experiments.summary import LAG_HEADER, TASK_HEADER, lag_rows, task_rows
from offload.extras import require
from offload.link.toxics import parse_duration
from offload.testbed.knobs import ApplierKnobs
from offload.testbed.own import OwnTestbed

__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_WRITE_RATE",
    "compare_command",
    "knobs_from",
    "print_summary",
    "run_command",
    "terminal",
]

DEFAULT_OUT = "lag-results"
DEFAULT_WRITE_RATE = 20.0


class Bar:
    """A rich progress bar over the experiment's seconds (plain lines when not a terminal)."""

    def __init__(self, duration: float, console: Console) -> None:
        self.duration = duration
        self.progress = Progress(
            TextColumn("[bold]lag run"),
            BarColumn(),
            TextColumn("{task.completed:>5.1f}/{task.total:.0f} s"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> Bar:
        self.progress.start()
        self._task = self.progress.add_task("lag", total=self.duration, status="setting up")
        return self

    def update(self, elapsed: float, status: str) -> None:
        if self._task is not None:
            self.progress.update(self._task, completed=elapsed, status=status)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.progress.stop()


def _number(
    value: float | None, name: str, *, minimum: float, exclusive: bool = False
) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
        bound = ">" if exclusive else ">="
        raise ConfigError(f"{name} must be a number {bound} {minimum:g}, got {value!r}")
    return value


def plan_from(args: argparse.Namespace) -> ExperimentPlan:
    """The plan the command line asks for (scenario file defaults, then built-in ones)."""
    scenario = load_scenario(args.scenario)
    duration = _number(args.duration, "--duration", minimum=0, exclusive=True)
    rate = _number(args.write_rate, "--write-rate", minimum=0)
    if rate is None:
        rate = scenario.write_rate if scenario.write_rate is not None else DEFAULT_WRITE_RATE
    plan = ExperimentPlan(
        scenario=scenario,
        duration=duration if duration is not None else scenario.default_duration(),
        write_rate=rate,
        task_interval=args.task_interval,
        instances=args.instances,
        knobs=knobs_from(args, scenario),
    )
    plan.scenario.check(plan.duration)
    return plan


def knobs_from(args: argparse.Namespace, scenario: Scenario) -> ApplierKnobs:
    """The servers' knobs for the run: the options, else the scenario file's."""
    delay = (
        parse_duration(args.group_commit_delay, option="--group-commit-delay")
        if args.group_commit_delay is not None
        else scenario.group_commit_delay
    )
    return ApplierKnobs(
        replica_workers=args.replica_workers
        if args.replica_workers is not None
        else scenario.replica_workers,
        semi_sync=args.semi_sync if args.semi_sync is not None else scenario.semi_sync,
        group_commit_delay=delay,
    )


def _replica_options(args: argparse.Namespace, settings: Settings) -> Settings:
    replica = settings.replica
    max_lag = _number(args.max_lag, "--max-lag", minimum=0, exclusive=True)
    if max_lag is not None:
        replica = dataclasses.replace(replica, max_lag=max_lag)
    if args.policy is not None:
        replica = dataclasses.replace(replica, lag_policy=LagPolicy(args.policy))
    if args.causal is not None:
        replica = dataclasses.replace(replica, causal_reads=args.causal)
    return dataclasses.replace(settings, replica=replica)


def terminal() -> Console:
    """The console of the lag commands: wide enough for every table when not a terminal."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


def print_summary(console: Console, result: ExperimentResult) -> None:
    """The experiment's figures as tables (summary.md holds the same in markdown)."""
    summary = result.summary
    total = summary["all"]
    console.print(
        rich_table(
            Table(
                "Replication lag (heartbeat)",
                LAG_HEADER,
                lag_rows(summary),
                note="s > max_lag: seconds the replica spent more than max_lag behind",
            )
        )
    )
    reasons = ", ".join(f"{k} {v}" for k, v in total["fallbacks_by_reason"].items())
    console.print(
        rich_table(
            Table(
                "Task runs",
                TASK_HEADER,
                task_rows(summary, total="all"),
                note=f"{total['runs']} task runs: {total['fallbacks']} fallbacks to the primary "
                f"({reasons or 'none'}), {total['skips']} skips; shares are of the runs that "
                "asked for a replica read, staleness the age of the data read",
            )
        )
    )
    console.print(
        f"written to {result.out}/: " + ", ".join(sorted(p.name for p in result.files.values()))
    )


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """``offload lag run``: on the testbed of ``--config``, else on one of its own."""
    plan = plan_from(args)
    _replica_options(args, settings)  # usage errors before any server starts
    require("matplotlib", purpose="`offload lag run` (lag.png)")  # before any server starts
    out = Path(args.out)
    console = terminal()
    existing: Settings | None = None  # None: a testbed of its own
    if args.lag_config:
        existing = load_settings(Path(args.lag_config), os.environ)
    elif args.config:
        existing = settings
    if existing is None:
        replicas = max(args.replicas, plan.scenario.replicas_needed())
        console.print(
            f"starting a testbed of its own ({replicas} replica(s), free ports); "
            "it is stopped afterwards"
        )
        with OwnTestbed(replicas=replicas, prefix="offload-lag-") as own:
            configured = own.info.settings(base=_replica_options(args, Settings()))
            console.print(
                f"scenario {plan.scenario.spec} for {plan.duration:g} s ({own.info.flavor.value})"
            )
            with Bar(plan.duration, console) as bar:
                result = run_experiment(
                    configured, plan, out, topology=own.topology, progress=bar, testbed="own"
                )
    else:
        configured = _replica_options(args, existing)
        console.print(
            f"scenario {plan.scenario.spec} for {plan.duration:g} s on the testbed "
            f"of {existing.source or 'the environment'}"
        )
        with Bar(plan.duration, console) as bar:
            result = run_experiment(
                configured,
                plan,
                out,
                topology=topology_of(existing),
                progress=bar,
                testbed="config",
            )
    print_summary(console, result)
    return 0


def compare_command(args: argparse.Namespace, settings: Settings) -> int:
    """``offload lag compare DIR...``."""
    terminal().print(rich_table(compare([Path(d) for d in args.dirs])))
    return 0
