"""The tables a person reads, from fixed documents (no server, no clock but the one given)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import RenderableType

from offload.compute.catalogue import TASKS
from offload.config import ComputeSettings
from offload.monitor import ServerReport
from offload.replication import ReplicaStatus
from offload.views import print_view, servers_view, status_view, tasks_view

PRIMARY_URL = "mysql+pymysql://nova:***@127.0.0.1:33061/nova"
REPLICA_URL = "mysql+pymysql://nova_ro:***@127.0.0.1:33062/nova"


@pytest.fixture(autouse=True)
def _no_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)


def rendered(*parts: RenderableType) -> list[str]:
    out = io.StringIO()
    print_view(*parts, file=out)
    return [line.rstrip() for line in out.getvalue().splitlines()]


def row(lines: list[str], first: str, *, table: int | None = None) -> list[str]:
    """The cells of the line that starts with ``first`` (cells hold no double space): the
    only one, or the one in the ``table``-th table that has such a line."""
    found = [line for line in lines if line.split("  ")[0] == first]
    assert len(found) == 1 or table is not None, "\n".join(lines)
    return [cell.strip() for cell in found[table or 0].split("  ") if cell.strip()]


def test_tasks_view_shows_interval_and_why_a_task_is_off() -> None:
    lines = rendered(tasks_view(TASKS, ComputeSettings(periodic_interval_max=45)))

    assert row(lines, "task") == ["task", "release", "every", "state"]
    assert row(lines, "_sync_power_states") == ["_sync_power_states", "icehouse", "600s", "on"]
    assert row(lines, "update_available_resource")[2] == "45s"  # 0: the default interval
    assert row(lines, "_poll_rebooting_instances")[3] == "off: reboot_timeout is 0"
    assert "\x1b[" not in "".join(lines)  # piped: no colours

    changed = rendered(tasks_view(TASKS, ComputeSettings(reboot_timeout=60)))
    assert row(changed, "_poll_rebooting_instances")[3] == "on"


def test_tasks_view_of_a_disabled_spacing() -> None:
    lines = rendered(tasks_view(TASKS, ComputeSettings(bandwidth_poll_interval=-1)))

    assert row(lines, "_poll_bandwidth_usage")[2:] == ["-", "off: bandwidth_poll_interval < 0"]


def _status(**changes: Any) -> ReplicaStatus:
    values: dict[str, Any] = {
        "io_running": "Yes",
        "sql_running": "Yes",
        "last_io_errno": 0,
        "last_io_error": "",
        "last_sql_errno": 0,
        "last_sql_error": "",
        "seconds_behind": 0,
        "source_host": "127.0.0.1",
        "source_port": 33061,
        "using_gtid": "Slave_Pos",
        "received_gtid": "0-1-57",
        "executed_gtid": "0-1-57",
        "sql_delay": 0,
        "sql_remaining_delay": None,
        "ssl_allowed": "Yes",
        "ssl_verify_server_cert": "Yes",
    }
    return ReplicaStatus(**{**values, **changes})


def _server(role: str, url: str, **changes: Any) -> ServerReport:
    values: dict[str, Any] = {
        "server_id": 1 if role == "primary" else 2,
        "version": "10.11.19-MariaDB-0+deb12u1-log",
        "read_only": role != "primary",
        "gtid_position": "0-1-57",
    }
    return ServerReport(role=role, url=url, **{**values, **changes})


def test_servers_view_of_running_replication() -> None:
    reports = [
        _server("primary", PRIMARY_URL),
        _server("replica0", REPLICA_URL, replica=_status(received_gtid="0-1-58")),
    ]

    lines = rendered(*servers_view(reports))

    assert row(lines, "primary") == [
        "primary", PRIMARY_URL, "1", "mariadb 10.11.19", "OFF", "-", "-", "-", "-", "0-1-57", "-",
        "-",
    ]  # fmt: skip
    assert row(lines, "replica0") == [
        "replica0", REPLICA_URL, "2", "mariadb 10.11.19", "ON", "Yes", "Yes", "0s", "-", "0-1-57",
        "0-1-58", "TLS, verified",
    ]  # fmt: skip
    assert len(lines) == 4  # header, rule, two rows: nothing to note


def test_servers_view_says_what_went_wrong() -> None:
    stopped = _status(
        sql_running="No",
        seconds_behind=None,
        last_sql_errno=1062,
        last_sql_error="Duplicate entry '7'\n for key 'PRIMARY'",
        sql_delay=5,
        ssl_allowed="No",
        ssl_verify_server_cert="No",
    )
    reports = [
        _server("primary", PRIMARY_URL),
        _server("replica0", REPLICA_URL, replica=stopped),
        ServerReport(role="replica1", url=REPLICA_URL, error="cannot connect to replica1"),
        _server("replica2", REPLICA_URL, notes=["not configured as a replica"]),
    ]

    lines = rendered(*servers_view(reports))

    assert row(lines, "replica0")[5:9] == ["Yes", "No", "NULL", "5s"]
    assert row(lines, "replica0")[-1] == "plain"
    assert "replica0: last SQL error 1062: Duplicate entry '7' for key 'PRIMARY'" in lines
    assert "replica1: UNREACHABLE: cannot connect to replica1" in lines
    assert "replica2: note: not configured as a replica" in lines


def test_servers_view_without_a_replica() -> None:
    lines = rendered(*servers_view([_server("primary", PRIMARY_URL)]))

    assert lines[-1].startswith("no replica configured")


def _task(name: str, **changes: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "task": name,
        "enabled": True,
        "off_because": None,
        "runs": 4,
        "failures": 1,
        "last_started": 1000.0,
        "last_duration": 0.0125,
        "rejected_writes": 2,
        "statements": {
            "replica:SELECT": 8,
            "primary:SELECT": 1,
            "write:SELECT": 1,
            "write:UPDATE": 3,
            "causal:SELECT": 1,
        },
        "routing": {"fallbacks": {"lag": 1}, "skips": {}, "causal_waits": 3},
    }
    return {**task, **changes}


TLS13 = {
    "version": "TLSv1.3",
    "cipher": "TLS_AES_256_GCM_SHA384",
    "cert_not_after": "2028-03-04T05:06:07+00:00",
    "cert_days_left": 824.46,
}


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "host": "compute-1",
        "uptime": 61.4,
        "health": "degraded",
        "degraded_because": ["replica0 1500 ms behind (max_lag 1000 ms)"],
        "primary": {"url": PRIMARY_URL, "reachable": True, "tls": TLS13},
        "max_lag_ms": 1000.0,
        "lag_policy": "primary",
        "cert_warning_days": 14.0,
        "replicas": [
            {
                "name": "replica0",
                "url": REPLICA_URL,
                "reachable": True,
                "lag_ms": 1500.25,
                "error": None,
                "fit": False,
                "io_running": "Yes",
                "sql_running": "No",
                "last_error": None,
                "seconds_behind": None,
                "gtid_distance": 12,
                "tls": TLS13,
                "replication_tls": {"ssl": True, "verify_server_cert": False},
            }
        ],
        "tasks": [
            _task("_poll_bandwidth_usage"),
            _task("_poll_rebooting_instances", enabled=False, off_because="reboot_timeout is 0"),
        ],
    }
    return {**document, **changes}


def test_status_view_of_the_running_service() -> None:
    lines = rendered(*status_view(_document(), live=True, now=1030.0))

    assert lines[0] == "compute service for compute-1: degraded (up 61s)"
    assert lines[1] == "  degraded: replica0 1500 ms behind (max_lag 1000 ms)"
    assert row(lines, "primary", table=0)[:3] == ["primary", PRIMARY_URL, "yes"]
    assert row(lines, "replica0", table=0) == [
        "replica0", REPLICA_URL, "yes", "1500.2", "NOT FIT", "Yes", "No", "NULL", "12"
    ]  # fmt: skip
    assert "max_lag 1000 ms, lag_policy primary" in lines
    # server, TLS, cipher, certificate until, days left, replication channel
    assert row(lines, "primary", table=1) == [
        "primary", "TLSv1.3", "TLS_AES_256_GCM_SHA384", "2028-03-04T05:06:07+00:00", "824.5", "-"
    ]  # fmt: skip
    assert row(lines, "replica0", table=1)[1:] == [
        "TLSv1.3", "TLS_AES_256_GCM_SHA384", "2028-03-04T05:06:07+00:00", "824.5",
        "TLS, NOT verified",
    ]  # fmt: skip
    # task, state, runs, fail, last run, ms, then statements and routing decisions
    assert row(lines, "_poll_bandwidth_usage")[:6] == [
        "_poll_bandwidth_usage", "on", "4", "1", "30s ago", "12.5"
    ]  # fmt: skip
    # replica SELECTs, primary SELECTs (causal lookups not counted), writes, rejected,
    # fallbacks, skips, causal waits
    assert row(lines, "_poll_bandwidth_usage")[6:] == ["8", "2", "3", "2", "1", "0", "3"]
    assert row(lines, "_poll_rebooting_instances") == [
        "_poll_rebooting_instances",
        "off: reboot_timeout is 0",
    ]


def test_status_view_without_a_service_shows_no_tasks() -> None:
    lines = rendered(*status_view(_document(replicas=[], degraded_because=[]), live=False))

    assert lines[0].startswith("compute service: not running")
    assert "no replica configured: every read goes to the primary" in lines
    assert not [line for line in lines if line.startswith("_poll_")]
