"""The staleness guard: which replica a READ_REPLICA session may use, and what to do if none.

Before a replica read, each replica's cached lag reading decides: a reachable
replica within ``max_lag`` is fit, the least lagged fit one wins (fit replicas
equally behind — all caught up, typically — take turns, so several replicas share
the reads).  A refresher thread keeps the readings younger than one heartbeat
interval, so the decision is a lookup.  Should a reading grow older (the refresher
is late), it is still proof while its lag plus its age stays within ``max_lag`` —
lag grows at most at wall-clock rate, so the replica cannot be further behind than
that — and the refresher is woken to read again at once; beyond that bound the
reading is unknown and the replica is read inline, before the decision.  When none
is fit, ``lag_policy`` says:
``primary`` (read there), ``skip`` (skip this run of the task), ``stale``
(read the least-lagged reachable replica anyway, logged with its lag).  A
replica that is fit again is chosen again at its next reading — nothing to
restart.  Every decision that is not "a fit replica" is counted by task and
reason.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import URL, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from offload.config import LagPolicy, Settings
from offload.errors import OffloadError
from offload.lag import HeartbeatWriter, LagProbe, LagReading
from offload.tracing import current_task
from offload.waiting import Clock

__all__ = [
    "CAUSAL_WAIT_BUCKETS",
    "Choice",
    "ReplicaSelector",
    "RoutingStats",
    "SkipRun",
    "StalenessGuard",
]

log = logging.getLogger("offload.staleness")
#: histogram buckets (seconds) of causal waits, for /metrics
CAUSAL_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class SkipRun(OffloadError):
    """lag_policy = skip: no replica is fit, so this run of the task does nothing."""


@dataclass(frozen=True, slots=True)
class Choice:
    """Where a replica read goes: a replica name, or None for the primary."""

    replica: str | None
    #: why not a fit replica: lag | unreachable | no_heartbeat | replica_is_primary
    #: (None: a fit one)
    reason: str | None = None
    lag: float | None = None
    #: True when the read knowingly goes to a replica beyond max_lag
    stale: bool = False


class RoutingStats:
    """Counters of routing decisions by task, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fallbacks: Counter[tuple[str, str]] = Counter()  # (task, reason)
        self.skips: Counter[tuple[str, str]] = Counter()
        #: reason -> the last decision's cause in words, with the fix where there is one
        self.causes: dict[str, str] = {}
        self.stale_reads: Counter[str] = Counter()
        self.causal_waits: Counter[str] = Counter()
        self.causal_wait_seconds: dict[str, float] = {}
        self.causal_buckets: Counter[float] = Counter()

    @staticmethod
    def _task() -> str:
        context = current_task()
        return context.task if context else "-"

    def fallback(self, reason: str, cause: str = "") -> None:
        with self._lock:
            self.fallbacks[(self._task(), reason)] += 1
            if cause:
                self.causes[reason] = cause

    def skip(self, reason: str, cause: str = "") -> None:
        with self._lock:
            self.skips[(self._task(), reason)] += 1
            if cause:
                self.causes[reason] = cause

    def why(self, reasons: Iterable[str]) -> dict[str, str]:
        """The last cause of each of ``reasons`` that has one (for reports)."""
        with self._lock:
            return {reason: self.causes[reason] for reason in reasons if reason in self.causes}

    def stale(self) -> None:
        with self._lock:
            self.stale_reads[self._task()] += 1

    def causal_wait(self, seconds: float) -> None:
        task = self._task()
        with self._lock:
            self.causal_waits[task] += 1
            self.causal_wait_seconds[task] = self.causal_wait_seconds.get(task, 0.0) + seconds
            for bound in CAUSAL_WAIT_BUCKETS:
                if seconds <= bound:
                    self.causal_buckets[bound] += 1
            self.causal_buckets[float("inf")] += 1

    def for_task(self, task: str) -> dict[str, object]:
        with self._lock:
            return {
                "fallbacks": {r: n for (t, r), n in self.fallbacks.items() if t == task},
                "skips": {r: n for (t, r), n in self.skips.items() if t == task},
                "stale_reads": self.stale_reads[task],
                "causal_waits": self.causal_waits[task],
                "causal_wait_seconds": round(self.causal_wait_seconds.get(task, 0.0), 6),
            }


