"""Recording an experiment: replica samples every 100 ms, and what every task run did.

* A sampler thread reads, every ``interval``, each replica's heartbeat lag
  (``db.guard.readings()``); a status thread reads, through a privileged
  account, its replication status: GTID distance (received but not applied),
  ``Seconds_Behind``, threads.
* The staleness guard's selector is replaced by a ``RecordingSelector`` — the
  same probes, limits and policy — that remembers, per task run, every routing
  decision with the lag readings it was made on.  So a run's *staleness* is the
  lag the guard itself saw when it sent the read to a replica.
* A tracer sink counts each run's statements by route, server and verb: the
  primary statements a run caused, the reads that fell back there.
* ``wrap(task)`` turns a scheduler task into one that files a ``RunRow`` per run.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from offload import replication
from offload.compute.context import RunReport
from offload.db import Database, make_engine
from offload.errors import OffloadError
from offload.experiments.records import Event, RunRow, Sample, format_reasons
from offload.gtid import gtid_distance
from offload.lag import LagReading
from offload.periodic import PeriodicTask
from offload.staleness import Choice, ReplicaSelector, SkipRun
from offload.tracing import StatementRecord, current_task
from offload.waiting import Clock

__all__ = ["Decision", "Recorder", "RecordingSelector", "RunStatements"]

log = logging.getLogger("offload.experiments")
#: GTID distance, Seconds_Behind, IO thread, SQL thread
_Status = tuple[int | None, int | None, str, str]
_NO_STATUS: _Status = (None, None, "", "")
#: a status older than this is not used for a sample
_STATUS_MAX_AGE = 0.5


@dataclass(frozen=True, slots=True)
class Decision:
    """One routing decision of the staleness guard, for one READ_REPLICA session."""

    #: the replica chosen (None: the primary, or skipped)
    replica: str | None
    #: lag of the chosen replica; for the primary/skip, the best replica's lag
    lag: float | None
    #: the least lagged usable replica's lag at that moment
    best_lag: float | None
    stale: bool = False
    skipped: bool = False
    reason: str | None = None


def _best(readings: dict[str, LagReading]) -> float | None:
    lags = [r.lag for r in readings.values() if r.usable and r.lag is not None]
    return min(lags) if lags else None


class RecordingSelector(ReplicaSelector):
    """The guard's selector (same probes, max_lag, policy), remembering each decision by run."""

    def __init__(
        self, inner: ReplicaSelector, on_decision: Callable[[str, str, Decision], None]
    ) -> None:
        super().__init__(
            list(inner.probes.values()),
            max_lag=inner.max_lag,
            policy=inner.policy,
            refresh=inner.refresh,
            stats=inner.stats,
        )
        self._on_decision = on_decision
        self._seen = threading.local()

    def readings(self) -> dict[str, LagReading]:
        result = super().readings()
        self._seen.readings = result  # what this thread's decision is made on
        return result

    def choose(self) -> Choice:
        context = current_task()
        try:
            choice = super().choose()
        except SkipRun:
            if context is not None:
                best = _best(getattr(self._seen, "readings", {}))
                self._on_decision(
                    context.task,
                    context.run,
                    Decision(None, best, best, skipped=True, reason="skip"),
                )
            raise
        if context is not None:
            best = _best(getattr(self._seen, "readings", {}))
            self._on_decision(
                context.task,
                context.run,
                Decision(
                    choice.replica, choice.lag, best, stale=choice.stale, reason=choice.reason
                ),
            )
        return choice


