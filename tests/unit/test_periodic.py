"""Unit tests for offload.periodic, on a fake monotonic clock: nothing really sleeps."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest

from offload.errors import ConfigError
from offload.periodic import (
    IDLE_WHEN_NO_TASKS,
    PeriodicTask,
    Scheduler,
    TaskStats,
    UnknownTask,
    install_signal_handlers,
)

START = 1000.0
LOGGER = "offload.tests.periodic"


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, f"time cannot go back ({seconds})"
        self.now += seconds


class FakeStop(threading.Event):
    """A stop event whose ``wait`` advances the fake clock; the ``waits``-th wait sets it.

    So ``run_forever`` runs the tasks due in the first ``waits - 1`` idle periods.
    """

    def __init__(self, clock: FakeClock, *, waits: int) -> None:
        super().__init__()
        self.clock = clock
        self.max_waits = waits
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None and timeout >= 0, f"bad idle {timeout!r}"
        self.waits.append(timeout)
        self.clock.advance(timeout)
        if len(self.waits) >= self.max_waits:
            self.set()
        return self.is_set()


class FixedRandom(random.Random):
    """A generator whose ``random()`` always returns ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class Recorder:
    """A task function recording the clock at each start; may take time or raise."""

    def __init__(
        self, clock: FakeClock, *, takes: float = 0.0, error: BaseException | None = None
    ) -> None:
        self.clock = clock
        self.takes = takes
        self.error = error
        self.starts: list[float] = []

    def __call__(self) -> str:
        self.starts.append(self.clock.now)
        self.clock.advance(self.takes)
        if self.error is not None:
            raise self.error
        return f"run {len(self.starts)}"


def scheduler(
    clock: FakeClock, *tasks: PeriodicTask, jitter: float = 0.0, rng: random.Random | None = None
) -> Scheduler:
    return Scheduler(
        tasks,
        clock=clock,
        wall_clock=lambda: 1.7e9 + clock.now,
        rng=rng or random.Random(1),
        jitter=jitter,
        logger=logging.getLogger(LOGGER),
    )


def run_until(sched: Scheduler, clock: FakeClock, end: float) -> None:
    """Drive ``run_due`` as ``run_forever`` would, until the clock passes ``end``."""
    while clock.now <= end:
        clock.advance(sched.run_due())


# --- PeriodicTask -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "   "])
def test_task_without_a_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        PeriodicTask(name, lambda: None, 10)


@pytest.mark.parametrize("spacing", [-1.0, -0.001, math.nan, math.inf])
def test_negative_or_undefined_spacing_is_refused(spacing: float) -> None:
    with pytest.raises(ValueError, match="_poll: spacing"):
        PeriodicTask("_poll", lambda: None, spacing)


def test_spacing_zero_or_enabled_false_disables_a_task() -> None:
    assert PeriodicTask("a", lambda: None, 1).is_enabled
    assert not PeriodicTask("a", lambda: None, 0).is_enabled
    assert not PeriodicTask("a", lambda: None, 1, enabled=False).is_enabled


# --- first runs -----------------------------------------------------------------------


def test_first_run_is_one_spacing_after_start() -> None:
    clock = FakeClock()
    task = Recorder(clock)
    sched = scheduler(clock, PeriodicTask("t", task, 10))

    assert sched.run_due() == 10.0
    clock.advance(9.5)
    assert sched.run_due() == 0.5
    assert task.starts == []
    clock.advance(0.5)
    sched.run_due()

    assert task.starts == [START + 10]


def test_run_immediately_runs_at_start_then_every_spacing() -> None:
    clock = FakeClock()
    task = Recorder(clock)
    sched = scheduler(clock, PeriodicTask("t", task, 10, run_immediately=True))

    run_until(sched, clock, START + 25)

    assert task.starts == [START, START + 10, START + 20]


