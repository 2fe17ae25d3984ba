"""Periodic tasks and the scheduler that runs them — the heartbeat of the compute service.

A :class:`PeriodicTask` names a function and how often it runs; a :class:`Scheduler`
runs an explicitly registered list of them on one thread.  The timing follows
oslo.service's periodic tasks, written afresh:

* spacing is measured start to start on the monotonic clock, without drift: the
  next run is the previous *scheduled* time plus the spacing;
* a task that overran (its next time is already past when it finishes) runs next
  ``spacing`` after it finished — missed runs are skipped, never bunched;
* every scheduled time is delayed by a random ``[0, jitter * spacing)``, so many
  compute hosts do not hit the database in lockstep (a ``run_immediately`` first
  run is not delayed);
* a spacing of 0 or ``enabled=False`` disables a task, as an interval of 0 does in Nova;
* a task's ``Exception`` is logged and counted, and the other tasks still run;
  ``BaseException`` (KeyboardInterrupt, SystemExit) is never swallowed.

Clocks, random generator and stop event are injected, so tests never sleep.
A scheduler is not thread-safe: drive it from one thread.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import KW_ONLY, asdict, dataclass
from types import FrameType, MappingProxyType

from offload.errors import ConfigError
from offload.waiting import Clock

__all__ = [
    "IDLE_WHEN_NO_TASKS",
    "PeriodicTask",
    "Scheduler",
    "TaskStats",
    "UnknownTask",
    "install_signal_handlers",
]

#: seconds ``Scheduler.run_due`` asks the caller to idle when no task is enabled
IDLE_WHEN_NO_TASKS = 60.0


@dataclass(frozen=True)
class PeriodicTask:
    """A function run every ``spacing`` seconds (start to start); 0 disables it."""

    name: str
    func: Callable[[], object]
    spacing: float
    _: KW_ONLY
    run_immediately: bool = False
    enabled: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a periodic task needs a non-empty name")
        if not (math.isfinite(self.spacing) and self.spacing >= 0):
            raise ValueError(
                f"periodic task {self.name}: spacing must be a finite number of seconds"
                f" >= 0 (0 disables it), not {self.spacing!r}"
            )

    @property
    def is_enabled(self) -> bool:
        """True when the scheduler runs this task: enabled and a spacing above 0."""
        return self.enabled and self.spacing > 0


@dataclass
class TaskStats:
    """What happened to one task so far; ``as_dict()`` is ready for JSON."""

    name: str
    enabled: bool = True
    runs: int = 0  # every run, failed ones included
    failures: int = 0
    skipped: int = 0  # counted by callers (e.g. a task that found nothing to do)
    last_started: float | None = None  # wall clock (time.time())
    last_duration: float | None = None  # seconds
    last_error: str | None = None  # "ExcType: message" of the last run; None if it succeeded
    next_due: float | None = None  # monotonic clock; None while disabled or not started
    total_duration: float = 0.0

    def record_skip(self) -> None:
        self.skipped += 1

    def as_dict(self) -> dict[str, str | int | float | bool | None]:
        return asdict(self)


class UnknownTask(ConfigError, KeyError):
    """``Scheduler.run_once`` was given a name no registered task has (exit status 2)."""


class Scheduler:
    """Runs the enabled tasks of a fixed list when they are due (see the module doc)."""

    def __init__(
        self,
        tasks: Iterable[PeriodicTask],
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        rng: random.Random | None = None,
        jitter: float = 0.1,
        logger: logging.Logger | None = None,
    ) -> None:
        self._tasks = tuple(tasks)
        names = [task.name for task in self._tasks]
        if twice := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"periodic tasks registered twice: {', '.join(twice)}")
        if not 0 <= jitter <= 1:  # also NaN
            raise ValueError(f"jitter is a fraction of the spacing in [0, 1], not {jitter!r}")
        self._by_name = dict(zip(names, self._tasks, strict=True))
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else random.Random()
        self._jitter = jitter
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._stats = {t.name: TaskStats(t.name, enabled=t.is_enabled) for t in self._tasks}
        self._scheduled: dict[str, float] = {}  # next run of each enabled task, before jitter
        self._due: dict[str, float] = {}  # ... and after jitter
        self._started = False

    @property
    def tasks(self) -> tuple[PeriodicTask, ...]:
        return self._tasks

    @property
    def enabled_tasks(self) -> tuple[PeriodicTask, ...]:
        return tuple(task for task in self._tasks if task.is_enabled)

    @property
    def stats(self) -> Mapping[str, TaskStats]:
        return MappingProxyType(self._stats)

    def start(self) -> None:
        """Fix every enabled task's first run; the first ``run_due`` does it if needed."""
        if self._started:
            return
        self._started = True
        now = self._clock()
        for task in self.enabled_tasks:
            if task.run_immediately:
                self._set_due(task, now, now)
            else:
                self._schedule(task, now + task.spacing)

    def run_due(self, *, stop: threading.Event | None = None) -> float:
        """Run every task that is due; return the seconds until the next one is.

        Tasks run in order of due time, then of registration.  ``stop``, when set,
        keeps the tasks not yet started for later.
        """
        self.start()
        now = self._clock()
        order = sorted(
            (self._due[task.name], index)
            for index, task in enumerate(self._tasks)
            if task.name in self._due and self._due[task.name] <= now
        )
        for _, index in order:
            if stop is not None and stop.is_set():
                break
            task = self._tasks[index]
            try:
                self._execute(task)
            except Exception:  # noqa: BLE001 - isolating one task's failure is the point
                self._log.exception("periodic task %s failed", task.name)
            finally:
                self._reschedule(task)
        if not self._due:
            return IDLE_WHEN_NO_TASKS
        return max(0.0, min(self._due.values()) - self._clock())

    def run_forever(self, stop: threading.Event) -> None:
        """Run due tasks and idle until ``stop`` is set; a running task is finished first."""
        self._log.info(
            "periodic scheduler started: %d of %d tasks enabled",
            len(self.enabled_tasks),
            len(self._tasks),
        )
        while not stop.is_set():
            stop.wait(self.run_due(stop=stop))
        self._log.info("periodic scheduler stopped")

    def run_once(self, name: str) -> object:
        """Run one task now (``_name`` or ``name``), disabled or not; its exception propagates.

        The stats are updated; the task's schedule is not.
        """
        other = name[1:] if name.startswith("_") else f"_{name}"
        task = self._by_name.get(name) or self._by_name.get(other)
        if task is None:
            raise UnknownTask(
                f"no periodic task named {name!r}",
                hint=f"known tasks: {', '.join(self._by_name) or 'none'}",
            )
        return self._execute(task)

    def _execute(self, task: PeriodicTask) -> object:
        stats = self._stats[task.name]
        stats.runs += 1
        stats.last_started = self._wall_clock()
        started = self._clock()
        try:
            result = task.func()
        except Exception as exc:
            stats.failures += 1
            stats.last_error = _one_line(exc)
            raise
        finally:
            stats.last_duration = self._clock() - started
            stats.total_duration += stats.last_duration
        stats.last_error = None
        return result

    def _reschedule(self, task: PeriodicTask) -> None:
        now = self._clock()
        following = self._scheduled[task.name] + task.spacing
        if following < now:
            self._log.warning(
                "periodic task %s overran its spacing of %gs by %.3fs; skipping missed runs",
                task.name,
                task.spacing,
                now - following,
            )
            following = now + task.spacing
        self._schedule(task, following)

    def _schedule(self, task: PeriodicTask, at: float) -> None:
        delay = self._rng.random() * self._jitter * task.spacing if self._jitter else 0.0
        self._set_due(task, at, at + delay)

    def _set_due(self, task: PeriodicTask, scheduled: float, due: float) -> None:
        self._scheduled[task.name] = scheduled
        self._due[task.name] = self._stats[task.name].next_due = due


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """Set ``stop`` on SIGTERM and SIGINT; return a function that restores the old handlers.

    A second SIGINT while ``stop`` is already set raises KeyboardInterrupt, so Ctrl-C
    twice still interrupts a task that does not finish.  Main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("signal handlers can only be installed from the main thread")

    def handle(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    return restore
