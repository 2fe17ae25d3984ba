"""What an operator sees: each server as it reports itself, and the status document.

One collector, ``ask``: one connection to one server (a privileged account where there is
one) reads its identity, its GTID position and, on a replica, SHOW REPLICA STATUS.  Without
the privilege that needs (REPLICATION CLIENT / SLAVE MONITOR) the report says so instead of
failing.  ``offload testbed status`` shows ``collect``'s reports of every server;
``offload status`` and the service's ``/status`` show ``status_document``: the primary's
health, each replica's heartbeat lag (``replica_views``: a SELECT-only account is enough)
with its threads, errors and GTID distance from ``ask``, and the tasks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

from sqlalchemy import URL, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from offload import replication
from offload.compute.catalogue import TASKS, TaskSpec
from offload.config import Settings
from offload.db import Database
from offload.dberrors import is_access_denied, unpooled_engine
from offload.errors import OffloadError
from offload.flavor import detect_flavor
from offload.gtid import gtid_distance
from offload.periodic import TaskStats
from offload.statusdoc import ReplicaView, RoutingView, StatusDocument, TaskView
from offload.urls import masked

__all__ = [
    "ServerReport",
    "ask",
    "collect",
    "health",
    "replica_views",
    "status_document",
    "task_view",
]

#: seconds to wait for a server's answer before reporting it unreachable
CONNECT_TIMEOUT: Final = 3
_NO_PRIVILEGE: Final = (
    "replica status needs the REPLICATION CLIENT/SLAVE MONITOR privilege, which this account lacks"
)
_NOT_A_REPLICA: Final = "not configured as a replica"


@dataclass(slots=True)
class ServerReport:
    """One server as it reports itself (``error`` set when it could not be asked)."""

    role: str
    url: str
    error: str = ""
    server_id: int | None = None
    version: str = ""
    read_only: bool | None = None
    gtid_position: str = ""
    replica: replication.ReplicaStatus | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "role": self.role,
            "url": self.url,
            "error": self.error or None,
            "server_id": self.server_id,
            "version": self.version,
            "read_only": self.read_only,
            "gtid_position": self.gtid_position,
            "notes": self.notes,
        }
        data["replication"] = self.replica.as_dict() if self.replica else None
        return data


def ask(role: str, url: URL, *, shown: URL | None = None) -> ServerReport:
    """What the server behind ``url`` says about itself; ``role`` 'primary' or a replica's name.

    ``shown`` is the URL the report names (default ``url``), masked.
    """
    report = ServerReport(role=role, url=masked(shown if shown is not None else url))
    engine = unpooled_engine(url, name=role, connect_timeout=CONNECT_TIMEOUT)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT @@server_id, VERSION(), @@read_only")).one()
            report.server_id, report.version, report.read_only = int(row[0]), row[1], bool(row[2])
            flavor = detect_flavor(report.version)
            if role == "primary":
                report.gtid_position = replication.gtid_position(conn, flavor)
                return report
            try:
                report.replica = replication.replica_status(conn, flavor)
            except (OffloadError, SQLAlchemyError) as exc:
                if not is_access_denied(exc):
                    raise
                report.notes.append(_NO_PRIVILEGE)
            if report.replica is not None:
                report.gtid_position = report.replica.executed_gtid
            elif not report.notes:
                report.notes.append(_NOT_A_REPLICA)
    except OffloadError as exc:
        report.error = str(exc)
    except SQLAlchemyError as exc:
        report.error = str(getattr(exc, "orig", exc)).splitlines()[0]
    finally:
        engine.dispose()
    return report


def collect(settings: Settings) -> list[ServerReport]:
    """Reports for the primary and every replica, the testbed's admin accounts preferred."""
    primary = settings.require_connection()
    reports = [ask("primary", settings.testbed.admin_connection or primary, shown=primary)]
    admins: Sequence[URL] = settings.testbed.replica_admin_connections
    for index, url in enumerate(settings.database.slave_connections):
        admin = admins[index] if index < len(admins) else url
        reports.append(ask(f"replica{index}", admin, shown=url))
    return reports


def _add_threads(view: ReplicaView, report: ServerReport) -> None:
    """A replica's ``ask`` report into its view: thread states, or why there are none."""
    status = report.replica
    if report.error:
        view["status_error"] = report.error.splitlines()[0]
    elif status is None:
        view["status_error"] = report.notes[0] if report.notes else _NOT_A_REPLICA
    else:
        view["io_running"] = status.io_running
        view["sql_running"] = status.sql_running
        view["last_error"] = status.last_sql_error or status.last_io_error or None
        view["seconds_behind"] = status.seconds_behind
        view["received_gtid"] = status.received_gtid
        view["executed_gtid"] = status.executed_gtid
        view["gtid_distance"] = gtid_distance(
            status.received_gtid, status.executed_gtid, detect_flavor(report.version)
        )