def test_run_immediately_is_not_delayed_by_jitter() -> None:
    clock = FakeClock()
    task = Recorder(clock)
    sched = scheduler(
        clock, PeriodicTask("t", task, 10, run_immediately=True), jitter=0.5, rng=FixedRandom(0.9)
    )

    sched.run_due()

    assert task.starts == [START]
    assert sched.stats["t"].next_due == START + 10 + 0.9 * 0.5 * 10


def test_start_fixes_the_schedule_before_the_first_run_due() -> None:
    clock = FakeClock()
    sched = scheduler(clock, PeriodicTask("t", Recorder(clock), 10))
    assert sched.stats["t"].next_due is None

    sched.start()
    clock.advance(3)
    sched.start()  # idempotent: the schedule keeps its anchor

    assert sched.stats["t"].next_due == START + 10


# --- disabled tasks -------------------------------------------------------------------


def test_disabled_tasks_never_run_and_are_listed_as_disabled() -> None:
    clock = FakeClock()
    off_by_spacing, off_by_flag, on = Recorder(clock), Recorder(clock), Recorder(clock)
    tasks = (
        PeriodicTask("_poll_volume_usage", off_by_spacing, 0, run_immediately=True),
        PeriodicTask("_instance_usage_audit", off_by_flag, 5, enabled=False, run_immediately=True),
        PeriodicTask("update_available_resource", on, 60),
    )
    sched = scheduler(clock, *tasks)

    sched.run_forever(FakeStop(clock, waits=10))

    assert off_by_spacing.starts == off_by_flag.starts == []
    assert len(on.starts) == 9
    assert sched.tasks == tasks
    assert sched.enabled_tasks == (tasks[2],)
    for name in ("_poll_volume_usage", "_instance_usage_audit"):
        assert sched.stats[name].enabled is False
        assert sched.stats[name].next_due is None
        assert sched.stats[name].runs == 0
    assert sched.stats["update_available_resource"].enabled is True


def test_with_no_enabled_task_run_due_idles_for_the_cap() -> None:
    clock = FakeClock()
    sched = scheduler(clock, PeriodicTask("off", Recorder(clock), 0))

    assert sched.run_due() == IDLE_WHEN_NO_TASKS == 60.0
    assert scheduler(clock).run_due() == IDLE_WHEN_NO_TASKS


# --- spacing: start to start, no drift, no catching up --------------------------------


def test_spacing_is_start_to_start_without_drift() -> None:
    clock = FakeClock()
    task = Recorder(clock, takes=3.0)
    sched = scheduler(clock, PeriodicTask("t", task, 10))

    stop = FakeStop(clock, waits=5)
    sched.run_forever(stop)

    assert task.starts == [START + 10, START + 20, START + 30, START + 40]
    assert stop.waits == [10.0, 7.0, 7.0, 7.0, 7.0]  # the run's 3s are part of the spacing


def test_a_late_wake_up_does_not_shift_the_schedule() -> None:
    clock = FakeClock()
    task = Recorder(clock)
    sched = scheduler(clock, PeriodicTask("t", task, 10))
    sched.start()

    clock.advance(14)  # the loop was busy elsewhere
    sched.run_due()
    next_idle = sched.run_due()

    assert task.starts == [START + 14]
    assert next_idle == 6.0  # due at START + 20, not START + 24
    assert sched.stats["t"].next_due == START + 20


def test_an_overrunning_task_skips_missed_runs_instead_of_catching_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    task = Recorder(clock, takes=25.0)  # spacing 10: misses two slots
    sched = scheduler(clock, PeriodicTask("_sync_power_states", task, 10))

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        sched.run_forever(FakeStop(clock, waits=5))

    # each next run is a full spacing after the overrun ended, never back to back
    assert task.starts == [START + 10, START + 45, START + 80, START + 115]
    assert "_sync_power_states overran" in caplog.text


def test_after_an_overrun_run_due_idles_a_full_spacing() -> None:
    clock = FakeClock()
    sched = scheduler(clock, PeriodicTask("t", Recorder(clock, takes=12.0), 10))
    sched.start()
    clock.advance(10)

    assert sched.run_due() == 10.0


