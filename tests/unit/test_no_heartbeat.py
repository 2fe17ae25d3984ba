"""no_heartbeat: the guard's reason when a replica answers without a heartbeat table, and
what the views say about it.

No server: probes are fakes with a fixed reading; the clock is injected.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from offload.config import LagPolicy
from offload.errors import MissingTable, OffloadError
from offload.lag import NO_HEARTBEAT_FIX, LagProbe, LagReading
from offload.staleness import ReplicaSelector, RoutingStats, SkipRun
from offload.tracing import task_scope
from offload.views import print_view, status_view


class FixedProbe:
    """A probe whose reading is set by the test."""

    def __init__(self, name: str, reading: LagReading) -> None:
        self.name = name
        self.reading = reading

    def read(self) -> LagReading:
        return self.reading


class RaisingEngine:
    """An engine whose every connection fails with ``error`` (as a translated driver error)."""

    def __init__(self, error: Exception, url: str = "mysql+pymysql://nova_ro@127.0.0.1/nova"):
        self.error = error
        self.url = make_url(url)

    def connect(self) -> Any:
        raise self.error


def _probe(error: Exception) -> LagProbe:
    return LagProbe(
        "replica0",
        RaisingEngine(error),  # type: ignore[arg-type]
        primary_server_id=lambda: 1,
        clock=lambda: 5.0,
    )


def test_missing_heartbeat_table_is_a_reachable_replica_without_lag() -> None:
    reading = _probe(
        MissingTable("replica0 127.0.0.1:3306: Table 'nova.heartbeat' doesn't exist", code=1146)
    ).read()

    assert reading.reachable
    assert reading.lag is None
    assert reading.unfit_reason == "no_heartbeat"
    assert "`nova.heartbeat`" in reading.error
    assert NO_HEARTBEAT_FIX in reading.error
    assert "offload db sync" in reading.error and "pt-heartbeat" in reading.error


def test_a_replica_that_does_not_answer_is_unreachable() -> None:
    reading = _probe(OffloadError("cannot connect to replica0")).read()

    assert not reading.reachable
    assert reading.unfit_reason == "unreachable"
    assert reading.error == "cannot connect to replica0"


def test_a_reading_with_lag_has_no_unfit_reason_of_its_own() -> None:
    assert LagReading("replica0", 3.0, reachable=True).unfit_reason is None


def _selector(*readings: LagReading, policy: LagPolicy = LagPolicy.PRIMARY) -> ReplicaSelector:
    return ReplicaSelector(
        [FixedProbe(r.replica, r) for r in readings],  # type: ignore[misc]
        max_lag=1.0,
        policy=policy,
        refresh=0.1,
        stats=RoutingStats(),
        clock=lambda: 0.0,
    )


NO_TABLE = LagReading(
    "replica0",
    None,
    reachable=True,
    error=f"no heartbeat table `nova.heartbeat` to measure lag by: {NO_HEARTBEAT_FIX}",
)


def test_no_heartbeat_table_falls_back_as_no_heartbeat_with_the_fix() -> None:
    selector = _selector(NO_TABLE)

    with task_scope("_sync_power_states"):
        choice = selector.choose()

    assert choice.replica is None
    assert choice.reason == "no_heartbeat"
    stats = selector.stats
    assert stats.for_task("_sync_power_states")["fallbacks"] == {"no_heartbeat": 1}
    why = stats.why(["no_heartbeat"])
    assert why == {"no_heartbeat": f"replica0: {NO_TABLE.error}"}


def test_no_heartbeat_skip_names_the_fix() -> None:
    selector = _selector(NO_TABLE, policy=LagPolicy.SKIP)

    with task_scope("_poll_volume_usage"), pytest.raises(SkipRun) as raised:
        selector.choose()

    assert "no_heartbeat" in raised.value.message
    assert "offload db sync" in raised.value.message
    assert selector.stats.for_task("_poll_volume_usage")["skips"] == {"no_heartbeat": 1}


def test_unreachable_only_when_no_replica_answers() -> None:
    down = LagReading("replica1", None, reachable=False, error="cannot connect")
    assert _selector(NO_TABLE, down).choose().reason == "no_heartbeat"
    assert _selector(down).choose().reason == "unreachable"
    assert _selector(LagReading("replica0", 3.0, reachable=True)).choose().reason == "lag"


def test_a_fit_replica_is_chosen_and_nothing_is_counted() -> None:
    selector = _selector(NO_TABLE, LagReading("replica1", 0.2, reachable=True))

    with task_scope("_sync_power_states"):
        choice = selector.choose()

    assert (choice.replica, choice.reason) == ("replica1", None)
    assert selector.stats.for_task("_sync_power_states")["fallbacks"] == {}
    assert selector.stats.why(["no_heartbeat"]) == {}


def _status(reason: str | None, error: str | None, degraded: list[str]) -> dict[str, Any]:
    return {
        "host": "compute-1",
        "uptime": 3.0,
        "health": "degraded" if degraded else "ok",
        "degraded_because": degraded,
        "primary": {"url": "mysql+pymysql://nova:***@127.0.0.1:33061/nova", "reachable": True},
        "max_lag_ms": 1000.0,
        "lag_policy": "primary",
        "replicas": [
            {
                "name": "replica0",
                "url": "mysql+pymysql://nova_ro:***@127.0.0.1:33062/nova",
                "reachable": True,
                "lag_ms": None if reason else 0.0,
                "error": error,
                "fit": reason is None,
                "unfit_reason": reason,
                "io_running": None,
                "sql_running": None,
                "last_error": None,
                "seconds_behind": None,
                "gtid_distance": None,
            }
        ],
        "tasks": [],
    }


def _render(status: dict[str, Any]) -> str:
    out = io.StringIO()  # not a terminal: the width of piped output
    print_view(*status_view(status, live=False), file=out)
    return out.getvalue()


def test_status_text_names_no_heartbeat_and_its_fix_once() -> None:
    degraded = [f"replica0: {NO_TABLE.error}"]
    text = _render(_status("no_heartbeat", NO_TABLE.error, degraded))

    assert "NOT FIT (no_heartbeat)" in text
    fix_lines = [line for line in text.splitlines() if "offload db sync" in line]
    assert len(fix_lines) == 1
    assert fix_lines[0].rstrip() == f"  degraded: {degraded[0]}"  # whole, on one line


def test_status_text_of_a_fit_replica_says_fit() -> None:
    text = _render(_status(None, None, []))
    assert "NOT FIT" not in text and " fit " in text