def replica_views(db: Database, status_urls: Sequence[URL] = ()) -> list[ReplicaView]:
    """One JSON-ready dict per replica: heartbeat lag, and with ``status_urls`` (privileged,
    one per replica) thread states, last error and GTID distance."""
    if not db.replicas:
        return []
    readings = db.guard.readings()
    views = []
    for index, target in enumerate(db.replicas):
        reading = readings.get(target.name)
        fit = bool(
            reading
            and reading.usable
            and reading.lag is not None
            and reading.lag <= db.settings.replica.max_lag
        )
        view: ReplicaView = {
            "name": target.name,
            "url": masked(target.engine.url),
            "reachable": bool(reading and reading.reachable),
            "lag_ms": round(reading.lag * 1000, 3) if reading and reading.lag is not None else None,
            "error": (reading.error or None) if reading else "not read",
            "fit": fit,
            # lag | unreachable | no_heartbeat, as the guard's fallbacks count them
            "unfit_reason": None if fit else (reading.unfit_reason or "lag") if reading else None,
            "io_running": None,
            "sql_running": None,
            "last_error": None,
            "seconds_behind": None,
            "gtid_distance": None,
        }
        if index < len(status_urls):
            _add_threads(view, ask(target.name, status_urls[index]))
        else:
            view["status_error"] = "thread states need a privileged account; none is configured"
        views.append(view)
    return views


def _routing(db: Database, task: str) -> RoutingView:
    """The task's routing counters and, for each reason it met, its cause in words (``why``)."""
    routing = cast(RoutingView, db.routing.for_task(task))
    reasons = {*routing["fallbacks"], *routing["skips"]}
    if reasons:
        routing["why"] = db.routing.why(reasons)
    return routing


def health(settings: Settings, db: Database, engine: Engine) -> tuple[bool, list[str]]:
    """(the primary answers on ``engine``, reasons the service is degraded)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (OffloadError, SQLAlchemyError) as exc:
        return False, [f"primary: {str(exc).splitlines()[0]}"]
    reasons = []
    if db.replicas:
        for name, reading in db.guard.readings().items():
            if not reading.reachable:
                reasons.append(f"{name} unreachable")
            elif reading.lag is None:
                reasons.append(f"{name}: {reading.error or 'lag unknown'}")
            elif reading.lag > settings.replica.max_lag:
                reasons.append(
                    f"{name} {reading.lag * 1000:.0f} ms behind "
                    f"(max_lag {settings.replica.max_lag * 1000:.0f} ms)"
                )
    return True, reasons


def task_view(
    spec: TaskSpec,
    settings: Settings,
    db: Database,
    *,
    stats: TaskStats | None = None,
    rejected: int = 0,
    statements: Mapping[str, int] | None = None,
    last_run: Mapping[str, Any] | None = None,
) -> TaskView:
    """One task of the status document; without ``stats``, a task that never ran."""
    off = spec.off_because(settings.compute)
    if stats is None:
        stats = TaskStats(spec.name, enabled=off is None)
    return {
        "task": spec.name,
        "release": spec.release,
        "enabled": stats.enabled,
        "off_because": off,
        "spacing": spec.spacing(settings.compute),
        "runs": stats.runs,
        "failures": stats.failures,
        "last_started": stats.last_started,
        "last_duration": stats.last_duration,
        "last_error": stats.last_error,
        "rejected_writes": rejected,
        "statements": dict(sorted((statements or {}).items())),
        # RoutingStats.for_task writes exactly RoutingView's keys
        "routing": _routing(db, spec.name),
        "last_run": dict(last_run) if last_run is not None else None,
    }


def status_document(
    settings: Settings,
    db: Database,
    engine: Engine,
    *,
    tasks: Sequence[TaskView] | None = None,
    started: float | None = None,
) -> StatusDocument:
    """The document of ``/status`` and ``offload status --json``.

    ``engine`` is a small pool on the primary for the health check; ``tasks`` default to
    the catalogue's, never run (no service); ``started`` is the service's start (wall clock).
    """
    healthy, reasons = health(settings, db, engine)
    if tasks is None:
        tasks = [task_view(spec, settings, db) for spec in TASKS]
    return {
        "host": settings.host,
        "uptime": round(time.time() - started, 3) if started is not None else 0.0,
        "health": "down" if not healthy else ("degraded" if reasons else "ok"),
        "degraded_because": reasons,
        "primary": {"url": masked(settings.require_connection()), "reachable": healthy},
        "max_lag_ms": settings.replica.max_lag * 1000,
        "lag_policy": settings.replica.lag_policy.value,
        "replicas": replica_views(db, settings.testbed.replica_admin_connections),
        "tasks": list(tasks),
    }