class RunStatements:
    """A tracer sink: each task run's statements by (route, target, verb)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_run: dict[str, Counter[tuple[str, str, str]]] = {}

    def __call__(self, record: StatementRecord) -> None:
        if record.run is None:
            return
        key = (record.route or "none", record.target, record.verb)
        with self._lock:
            self._by_run.setdefault(record.run, Counter())[key] += 1

    def pop(self, run: str) -> Counter[tuple[str, str, str]]:
        with self._lock:
            return self._by_run.pop(run, Counter())


@dataclass(slots=True)
class _Pending:
    task: str
    decisions: list[Decision] = field(default_factory=list)


class Recorder:
    """Samples, runs and events of one experiment, on one monotonic clock."""

    def __init__(
        self,
        db: Database,
        *,
        status_urls: Sequence[URL] = (),
        interval: float = 0.1,
        clock: Clock = time.monotonic,
    ) -> None:
        self.db = db
        self.interval = interval
        self._clock = clock
        self.started = clock()
        self.samples: list[Sample] = []
        self.runs: list[RunRow] = []
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._statements = RunStatements()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._latest_status: dict[int, tuple[float, _Status]] = {}
        options = dataclasses.replace(db.settings.database, max_pool_size=1, max_overflow=1)
        self._status: list[Engine | None] = [
            make_engine(status_urls[index], options, name=f"{target.name}-status")
            if index < len(status_urls)
            else None
            for index, target in enumerate(db.replicas)
        ]
        self._flavor: replication.Flavor | None = None

    # --- time ------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the experiment started."""
        return self._clock() - self.started

    def restart_clock(self) -> None:
        """Make now the experiment's time 0 (after setting up)."""
        self.started = self._clock()

    # --- installation ------------------------------------------------------------

    def install(self) -> None:
        """Replace the guard's selector with a recording one; count statements by run."""
        guard = self.db.guard
        if not isinstance(guard.selector, RecordingSelector):
            guard.selector = RecordingSelector(guard.selector, self._decided)
        self.db.tracer.add_sink(self._statements)
        self._flavor = self.db.flavor

    def _decided(self, task: str, run: str, decision: Decision) -> None:
        with self._lock:
            self._pending.setdefault(run, _Pending(task)).decisions.append(decision)

    # --- samples -------------------------------------------------------------------

    def _status_of(self, index: int) -> _Status:
        engine = self._status[index] if index < len(self._status) else None
        if engine is None or self._flavor is None:
            return _NO_STATUS
        try:
            with engine.connect() as conn:
                status = replication.replica_status(conn, self._flavor)
        except (OffloadError, SQLAlchemyError):
            return _NO_STATUS
        if status is None:
            return _NO_STATUS
        distance = gtid_distance(status.received_gtid, status.executed_gtid, self._flavor)
        return distance, status.seconds_behind, status.io_running, status.sql_running

    def poll_status(self) -> None:
        """Read every replica's replication status now (kept for the next samples)."""
        for index in range(len(self.db.replicas)):
            value = self._status_of(index)
            with self._lock:
                self._latest_status[index] = (self._clock(), value)

    def _fresh_status(self, index: int) -> _Status:
        with self._lock:
            read_at, value = self._latest_status.get(index, (0.0, _NO_STATUS))
        return value if self._clock() - read_at <= _STATUS_MAX_AGE else _NO_STATUS

    def sample(self) -> list[Sample]:
        """One sample of every replica, now (also kept in ``samples``).

        The lag is read now; thread states and GTID distance are the latest the
        status thread read (at most half a second old, else unknown): SHOW
        REPLICA STATUS waits while replication is being stopped, and must not
        hold up the lag samples.
        """
        t = self.now()
        try:
            readings = self.db.guard.readings()
        except (OffloadError, SQLAlchemyError) as exc:  # never stop sampling for one miss
            log.debug("lag reading failed: %s", exc)
            readings = {}
        rows = []
        for index, target in enumerate(self.db.replicas):
            reading = readings.get(target.name)
            distance, behind, io, sql = self._fresh_status(index)
            rows.append(
                Sample(
                    t=round(t, 4),
                    replica=target.name,
                    lag=reading.lag if reading is not None else None,
                    reachable=bool(reading and reading.reachable),
                    gtid_distance=distance,
                    seconds_behind=behind,
                    io_running=io,
                    sql_running=sql,
                )
            )
        with self._lock:
            self.samples.extend(rows)
        return rows

    def _every_interval(self, work: Callable[[], object]) -> None:
        due = self._clock()
        while not self._stop.is_set():
            work()
            due += self.interval
            now = self._clock()
            if due < now:  # a slow round: keep the grid, skip the missed slots
                due += ((now - due) // self.interval + 1) * self.interval
            self._stop.wait(max(0.0, due - now))

    def start_sampling(self) -> None:
        """The sampler and the status thread, every ``interval``."""
        if not self._threads:
            self._stop.clear()
            self.poll_status()
            for name, work in (("lag-status", self.poll_status), ("lag-sampler", self.sample)):
                thread = threading.Thread(
                    target=self._every_interval, args=(work,), name=name, daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def stop_sampling(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    # --- events ----------------------------------------------------------------------

    def event(
        self,
        kind: str,
        label: str,
        *,
        start: float,
        end: float | None,
        target: str = "",
        detail: str = "",
    ) -> Event:
        """File an injection that happened from ``start`` to ``end`` (experiment seconds)."""
        row = Event(
            round(start, 4), None if end is None else round(end, 4), kind, label, target, detail
        )
        with self._lock:
            self.events.append(row)
        return row

    # --- task runs -------------------------------------------------------------------

    def wrap(self, task: PeriodicTask) -> PeriodicTask:
        """The same task, filing a RunRow for every run (its func must return a RunReport)."""
        func = task.func

        def recorded() -> object:
            started = self.now()
            try:
                result = func()
            except Exception as exc:
                self._failed(task.name, started, exc)
                raise
            if isinstance(result, RunReport):
                self.record(result, started, self.now())
            return result

        return dataclasses.replace(task, func=recorded)

    def _failed(self, name: str, started: float, exc: Exception) -> None:
        with self._lock:  # the run id is not known: drop what the task's runs left pending
            for run in [r for r, p in self._pending.items() if p.task == name]:
                del self._pending[run]
            self.runs.append(
                RunRow(
                    t=round(started, 4),
                    end=round(self.now(), 4),
                    task=name,
                    run="",
                    route="error",
                    error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200],
                )
            )

    def record(self, report: RunReport, started: float, ended: float) -> RunRow:
        """File one finished run."""
        with self._lock:
            pending = self._pending.pop(report.run, _Pending(report.task))
        counts = self._statements.pop(report.run)
        routing = report.details.get("routing", {})
        fallbacks: dict[str, int] = dict(routing.get("fallbacks", {}))
        replica_selects = sum(
            n
            for (route, target, verb), n in counts.items()
            if target != "primary" and verb == "SELECT"
        )
        primary_reads = sum(
            n
            for (route, target, verb), n in counts.items()
            if target == "primary" and verb == "SELECT" and route in ("replica", "primary")
        )
        primary_writes = sum(
            n
            for (route, target, _verb), n in counts.items()
            if target == "primary" and route == "write"
        )
        primary_statements = sum(
            n for (_route, target, _verb), n in counts.items() if target == "primary"
        )
        decisions = pending.decisions
        used = [d for d in decisions if d.replica is not None]
        skipped = any(d.skipped for d in decisions)
        staleness: float | None
        if report.error is not None:
            route, staleness = "error", None
        elif skipped:
            route, staleness = "skip", None
        elif used and replica_selects:
            route = "stale" if any(d.stale for d in used) else "replica"
            staleness = max(d.lag or 0.0 for d in used)
        elif decisions or primary_reads:
            route, staleness = "primary", 0.0
        else:
            route, staleness = "none", None
        bests = [d.best_lag for d in decisions if d.best_lag is not None]
        row = RunRow(
            t=round(started, 4),
            end=round(ended, 4),
            task=report.task,
            run=report.run,
            route=route,
            replica=",".join(sorted({d.replica for d in used if d.replica}))
            if route in ("replica", "stale")
            else "",
            staleness=None if staleness is None else round(staleness, 4),
            decision_lag=round(max(bests), 4) if bests else None,
            reasons=format_reasons(fallbacks),
            fallbacks=sum(fallbacks.values()),
            skips=sum(dict(routing.get("skips", {})).values()),
            stale_reads=int(routing.get("stale_reads", 0)),
            causal_waits=int(routing.get("causal_waits", 0)),
            rejected=report.rejected,
            written=report.written,
            items=report.items,
            replica_selects=replica_selects,
            primary_reads=primary_reads,
            primary_writes=primary_writes,
            primary_statements=primary_statements,
            duration=round(report.duration, 4),
            error=report.error or "",
        )
        with self._lock:
            self.runs.append(row)
        return row

    def close(self) -> None:
        self.stop_sampling()
        self.db.tracer.remove_sink(self._statements)
        for engine in self._status:
            if engine is not None:
                engine.dispose()
