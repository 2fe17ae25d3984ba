"""One lag experiment, start to finish.

1. a fresh database on the testbed (``provision``): the nova schema, a seeded
   data set, the ``lag_burst`` table; replicas caught up, no delay, applier running;
2. the compute host's periodic tasks on a scheduler thread, every
   ``task_interval`` seconds, through a ``Database`` with the experiment's
   ``max_lag`` / ``lag_policy`` / ``causal_reads``, the servers' own knobs the plan
   asks for set (``testbed/knobs.py``; put back afterwards); the recorder samples every
   ``sample_interval`` and files every run; the workload writes at ``write_rate``;
3. the scenario's injections, each at its moment on the experiment's monotonic
   clock (from this thread);
4. at ``duration``: everything stopped, every injection lifted, and in ``out``:
   ``samples.csv``, ``runs.csv``, ``events.csv``, ``summary.json``,
   ``summary.md`` and ``lag.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import URL, text

from offload import replication
from offload.compute.host import build_manager
from offload.config import ComputeSettings, ServiceSettings, Settings
from offload.db import Database
from offload.dberrors import unpooled_engine
from offload.errors import ConfigError, ReplicationError
from offload.experiments.injector import Action, Injector
from offload.experiments.provision import experiment_database
from offload.experiments.recorder import Recorder
from offload.experiments.records import (
    Event,
    RunRow,
    Sample,
    read_events,
    read_runs,
    read_samples,
    write_csv,
)
from offload.experiments.scenarios import Scenario
from offload.experiments.summary import render_markdown, summarize
from offload.experiments.workload import Workload
from offload.extras import require
from offload.periodic import Scheduler
from offload.seed import host_names, seed
from offload.testbed.knobs import ApplierKnobs, knobs_in_force
from offload.testbed.native import NativeTopology
from offload.waiting import Deadline, wait_for

__all__ = [
    "OUTPUTS",
    "ExperimentPlan",
    "ExperimentResult",
    "Progress",
    "Window",
    "experiment_settings",
    "rebuild",
    "run_experiment",
]

log = logging.getLogger("offload.experiments")
#: the files an experiment writes
OUTPUTS = ("samples.csv", "runs.csv", "events.csv", "summary.json", "summary.md", "lag.png")
#: loggers that would speak at every run under injected lag (stale reads, overruns)
_CHATTY = ("offload.staleness", "offload.experiments.scheduler", "offload.compute")


@dataclass(frozen=True, slots=True)
class ExperimentPlan:
    """What to run: the scenario, for how long, under what load."""

    scenario: Scenario
    duration: float
    #: workload operations a second on the primary (0: none)
    write_rate: float = 20.0
    #: every periodic task runs this often (whole seconds: Nova's options are ints)
    task_interval: int = 1
    sample_interval: float = 0.1
    #: the seeded data set: instances over hosts compute-1..H; the tasks act for compute-1
    instances: int = 400
    hosts: int = 2
    seed: int = 0
    #: the servers' applier / semi-sync / group commit knobs for this run (None: as they are)
    knobs: ApplierKnobs = field(default_factory=ApplierKnobs)


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    """Where the outputs went, and the summary document."""

    out: Path
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


class Progress(Protocol):
    """What the runner tells a progress display, a few times a second."""

    def update(self, elapsed: float, status: str) -> None: ...


class Window(Protocol):
    """Told when the measured window opens (the load starts) and closes (it stops)."""

    def opened(self) -> None: ...

    def closed(self) -> None: ...


def experiment_settings(settings: Settings, plan: ExperimentPlan) -> Settings:
    """``settings`` with every task on, every ``task_interval`` s, for the seeded host."""
    every = plan.task_interval
    compute = ComputeSettings(
        periodic_interval_max=every,
        update_resources_interval=every,
        instance_delete_interval=every,
        instance_usage_audit=True,
        bandwidth_poll_interval=every,
        volume_usage_poll_interval=every,
        sync_power_state_interval=every,
        heal_instance_info_cache_interval=every,
        reboot_timeout=60,
        rescue_timeout=3600,
        resize_confirm_window=3600,
        shelved_poll_interval=every,
        shelved_offload_time=86400,
        reclaim_instance_interval=86400,
        running_deleted_instance_poll_interval=every,
    )
    # notifications stay in memory: never in a running service's file
    return dataclasses.replace(
        settings,
        host=host_names(plan.hosts)[0],
        compute=compute,
        service=ServiceSettings(jitter=0.1),
    )


@contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    """Warnings of the chatty loggers off while a progress bar runs (unless -v)."""
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        yield
        return
    loggers = [logging.getLogger(n) for n in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, before, strict=True):
            logger.setLevel(level)


def _status(recorder: Recorder, actions: Sequence[Action], done: int) -> str:
    latest = recorder.samples[-len(recorder.db.replicas) :] if recorder.samples else []
    lags = ", ".join(
        f"{s.replica} {s.lag:.2f}s" if s.lag is not None else f"{s.replica} -" for s in latest
    )
    last = actions[done - 1].what if done else "baseline"
    return f"lag {lags or '-'} | {last}"


def _drive(
    recorder: Recorder, actions: Sequence[Action], duration: float, progress: Progress | None
) -> None:
    """Run each action at its moment until ``duration``; tell ``progress`` meanwhile."""
    done = 0
    tick = threading.Event()  # never set: a wait with a timeout on the monotonic clock
    while True:
        while done < len(actions) and actions[done].at <= recorder.now():
            log.info("t=%.2fs %s", recorder.now(), actions[done].what)
            actions[done].run()
            done += 1
        now = recorder.now()
        if progress is not None:
            progress.update(min(now, duration), _status(recorder, actions, done))
        if now >= duration:
            return
        upcoming = actions[done].at if done < len(actions) else duration
        tick.wait(max(0.0, min(upcoming, duration, now + 0.25) - now))


def _caught_up(db: Database) -> bool:
    readings = db.guard.readings().values()
    limit = db.settings.replica.max_lag
    return bool(readings) and all(
        r.usable and r.lag is not None and r.lag <= limit for r in readings
    )


def run_experiment(
    settings: Settings,
    plan: ExperimentPlan,
    out: Path,
    *,
    topology: NativeTopology | None = None,
    progress: Progress | None = None,
    testbed: str = "config",
    window: Window | None = None,
) -> ExperimentResult:
    """Run ``plan`` on the testbed ``settings`` describes; write the outputs into ``out``.

    ``settings`` must name a primary, at least one replica and the testbed's
    privileged accounts; ``topology`` (a NativeTopology) is needed for kill-replica.
    """
    settings.require_connection()
    replicas = len(settings.database.slave_connections)
    if not replicas:
        raise ConfigError(
            "a lag experiment needs a replica ([database] slave_connection)",
            hint="use a testbed's config, or run without --config",
        )
    plan.scenario.check(plan.duration, replicas=replicas)
    Injector.requirements(
        plan.scenario, topology=topology, admin_urls=len(settings.testbed.replica_admin_connections)
    )
    admin = settings.testbed.admin_connection
    if not plan.knobs.empty and admin is None:
        raise ConfigError(
            "setting the servers' knobs for a run needs the testbed's privileged accounts",
            hint="use a testbed's config, or run without --config (a testbed of its own)",
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # never mix the files of two runs
        (out / name).unlink(missing_ok=True)
    with ExitStack() as stack:
        if admin is not None and not plan.knobs.empty:
            stack.enter_context(
                knobs_in_force(
                    admin,
                    settings.testbed.replica_admin_connections,
                    _flavor_of(admin),
                    plan.knobs,
                )
            )
        scratch = stack.enter_context(experiment_database(settings))
        stack.enter_context(_quiet(_CHATTY))
        return _run(
            experiment_settings(scratch.settings, plan),
            plan,
            out,
            topology=topology,
            progress=progress,
            testbed=testbed,
            window=window,
        )


def _flavor_of(url: URL) -> replication.Flavor:
    """The primary's flavor (the knobs' variable names depend on it)."""
    engine = unpooled_engine(url, name="primary")
    try:
        with engine.connect() as conn:
            return replication.server_flavor(conn)
    finally:
        engine.dispose()


def _run(
    settings: Settings,
    plan: ExperimentPlan,
    out: Path,
    *,
    topology: NativeTopology | None,
    progress: Progress | None,
    testbed: str,
    window: Window | None = None,
) -> ExperimentResult:
    started_at = datetime.now(UTC)
    setup_clock = time.monotonic()
    with ExitStack() as stack:
        primary_only = dataclasses.replace(
            settings, database=dataclasses.replace(settings.database, slave_connections=())
        )
        writer = Database(primary_only)  # the workload's and the set-up's: never traced
        stack.callback(writer.dispose)
        seed(writer, instances=plan.instances, hosts=plan.hosts, seed=plan.seed)

        db = Database(settings)
        stack.callback(db.dispose)
        manager = build_manager(settings, db)
        recorder = Recorder(
            db,
            status_urls=settings.testbed.replica_admin_connections,
            interval=plan.sample_interval,
        )
        stack.callback(recorder.close)
        workload = Workload(
            writer,
            settings.host,
            rate=plan.write_rate,
            driver=manager.compute.driver,
            seed=plan.seed,
        )
        injector = Injector(
            db.flavor,
            settings.testbed.replica_admin_connections,
            recorder=recorder,
            workload=workload,
            topology=topology,
        )
        stack.callback(injector.close)
        injector.reset()
        db.wait_for_replicas(timeout=60)
        manager.init_host()
        recorder.install()
        if not wait_for(lambda: _caught_up(db), Deadline(30), interval=0.05):
            raise ReplicationError(
                "the replicas did not come within max_lag before the start",
                hint="check `offload testbed status`",
            )
        workload.prepare()
        scheduler = Scheduler(
            [recorder.wrap(t) for t in manager.periodic_tasks()],
            jitter=settings.service.jitter,
            logger=logging.getLogger("offload.experiments.scheduler"),
        )
        stop = threading.Event()
        thread = threading.Thread(
            target=scheduler.run_forever, args=(stop,), name="lag-scheduler", daemon=True
        )
        actions = injector.timeline(plan.scenario)
        setup_seconds = time.monotonic() - setup_clock

        if window is not None:
            window.opened()
        recorder.restart_clock()
        recorder.start_sampling()
        workload.start()
        thread.start()
        try:
            _drive(recorder, actions, plan.duration, progress)
        finally:
            stop.set()
            workload.stop()
            if window is not None:
                window.closed()
            thread.join(timeout=120)
            recorder.stop_sampling()
            injector.finish(plan.scenario)
            injector.reset()
        meta = {
            "scenario": plan.scenario.spec,
            "name": plan.scenario.name,
            "duration": plan.duration,
            "write_rate": plan.write_rate,
            "task_interval": plan.task_interval,
            "sample_interval": plan.sample_interval,
            "instances": plan.instances,
            "hosts": plan.hosts,
            "host": settings.host,
            "max_lag": settings.replica.max_lag,
            "lag_policy": settings.replica.lag_policy.value,
            "causal_reads": settings.replica.causal_reads,
            "causal_timeout": settings.replica.causal_timeout,
            "heartbeat_interval": settings.replica.heartbeat_interval,
            "flavor": db.flavor.value,
            "server": _server(writer),
            "replicas": len(db.replicas),
            "testbed": testbed,
            "started_at": started_at.isoformat(timespec="seconds"),
            "setup_seconds": round(setup_seconds, 3),
            "workload": workload.stats(),
            "knobs": {k: v for k, v in dataclasses.asdict(plan.knobs).items() if v is not None},
        }
        return write_outputs(out, recorder.samples, recorder.runs, recorder.events, meta)


def _server(db: Database) -> str:
    """``mysql 9.7.4``: the primary's flavor and exact version, as it reports them."""
    with db.writer() as session:
        version = str(session.execute(text("SELECT VERSION()")).scalar_one())
    return replication.describe_server(replication.detect_flavor(version), version)