def test_tasks_run_in_order_of_due_time_then_registration() -> None:
    clock = FakeClock()
    order: list[str] = []

    def task(name: str, spacing: float) -> PeriodicTask:
        return PeriodicTask(name, lambda: order.append(name), spacing)

    sched = scheduler(clock, task("a", 5), task("b", 3), task("c", 4), task("d", 3))
    sched.start()
    clock.advance(5)
    sched.run_due()

    assert order == ["b", "d", "c", "a"]


# --- jitter ---------------------------------------------------------------------------


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999999])
def test_jitter_delays_by_a_fraction_of_the_spacing(draw: float) -> None:
    clock = FakeClock()
    task = Recorder(clock)
    sched = scheduler(clock, PeriodicTask("t", task, 10), jitter=0.1, rng=FixedRandom(draw))
    sched.start()

    assert sched.stats["t"].next_due == pytest.approx(START + 10 + draw * 1.0)
    clock.advance(sched.run_due())
    sched.run_due()
    assert task.starts == [pytest.approx(START + 10 + draw)]


def test_jitter_stays_within_bounds_and_spreads_hosts() -> None:
    delays = []
    for seed in range(200):
        clock = FakeClock()
        sched = scheduler(
            clock, PeriodicTask("t", lambda: None, 8), jitter=0.25, rng=random.Random(seed)
        )
        sched.start()
        due = sched.stats["t"].next_due
        assert due is not None
        delays.append(due - (START + 8))

    assert all(0.0 <= d < 2.0 for d in delays)
    assert max(delays) - min(delays) > 1.5  # hosts really are spread out


def test_jitter_is_deterministic_with_a_seeded_rng() -> None:
    def starts(seed: int) -> list[float]:
        clock = FakeClock()
        task = Recorder(clock)
        sched = scheduler(clock, PeriodicTask("t", task, 10), jitter=0.2, rng=random.Random(seed))
        sched.run_forever(FakeStop(clock, waits=8))
        return task.starts

    expected = random.Random(7)
    first = START + 10 + expected.random() * 0.2 * 10

    assert starts(7) == starts(7)
    assert starts(7)[0] == pytest.approx(first)
    assert starts(7) != starts(8)


def test_jitter_does_not_accumulate() -> None:
    clock = FakeClock()
    task = Recorder(clock)
    sched = scheduler(clock, PeriodicTask("t", task, 10), jitter=0.3, rng=random.Random(3))

    sched.run_forever(FakeStop(clock, waits=40))

    assert len(task.starts) >= 19
    for i, started in enumerate(task.starts):
        slot = START + 10 * (i + 1)
        assert slot <= started < slot + 3.0, f"run {i} at {started} is off its slot {slot}"


@pytest.mark.parametrize("jitter", [-0.1, 1.5, math.nan])
def test_jitter_outside_zero_to_one_is_refused(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        scheduler(FakeClock(), jitter=jitter)


# --- failures -------------------------------------------------------------------------


def test_a_failing_task_is_isolated_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    failing = Recorder(clock, takes=0.5, error=RuntimeError("replica\n  went away"))
    other = Recorder(clock)
    sched = scheduler(
        clock,
        PeriodicTask("_poll_bandwidth_usage", failing, 10),
        PeriodicTask("_heal_instance_info_cache", other, 10),
    )
    sched.start()
    clock.advance(10)

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        idle = sched.run_due()

    assert len(other.starts) == 1
    assert idle == pytest.approx(9.5)  # the failed task is rescheduled, not retried at once
    stats = sched.stats["_poll_bandwidth_usage"]
    assert (stats.runs, stats.failures) == (1, 1)
    assert stats.last_error == "RuntimeError: replica went away"
    assert stats.last_duration == 0.5
    assert sched.stats["_heal_instance_info_cache"].failures == 0
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "_poll_bandwidth_usage" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


def test_a_successful_run_clears_last_error_but_keeps_the_count() -> None:
    clock = FakeClock()
    task = Recorder(clock, error=ValueError())
    sched = scheduler(clock, PeriodicTask("t", task, 10))
    sched.start()
    clock.advance(10)
    sched.run_due()
    assert sched.stats["t"].last_error == "ValueError"

    task.error = None
    clock.advance(10)
    sched.run_due()

    assert sched.stats["t"].last_error is None
    assert (sched.stats["t"].runs, sched.stats["t"].failures) == (2, 1)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)])
