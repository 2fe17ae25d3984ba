"""What an operator sees of each replica: heartbeat lag, threads, errors, GTID distance.

The lag comes from the staleness guard's heartbeat readings (a SELECT-only
account is enough).  Thread states, last errors, ``Seconds_Behind`` and the
GTID distance need a privileged account (REPLICATION CLIENT / SLAVE MONITOR):
the testbed's admin accounts when there are any; without one those fields are
``null`` and a note says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import URL
from sqlalchemy.exc import SQLAlchemyError

from offload import replication
from offload.db import Database
from offload.dberrors import unpooled_engine
from offload.errors import OffloadError
from offload.gtid import gtid_distance
from offload.urls import masked

__all__ = ["replica_views"]


def _privileged(url: URL, name: str, flavor: replication.Flavor) -> dict[str, Any]:
    engine = unpooled_engine(url, name=name, connect_timeout=2)
    try:
        with engine.connect() as conn:
            status = replication.replica_status(conn, flavor)
    except (OffloadError, SQLAlchemyError) as exc:
        return {"status_error": str(exc).splitlines()[0]}
    finally:
        engine.dispose()
    if status is None:
        return {"status_error": "not configured as a replica"}
    return {
        "io_running": status.io_running,
        "sql_running": status.sql_running,
        "last_error": status.last_sql_error or status.last_io_error or None,
        "seconds_behind": status.seconds_behind,
        "received_gtid": status.received_gtid,
        "executed_gtid": status.executed_gtid,
        "gtid_distance": gtid_distance(status.received_gtid, status.executed_gtid, flavor),
    }


def replica_views(db: Database, status_urls: Sequence[URL] = ()) -> list[dict[str, Any]]:
    """One JSON-ready dict per replica (the ``replicas`` part of ``offload status``)."""
    if not db.replicas:
        return []
    readings = db.guard.readings()
    flavor = db.flavor if status_urls else replication.Flavor.MARIADB
    views = []
    for index, target in enumerate(db.replicas):
        reading = readings.get(target.name)
        fit = bool(
            reading
            and reading.usable
            and reading.lag is not None
            and reading.lag <= db.settings.replica.max_lag
        )
        view: dict[str, Any] = {
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
            view.update(_privileged(status_urls[index], target.name, flavor))
        else:
            view["status_error"] = "thread states need a privileged account; none is configured"
        views.append(view)
    return views
