"""What the primary and each replica say about themselves: identity, GTIDs, replication.

Works for any backend: it only needs URLs.  The testbed's admin accounts see
everything; with only the service's accounts (a plain nova.conf) replica status
needs a privilege the SELECT-only user lacks, and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import URL, text
from sqlalchemy.exc import SQLAlchemyError

from offload import replication
from offload.config import Settings
from offload.dberrors import unpooled_engine
from offload.errors import OffloadError
from offload.urls import masked

__all__ = ["ServerReport", "collect", "render"]


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


def _ask(role: str, url: URL, shown: URL) -> ServerReport:
    report = ServerReport(role=role, url=masked(shown))
    engine = unpooled_engine(url, name=role, connect_timeout=3)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT @@server_id, VERSION(), @@read_only")).one()
            report.server_id, report.version, report.read_only = int(row[0]), row[1], bool(row[2])
            flavor = replication.detect_flavor(report.version)
            if role == "primary":
                report.gtid_position = replication.gtid_position(conn, flavor)
                return report
            try:
                report.replica = replication.replica_status(conn, flavor)
            except (OffloadError, SQLAlchemyError) as exc:
                if not replication.is_access_denied(exc):
                    raise
                report.notes.append(
                    "replica status needs the REPLICATION CLIENT/SLAVE "
                    "MONITOR privilege, which this account lacks"
                )
            if report.replica is not None:
                report.gtid_position = report.replica.executed_gtid
            elif not report.notes:
                report.notes.append("not configured as a replica")
    except OffloadError as exc:
        report.error = str(exc)
    except SQLAlchemyError as exc:
        report.error = str(getattr(exc, "orig", exc)).splitlines()[0]
    finally:
        engine.dispose()
    return report


def collect(settings: Settings) -> list[ServerReport]:
    """Reports for the primary and every replica, admin accounts preferred."""
    primary = settings.require_connection()
    admin = settings.testbed.admin_connection
    reports = [_ask("primary", admin or primary, primary)]
    replica_admins: Sequence[URL] = settings.testbed.replica_admin_connections
    for index, url in enumerate(settings.database.slave_connections):
        query_url = replica_admins[index] if index < len(replica_admins) else url
        reports.append(_ask(f"replica{index}", query_url, url))
    return reports


def render(reports: Sequence[ServerReport]) -> str:
    """Plain-text table, one block per server."""
    lines: list[str] = []
    for report in reports:
        lines.append(f"{report.role:<9} {report.url}")
        if report.error:
            lines.append(f"          UNREACHABLE: {report.error}")
            continue
        lines.append(
            f"          server_id={report.server_id} version={report.version} "
            f"read_only={'ON' if report.read_only else 'OFF'}"
        )
        if report.role == "primary":
            lines.append(f"          gtid_position={report.gtid_position or '-'}")
        elif report.replica is not None:
            lines.append(f"          {report.replica.describe()}")
        lines.extend(f"          note: {note}" for note in report.notes)
    if len(reports) == 1:
        lines.append(
            "no replica configured ([database] slave_connection is empty): "
            "every read goes to the primary"
        )
    return "\n".join(lines)