def test_base_exceptions_are_not_swallowed(error: BaseException) -> None:
    clock = FakeClock()
    after = Recorder(clock)
    sched = scheduler(
        clock,
        PeriodicTask("interrupted", Recorder(clock, error=error), 10, run_immediately=True),
        PeriodicTask("after", after, 10, run_immediately=True),
    )

    with pytest.raises(type(error)):
        sched.run_forever(FakeStop(clock, waits=5))

    assert after.starts == []
    assert sched.stats["interrupted"].failures == 0  # not a task failure: an interruption


# --- run_due's idle -------------------------------------------------------------------


def test_run_due_returns_the_time_until_the_next_task() -> None:
    clock = FakeClock()
    sched = scheduler(
        clock, PeriodicTask("slow", Recorder(clock), 10), PeriodicTask("fast", Recorder(clock), 4)
    )

    assert sched.run_due() == 4.0
    clock.advance(1)
    assert sched.run_due() == 3.0


def test_run_due_returns_zero_when_a_task_is_already_due_again() -> None:
    clock = FakeClock()
    sched = scheduler(
        clock,
        PeriodicTask("long", Recorder(clock, takes=7.0), 10),
        PeriodicTask("short", Recorder(clock), 3),
    )
    sched.start()
    clock.advance(10)  # both due; "long" then pushes the clock past "short"'s next time

    assert sched.run_due() == 0.0


# --- run_once -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registered", "asked"),
    [
        ("_poll_bandwidth_usage", "_poll_bandwidth_usage"),
        ("_poll_bandwidth_usage", "poll_bandwidth_usage"),
        ("update_available_resource", "_update_available_resource"),
    ],
)
def test_run_once_by_name_with_or_without_underscore(registered: str, asked: str) -> None:
    clock = FakeClock()
    task = Recorder(clock, takes=2.0)
    sched = scheduler(clock, PeriodicTask(registered, task, 600))
    sched.start()

    assert sched.run_once(asked) == "run 1"

    stats = sched.stats[registered]
    assert task.starts == [START]
    assert (stats.runs, stats.last_started, stats.last_duration) == (1, 1.7e9 + START, 2.0)
    assert stats.next_due == START + 600  # the schedule is not touched


def test_run_once_prefers_the_exact_name() -> None:
    clock = FakeClock()
    plain, underscored = Recorder(clock), Recorder(clock)
    sched = scheduler(
        clock, PeriodicTask("audit", plain, 10), PeriodicTask("_audit", underscored, 10)
    )

    sched.run_once("_audit")

    assert (len(plain.starts), len(underscored.starts)) == (0, 1)


def test_run_once_runs_a_disabled_task_and_reraises_its_error() -> None:
    clock = FakeClock()
    sched = scheduler(
        clock, PeriodicTask("_poll_volume_usage", Recorder(clock, error=OSError("no volume")), 0)
    )

    with pytest.raises(OSError, match="no volume"):
        sched.run_once("poll_volume_usage")

    stats = sched.stats["_poll_volume_usage"]
    assert (stats.runs, stats.failures, stats.last_error) == (1, 1, "OSError: no volume")


def test_run_once_with_an_unknown_name_says_what_exists() -> None:
    clock = FakeClock()
    sched = scheduler(clock, PeriodicTask("_sync_power_states", Recorder(clock), 10))

    with pytest.raises(UnknownTask) as caught:
        sched.run_once("sync_power_state")

    assert isinstance(caught.value, KeyError)
    assert isinstance(caught.value, ConfigError)
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "no periodic task named 'sync_power_state'; known tasks: _sync_power_states"
    )


# --- run_forever and stopping ---------------------------------------------------------


