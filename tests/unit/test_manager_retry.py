"""A run that loses its connection is run again, within a budget; the clock is fake."""

from __future__ import annotations

import pytest

from offload.compute.catalogue import TaskFunc, TaskSpec
from offload.compute.context import Compute, RunReport
from offload.compute.driver import FakeDriver
from offload.compute.manager import ComputeManager
from offload.compute.notifier import MemoryNotifier
from offload.config import ComputeSettings, DatabaseSettings, Settings
from offload.db import Database
from offload.errors import ConnectionLost, Deadlock, ReadOnlyRefused
from offload.staleness import SkipRun
from offload.urls import parse_url

# no server behind it: these tasks never touch the database
URL = parse_url("mysql+pymysql://nova:pw@127.0.0.1:1/nova", option="test")


def _manager(func: TaskFunc, slept: list[float], attempts: int = 4) -> ComputeManager:
    db = Database(Settings(database=DatabaseSettings(connection=URL)))
    compute = Compute(
        host="compute-1",
        db=db,
        driver=FakeDriver("compute-1"),
        notifier=MemoryNotifier("compute-1"),
        options=ComputeSettings(),
    )
    manager = ComputeManager(compute, retry_attempts=attempts, sleep=slept.append)
    manager._specs["_fake"] = TaskSpec("_fake", func, "juno", None)
    return manager


def test_connection_lost_is_retried_until_it_works() -> None:
    calls: list[int] = []

    def flaky(c: Compute, report: RunReport) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionLost("lost the connection to primary")
        report.items = 7

    slept: list[float] = []
    report = _manager(flaky, slept).run("_fake")
    assert len(calls) == 3 and report.items == 7 and report.error is None
    assert report.details["attempts"] == 3
    assert len(slept) == 2 and all(0 < s <= 2.0 for s in slept)


def test_the_budget_is_bounded_and_the_error_is_reported() -> None:
    def always_lost(c: Compute, report: RunReport) -> None:
        raise Deadlock("deadlock found")

    slept: list[float] = []
    manager = _manager(always_lost, slept, attempts=3)
    with pytest.raises(Deadlock):
        manager.run("_fake")
    assert len(slept) == 2
    assert manager.last_reports["_fake"].error == "Deadlock: deadlock found"
    assert manager.totals["_fake"]["failures"] == 1


def test_other_errors_are_not_retried() -> None:
    slept: list[float] = []

    def broken(c: Compute, report: RunReport) -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        _manager(broken, slept).run("_fake")
    assert slept == []


def test_skip_run_is_a_skip_not_a_failure() -> None:
    def skipped(c: Compute, report: RunReport) -> None:
        raise SkipRun("no replica fit to read (lag)")

    manager = _manager(skipped, [])
    report = manager.run("_fake")
    assert report.skipped == "no replica fit to read (lag)" and report.error is None
    assert manager.totals["_fake"]["failures"] == 0


def test_a_write_refused_as_read_only_is_retried() -> None:
    """A switchover's read-only primary (1290/1836) refuses a write: the run goes again."""
    calls: list[int] = []

    def refused_once(c: Compute, report: RunReport) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ReadOnlyRefused("the primary refused a write (1290 --read-only)")
        report.items = 1

    slept: list[float] = []
    report = _manager(refused_once, slept).run("_fake")
    assert len(calls) == 2 and report.error is None and report.details["attempts"] == 2