def write_outputs(
    out: Path,
    samples: Sequence[Sample],
    runs: Sequence[RunRow],
    events: Sequence[Event],
    meta: dict[str, Any],
) -> ExperimentResult:
    """The six files of an experiment, from its rows and its ``experiment`` section."""
    runs = sorted(runs, key=lambda r: r.t)
    events = sorted(events, key=lambda e: e.t)
    files = {
        "samples": write_csv(out / "samples.csv", samples, Sample),
        "runs": write_csv(out / "runs.csv", runs, RunRow),
        "events": write_csv(out / "events.csv", events, Event),
    }
    summary = summarize(samples, runs, events, meta)
    files["summary.json"] = out / "summary.json"
    files["summary.json"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    files["summary.md"] = out / "summary.md"
    files["summary.md"].write_text(render_markdown(summary), encoding="utf-8")
    causal = "on" if meta.get("causal_reads") else "off"
    title = (
        f"{meta.get('scenario')}\nmax_lag {meta.get('max_lag')} s, lag_policy "
        f"{meta.get('lag_policy')}, causal_reads {causal}, "
        f"{meta.get('write_rate'):g} writes/s ({meta.get('server', meta.get('flavor'))})"
    )
    require("matplotlib", purpose="lag.png (`offload lag`)")
    from offload.experiments.plot import plot_experiment  # noqa: PLC0415 - matplotlib: offload[lab]

    files["lag.png"] = plot_experiment(
        samples,
        runs,
        events,
        max_lag=float(meta["max_lag"]),
        duration=float(meta["duration"]),
        title=title,
        path=out / "lag.png",
    )
    return ExperimentResult(out, summary, files)


def rebuild(out: Path) -> ExperimentResult:
    """Summarise and plot a recorded directory again (its CSVs and summary.json)."""
    try:
        meta = json.loads((out / "summary.json").read_text(encoding="utf-8"))["experiment"]
        samples, runs = read_samples(out / "samples.csv"), read_runs(out / "runs.csv")
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{out} holds no recorded experiment ({exc})",
            hint="run `offload lag run --out DIR` first",
        ) from None
    return write_outputs(out, samples, runs, read_events(out / "events.csv"), meta)
