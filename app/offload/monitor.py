"""What an operator sees: each server as it reports itself, and the status document.

One collector, ``ask``: one connection to one server (a privileged account where there is
one) reads its identity, its GTID position and, on a replica, SHOW REPLICA STATUS.  Without
the privilege that needs (REPLICATION CLIENT / SLAVE MONITOR) the report says so instead of
failing.  ``offload testbed status`` shows ``collect``'s reports of every server;
``offload status`` and the service's ``/status`` show ``status_document``: the primary's
health, each replica's heartbeat lag (``replica_views``: a SELECT-only account is enough)
with its threads, errors and GTID distance from ``ask``, and the tasks.

TLS: per server, the version and cipher a connection made with the service's own URL
negotiates and the server certificate's expiry, as the server reports the session
(``SHOW SESSION STATUS``: ``Ssl_version``, ``Ssl_cipher``, ``Ssl_server_not_after``);
per replica, whether its channel runs over TLS and verifies the source's certificate
(``ask``).  A certificate expiring within ``[service] cert_warning_days`` makes the
health degraded.
"""

from __future__ import annotations

import datetime as dt
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
from offload.statusdoc import (
    PrimaryView,
    ReplicationTlsView,
    ReplicaView,
    RoutingView,
    StatusDocument,
    TaskView,
    TlsView,
)
from offload.urls import masked

__all__ = [
    "ServerReport",
    "SessionTls",
    "ask",
    "certificate_reasons",
    "collect",
    "health",
    "parse_not_after",
    "replica_views",
    "session_tls",
    "status_document",
    "task_view",
    "tls_of",
    "tls_view",
]

#: seconds to wait for a server's answer before reporting it unreachable
CONNECT_TIMEOUT: Final = 3
_NO_PRIVILEGE: Final = (
    "replica status needs the REPLICATION CLIENT/SLAVE MONITOR privilege, which this account lacks"
)
_NOT_A_REPLICA: Final = "not configured as a replica"
_SESSION_TLS: Final = text(
    "SHOW SESSION STATUS WHERE Variable_name IN "
    "('Ssl_version', 'Ssl_cipher', 'Ssl_server_not_after')"
)
#: how OpenSSL prints a certificate's notAfter (what Ssl_server_not_after holds)
_NOT_AFTER_FORMAT: Final = "%b %d %H:%M:%S %Y GMT"


@dataclass(frozen=True, slots=True)
class SessionTls:
    """A session's TLS as the server reports it (empty strings: plain TCP)."""

    version: str
    cipher: str
    #: the server certificate's expiry (None: no TLS, or not reported)
    not_after: dt.datetime | None