class ReplicaSelector:
    """Keeps a fresh-enough lag reading per replica and applies the policy."""

    def __init__(
        self,
        probes: Sequence[LagProbe],
        *,
        max_lag: float,
        policy: LagPolicy,
        refresh: float,
        stats: RoutingStats,
        clock: Clock = time.monotonic,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.probes = {probe.name: probe for probe in probes}
        #: asks the refresher for new readings now (a reading is due), without waiting
        self._wake = wake
        self.max_lag = max_lag
        self.policy = policy
        self.refresh = refresh
        self.stats = stats
        self._clock = clock
        self._readings: dict[str, LagReading] = {}
        self._lock = threading.Lock()
        #: the last decision's reason (None: a fit replica), to log changes only
        self._last_reason: str | None = None
        #: whose turn it is among fit replicas equally behind (one step per decision)
        self._turn = itertools.count()

    def _note(self, reason: str | None, lag: float | None = None, cause: str = "") -> None:
        """Log when reads stop or start going to a fit replica — once per change, not per read."""
        with self._lock:
            previous, self._last_reason = self._last_reason, reason
        if reason == previous:
            return
        if reason is None:
            log.warning("a replica is fit to read again: replica reads go to it")
            return
        behind = f", best {lag:.3f}s behind" if lag is not None else ""
        log.warning(
            "no replica fit to read (%s%s): lag_policy %s applies until one is%s",
            reason,
            behind,
            self.policy,
            f"; {cause}" if cause else "",
        )

    def refresh_all(self) -> None:
        """Read every replica's lag now and keep the readings (the refresher thread's work).

        The probes run outside the lock, so a session's decision never waits for
        a round trip of this thread's; a reading only replaces an older one.
        """
        fresh = [probe.read() for probe in self.probes.values()]
        with self._lock:
            for reading in fresh:
                cached = self._readings.get(reading.replica)
                if cached is None or cached.at <= reading.at:
                    self._readings[reading.replica] = reading

    def make_due(self) -> None:
        """Age every cached reading by one refresh period, as when the refresher is late.

        What `make bench` measures as "lag check due": the next decision finds every
        reading older than one heartbeat interval.
        """
        with self._lock:
            for name, reading in self._readings.items():
                self._readings[name] = dataclasses.replace(reading, at=reading.at - self.refresh)

    def readings(self) -> dict[str, LagReading]:
        """Every replica's reading: a fit one while it proves fitness, others re-read inline.

        A fit reading taken at ``at`` with lag ``L`` proves the replica within
        ``max_lag`` while ``L + (now - at) <= max_lag``; one older than ``refresh``
        also wakes the refresher.  An unfit replica is re-read at every decision, so
        it is back in the moment it is fit again, not one refresh period later.
        """
        now = self._clock()
        due = False
        with self._lock:
            for name, probe in self.probes.items():
                cached = self._readings.get(name)
                if cached is not None and self._fit(cached) and self._proves(cached, now):
                    due = due or now - cached.at >= self.refresh
                    continue
                self._readings[name] = probe.read()
            readings = dict(self._readings)
        if due and self._wake is not None:
            self._wake()
        return readings

    def _proves(self, reading: LagReading, now: float) -> bool:
        """The reading still bounds the replica's lag within max_lag (lag + age)."""
        return (reading.lag or 0.0) + (now - reading.at) <= self.max_lag

    def _fit(self, reading: LagReading) -> bool:
        return reading.usable and reading.lag is not None and reading.lag <= self.max_lag

    def choose(self) -> Choice:
        readings = self.readings()
        fit = sorted((r for r in readings.values() if self._fit(r)), key=lambda r: r.lag or 0.0)
        if fit:
            self._note(None)
            tied = [r for r in fit if r.lag == fit[0].lag]
            chosen = tied[next(self._turn) % len(tied)] if len(tied) > 1 else fit[0]
            return Choice(chosen.replica, lag=chosen.lag)
        reachable = sorted((r for r in readings.values() if r.usable), key=lambda r: r.lag or 0.0)
        answering = [r for r in readings.values() if r.reachable]
        acting = [r for r in answering if r.acting_primary]
        if reachable:
            reason, worst = "lag", reachable[0]
        elif acting:  # the replica's URL leads to the primary: read there, as the primary
            reason, worst = "replica_is_primary", None
            answering = acting
        elif answering:
            reason, worst = "no_heartbeat", None
        else:
            reason, worst = "unreachable", None
        lag = worst.lag if worst else None
        cause = _cause(reason, answering or list(readings.values()))
        self._note(reason, lag, cause)
        if self.policy is LagPolicy.STALE and worst is not None:
            self.stats.stale()
            log.warning(
                "stale read: %s is %.3fs behind (max_lag %.3fs)",
                worst.replica,
                worst.lag or 0.0,
                self.max_lag,
            )
            return Choice(worst.replica, reason=reason, lag=lag, stale=True)
        if self.policy is LagPolicy.SKIP:
            self.stats.skip(reason, cause)
            raise SkipRun(
                f"no replica fit to read ({reason}"
                + (f", best {lag:.3f}s behind" if lag is not None else "")
                + ")"
                + (f": {cause}" if reason == "no_heartbeat" else "")
            )
        self.stats.fallback(reason, cause)
        return Choice(None, reason=reason, lag=lag)


def _cause(reason: str, readings: Sequence[LagReading]) -> str:
    """The replicas' own words for ``reason`` (no_heartbeat: which table, and the fix)."""
    if reason == "lag":
        return ""
    errors = sorted({f"{r.replica}: {r.error}" for r in readings if r.error})
    return "; ".join(errors)


EngineFactory = Callable[[URL, str], Engine]


class StalenessGuard:
    """The heartbeat writer (when offload feeds the heartbeat), the probes, the selector."""

    def __init__(
        self, settings: Settings, stats: RoutingStats, *, make_engine: EngineFactory
    ) -> None:
        options = settings.replica
        primary = settings.require_connection()
        self._make_engine = make_engine
        self._engines: list[Engine] = []
        self._primary_url = primary
        self._server_id: int | None = None
        self.writer: HeartbeatWriter | None = None
        if options.heartbeat_source == "offload":
            self.writer = HeartbeatWriter(
                self._engine(primary, "heartbeat"),
                table=options.heartbeat_table,
                interval=options.heartbeat_interval,
            )
            self.writer.start()
        probes = [
            LagProbe(
                f"replica{i}",
                self._engine(url, f"replica{i}-lag"),
                table=options.heartbeat_table,
                primary_server_id=self.primary_server_id,
                acting_primary=self.acting_primary,
                history=self.writer.history if self.writer else None,
            )
            for i, url in enumerate(settings.database.slave_connections)
        ]
        self._stop = threading.Event()
        self._due = threading.Event()
        self.selector = ReplicaSelector(
            probes,
            max_lag=options.max_lag,
            policy=options.lag_policy,
            refresh=options.heartbeat_interval,
            stats=stats,
            wake=self._due.set,
        )
        self._refresher: threading.Thread | None = None
        if probes:
            self.selector.refresh_all()  # the first decision finds a reading
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="offload-lag", daemon=True
            )
            self._refresher.start()

    def _refresh_loop(self) -> None:
        """Re-read every replica's lag twice per heartbeat interval, off the read path.

        A reading is thus at most half an interval (plus one probe) old when a
        session looks, so the guard still sees lag crossing ``max_lag`` within
        one heartbeat interval, and never probes inline while the replica is fit.
        """
        period = self.selector.refresh / 2
        while True:
            self._due.wait(period)  # a period, or less when a decision found a reading due
            self._due.clear()
            if self._stop.is_set():
                return
            try:
                self.selector.refresh_all()
            except Exception:
                log.exception("lag refresh failed")

    def _engine(self, url: URL, name: str) -> Engine:
        engine = self._make_engine(url, name)
        self._engines.append(engine)
        return engine

    def primary_server_id(self) -> int | None:
        """The primary's @@server_id: the heartbeat row to read (None if unknown yet)."""
        if self.writer is not None and self.writer.server_id is not None:
            return self.writer.server_id
        if self._server_id is None:
            try:
                with self._engine(self._primary_url, "primary-monitor").connect() as conn:
                    self._server_id = int(conn.execute(text("SELECT @@server_id")).scalar_one())
            except (OffloadError, SQLAlchemyError):
                return None
        return self._server_id

    def acting_primary(self) -> int | None:
        """The @@server_id of the server the heartbeat last went to: the acting primary,
        however the primary's endpoint moved (None: unknown, or pt-heartbeat feeds it)."""
        return self.writer.written_to if self.writer is not None else None

    def choose(self) -> Choice:
        return self.selector.choose()

    def readings(self) -> dict[str, LagReading]:
        return self.selector.readings()

    def close(self) -> None:
        self._stop.set()
        self._due.set()
        if self._refresher is not None:
            self._refresher.join(timeout=10)
            self._refresher = None
        if self.writer is not None:
            self.writer.stop()
        for probe in self.selector.probes.values():
            probe.close()
        for engine in self._engines:
            engine.dispose()
