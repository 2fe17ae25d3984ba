"""Unit tests for offload.waiting, driven by a fake clock: nothing really sleeps."""

from __future__ import annotations

import math

import pytest

from offload.waiting import Deadline, wait_for


class FakeClock:
    """A monotonic clock that moves only when ``sleep`` is called."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"negative sleep {seconds}"
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Predicate:
    """True from the ``succeed_on``-th call on (never when None); records call times."""

    def __init__(self, clock: FakeClock, succeed_on: int | None = None) -> None:
        self.clock = clock
        self.succeed_on = succeed_on
        self.times: list[float] = []

    def __call__(self) -> bool:
        self.times.append(self.clock.now)
        return self.succeed_on is not None and len(self.times) >= self.succeed_on


# --- Deadline -------------------------------------------------------------------


def test_deadline_elapsed_and_remaining_follow_the_clock() -> None:
    clock = FakeClock()
    deadline = Deadline(2.0, clock=clock)

    assert deadline.elapsed() == 0.0
    assert deadline.remaining() == 2.0
    assert not deadline.expired()

    clock.advance(0.5)
    assert deadline.elapsed() == 0.5
    assert deadline.remaining() == 1.5
    assert not deadline.expired()


def test_deadline_expires_exactly_at_its_end() -> None:
    clock = FakeClock()
    deadline = Deadline(2.0, clock=clock)

    clock.advance(1.999)
    assert not deadline.expired()
    clock.advance(0.001)
    assert deadline.expired()
    assert deadline.remaining() == 0.0


def test_deadline_remaining_never_goes_negative() -> None:
    clock = FakeClock()
    deadline = Deadline(1.0, clock=clock)

    clock.advance(5.0)

    assert deadline.remaining() == 0.0
    assert deadline.elapsed() == 5.0
    assert deadline.expired()


def test_zero_deadline_is_expired_at_once() -> None:
    deadline = Deadline(0, clock=FakeClock())

    assert deadline.expired()
    assert deadline.remaining() == 0.0


def test_deadline_starts_when_created() -> None:
    clock = FakeClock(start=50.0)
    clock.advance(10.0)
    deadline = Deadline(1.0, clock=clock)

    assert deadline.elapsed() == 0.0
    assert not deadline.expired()


@pytest.mark.parametrize("seconds", [-0.001, -1, -math.inf, math.nan])
def test_deadline_in_the_past_or_undefined_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="deadline"):
        Deadline(seconds, clock=FakeClock())


# --- wait_for -------------------------------------------------------------------


def test_wait_for_returns_true_at_once_without_sleeping() -> None:
    clock = FakeClock()
    predicate = Predicate(clock, succeed_on=1)

    assert wait_for(predicate, Deadline(5.0, clock=clock), interval=0.1, sleep=clock.sleep)

    assert predicate.times == [1000.0]
    assert clock.sleeps == []


def test_wait_for_returns_as_soon_as_the_predicate_holds() -> None:
    clock = FakeClock()
    predicate = Predicate(clock, succeed_on=4)

    assert wait_for(predicate, Deadline(5.0, clock=clock), interval=0.25, sleep=clock.sleep)

    assert len(predicate.times) == 4
    assert clock.sleeps == [0.25, 0.25, 0.25]
    assert clock.now == pytest.approx(1000.75)


def test_wait_for_sleeps_with_the_interval() -> None:
    clock = FakeClock()
    predicate = Predicate(clock)

    assert not wait_for(predicate, Deadline(1.0, clock=clock), interval=0.2, sleep=clock.sleep)

    assert clock.sleeps[:4] == pytest.approx([0.2, 0.2, 0.2, 0.2])
    assert sum(clock.sleeps) == pytest.approx(1.0)


def test_wait_for_gives_up_after_the_deadline() -> None:
    clock = FakeClock()
    predicate = Predicate(clock)
    deadline = Deadline(1.0, clock=clock)

    assert wait_for(predicate, deadline, interval=0.3, sleep=clock.sleep) is False

    assert deadline.expired()
    assert clock.now == pytest.approx(1001.0)  # not a moment longer


def test_wait_for_never_sleeps_past_the_deadline() -> None:
    clock = FakeClock()
    predicate = Predicate(clock)

    wait_for(predicate, Deadline(1.0, clock=clock), interval=0.3, sleep=clock.sleep)

    # 0.3 + 0.3 + 0.3, then only what is left
    assert clock.sleeps == pytest.approx([0.3, 0.3, 0.3, 0.1])


def test_wait_for_tries_once_more_at_the_deadline() -> None:
    clock = FakeClock()
    predicate = Predicate(clock)

    wait_for(predicate, Deadline(1.0, clock=clock), interval=0.3, sleep=clock.sleep)

    assert predicate.times[-1] == pytest.approx(1001.0)
    assert len(predicate.times) == len(clock.sleeps) + 1


def test_wait_for_reports_a_condition_that_became_true_in_the_last_sleep() -> None:
    clock = FakeClock()
    predicate = Predicate(clock, succeed_on=5)  # the call at the deadline

    assert wait_for(predicate, Deadline(1.0, clock=clock), interval=0.3, sleep=clock.sleep)

    assert predicate.times[-1] == pytest.approx(1001.0)


def test_wait_for_with_an_expired_deadline_tries_once() -> None:
    clock = FakeClock()
    deadline = Deadline(0.5, clock=clock)
    clock.advance(3.0)
    predicate = Predicate(clock)

    assert wait_for(predicate, deadline, interval=0.1, sleep=clock.sleep) is False

    assert len(predicate.times) == 1
    assert clock.sleeps == []


def test_wait_for_interval_longer_than_the_deadline() -> None:
    clock = FakeClock()
    predicate = Predicate(clock)

    assert not wait_for(predicate, Deadline(0.5, clock=clock), interval=10.0, sleep=clock.sleep)

    assert clock.sleeps == [0.5]
    assert len(predicate.times) == 2


def test_wait_for_accounts_for_time_spent_in_the_predicate() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def slow_predicate() -> bool:
        calls.append(clock.now)
        clock.advance(0.3)  # a slow query
        return False

    assert not wait_for(
        slow_predicate, Deadline(1.0, clock=clock), interval=0.25, sleep=clock.sleep
    )

    # t=0 try, 0.3 sleep 0.25; 0.55 try, 0.85 sleep what is left; 1.0 last try
    assert clock.sleeps == pytest.approx([0.25, 0.15])
    assert calls == pytest.approx([1000.0, 1000.55, 1001.0])