def parse_not_after(value: str) -> dt.datetime | None:
    """``Ssl_server_not_after`` (``Nov 30 17:06:00 2028 GMT``) as UTC; None when empty."""
    words = " ".join(value.split())  # OpenSSL pads one-digit days: "Dec  1 ..."
    if not words:
        return None
    try:
        return dt.datetime.strptime(words, _NOT_AFTER_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def session_tls(conn: Any) -> SessionTls:
    """The TLS of the session on ``conn`` (a SQLAlchemy Connection)."""
    values = {str(k): str(v or "") for k, v in conn.execute(_SESSION_TLS).all()}
    return SessionTls(
        version=values.get("Ssl_version", ""),
        cipher=values.get("Ssl_cipher", ""),
        not_after=parse_not_after(values.get("Ssl_server_not_after", "")),
    )


def tls_of(engine: Engine) -> SessionTls | None:
    """The TLS of a connection from ``engine`` (None when it cannot connect)."""
    try:
        with engine.connect() as conn:
            return session_tls(conn)
    except (OffloadError, SQLAlchemyError):
        return None


def tls_view(tls: SessionTls, now: dt.datetime) -> TlsView:
    """The status document's view of a session's TLS, days counted from ``now`` (UTC)."""
    expires = tls.not_after if tls.version else None
    return {
        "version": tls.version or None,
        "cipher": tls.cipher or None,
        "cert_not_after": expires.isoformat() if expires else None,
        "cert_days_left": (round((expires - now).total_seconds() / 86400, 2) if expires else None),
    }


def certificate_reasons(views: Mapping[str, TlsView], warning_days: float) -> list[str]:
    """Why health is degraded by certificates: each server's expiring within ``warning_days``."""
    reasons = []
    for name, view in views.items():
        left = view["cert_days_left"]
        if left is None:
            continue
        if left <= 0:
            reasons.append(f"{name}: TLS certificate expired {-left:.1f} days ago")
        elif left < warning_days:
            reasons.append(
                f"{name}: TLS certificate expires in {left:.1f} days "
                f"(cert_warning_days {warning_days:g})"
            )
    return reasons


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
        view["replication_tls"] = ReplicationTlsView(
            ssl=status.ssl_allowed == "Yes",
            verify_server_cert=status.ssl_verify_server_cert == "Yes",
        )
        view["io_running"] = status.io_running
        view["sql_running"] = status.sql_running
        view["last_error"] = status.last_sql_error or status.last_io_error or None
        view["seconds_behind"] = status.seconds_behind
        view["received_gtid"] = status.received_gtid
        view["executed_gtid"] = status.executed_gtid
        view["gtid_distance"] = gtid_distance(
            status.received_gtid, status.executed_gtid, detect_flavor(report.version)
        )


def replica_views(
    db: Database, status_urls: Sequence[URL] = (), *, now: dt.datetime | None = None
) -> list[ReplicaView]:
    """One JSON-ready dict per replica: heartbeat lag, the TLS of a connection with the
    service's URL, and with ``status_urls`` (privileged, one per replica) thread states,
    last error, GTID distance and the channel's TLS.  ``now``: when certificate days are
    counted from (default: the wall clock)."""
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
        engine = unpooled_engine(
            target.engine.url, name=target.name, connect_timeout=CONNECT_TIMEOUT
        )
        try:
            tls = tls_of(engine)
        finally:
            engine.dispose()
        if tls is not None:
            view["tls"] = tls_view(tls, now or dt.datetime.now(dt.UTC))
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
    now: dt.datetime | None = None,
) -> StatusDocument:
    """The document of ``/status`` and ``offload status --json``.

    ``engine`` is a small pool on the primary for the health check; ``tasks`` default to
    the catalogue's, never run (no service); ``started`` is the service's start (wall clock);
    ``now`` when certificate days are counted from (default: the wall clock, UTC).
    """
    now = now or dt.datetime.now(dt.UTC)
    healthy, reasons = health(settings, db, engine)
    if tasks is None:
        tasks = [task_view(spec, settings, db) for spec in TASKS]
    primary: PrimaryView = {"url": masked(settings.require_connection()), "reachable": healthy}
    primary_tls = tls_of(engine) if healthy else None
    if primary_tls is not None:
        primary["tls"] = tls_view(primary_tls, now)
    replicas = replica_views(db, settings.testbed.replica_admin_connections, now=now)
    tls_views = {"primary": primary["tls"]} if "tls" in primary else {}
    tls_views.update((view["name"], view["tls"]) for view in replicas if "tls" in view)
    reasons += certificate_reasons(tls_views, settings.service.cert_warning_days)
    return {
        "host": settings.host,
        "uptime": round(time.time() - started, 3) if started is not None else 0.0,
        "health": "down" if not healthy else ("degraded" if reasons else "ok"),
        "degraded_because": reasons,
        "primary": primary,
        "max_lag_ms": settings.replica.max_lag * 1000,
        "lag_policy": settings.replica.lag_policy.value,
        "cert_warning_days": settings.service.cert_warning_days,
        "replicas": replicas,
        "tasks": list(tasks),
    }