def test_run_forever_waits_what_run_due_returns_and_stops_with_the_event() -> None:
    clock = FakeClock()
    task = Recorder(clock)
    stop = FakeStop(clock, waits=3)
    sched = scheduler(clock, PeriodicTask("t", task, 5, run_immediately=True))

    sched.run_forever(stop)

    assert stop.waits == [5.0, 5.0, 5.0]
    assert task.starts == [START, START + 5, START + 10]
    assert clock.now == START + 15


def test_run_forever_finishes_the_running_task_then_stops() -> None:
    clock = FakeClock()
    stop = FakeStop(clock, waits=100)
    events: list[str] = []

    def interrupted() -> None:
        events.append("started")
        stop.set()  # e.g. SIGTERM arrives while the task runs
        clock.advance(4)
        events.append("finished")

    sched = scheduler(
        clock,
        PeriodicTask("first", interrupted, 10, run_immediately=True),
        PeriodicTask("second", lambda: events.append("second ran"), 10, run_immediately=True),
    )

    sched.run_forever(stop)

    assert events == ["started", "finished"]
    assert clock.now == START + 4
    assert sched.stats["first"].last_duration == 4.0
    assert sched.stats["second"].next_due == START  # still due: it runs after a restart


def test_run_forever_with_the_event_already_set_runs_nothing() -> None:
    clock = FakeClock()
    task = Recorder(clock)
    stop = FakeStop(clock, waits=1)
    stop.set()

    scheduler(clock, PeriodicTask("t", task, 1, run_immediately=True)).run_forever(stop)

    assert task.starts == []


# --- stats ----------------------------------------------------------------------------


def test_stats_are_json_friendly_and_count_skips() -> None:
    clock = FakeClock()
    sched = scheduler(clock, PeriodicTask("t", Recorder(clock, takes=1.5), 10))
    sched.start()
    clock.advance(10)
    sched.run_due()
    clock.advance(10)
    sched.run_due()
    sched.stats["t"].record_skip()

    data = json.loads(json.dumps(sched.stats["t"].as_dict()))

    assert data == {
        "name": "t",
        "enabled": True,
        "runs": 2,
        "failures": 0,
        "skipped": 1,
        "last_started": 1.7e9 + START + 21.5,
        "last_duration": 1.5,
        "last_error": None,
        "next_due": START + 30,
        "total_duration": 3.0,
    }


def test_stats_cannot_be_replaced_from_outside() -> None:
    sched = scheduler(FakeClock(), PeriodicTask("t", lambda: None, 1))

    with pytest.raises(TypeError):
        sched.stats["t"] = TaskStats("t")  # type: ignore[index]


def test_task_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="registered twice: t"):
        scheduler(FakeClock(), PeriodicTask("t", lambda: None, 1), PeriodicTask("t", print, 2))


# --- signals --------------------------------------------------------------------------


Handlers = dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None]


@pytest.fixture
def restore_handlers() -> Iterator[Handlers]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield saved
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_sigterm_sets_the_stop_event_and_handlers_are_restored(
    restore_handlers: Handlers,
) -> None:
    stop = threading.Event()
    restore = install_signal_handlers(stop)
    assert signal.getsignal(signal.SIGTERM) is not restore_handlers[signal.SIGTERM]

    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.is_set()

    restore()
    assert signal.getsignal(signal.SIGTERM) is restore_handlers[signal.SIGTERM]
    assert signal.getsignal(signal.SIGINT) is restore_handlers[signal.SIGINT]


def test_a_second_sigint_interrupts(restore_handlers: Handlers) -> None:
    stop = threading.Event()
    restore = install_signal_handlers(stop)
    try:
        signal.raise_signal(signal.SIGINT)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        restore()


def test_signal_handlers_need_the_main_thread(restore_handlers: Handlers) -> None:
    errors: list[BaseException] = []

    def install() -> None:
        try:
            install_signal_handlers(threading.Event())
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()

    assert len(errors) == 1 and "main thread" in str(errors[0])
