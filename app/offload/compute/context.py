"""What every periodic task gets: the host, the Database, the hypervisor, the notifier.

Tasks read through ``c.db.reader(allow_replica=True)`` and write through
``c.db.writer()``.  A write that depends on what was read goes through
``c.guarded(...)``: a conditional statement (compare-and-set on the values
read) that the primary may refuse because the replica's copy was stale.  A
refusal is counted in the run's report and logged — it is the system working,
not an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Executable, Insert, exists, insert, literal, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from offload.compute.driver import FakeDriver
from offload.compute.notifier import Notifier
from offload.config import ComputeSettings
from offload.db import Database
from offload.schema import utcnow

__all__ = ["Compute", "RunReport", "insert_unless"]

log = logging.getLogger("offload.compute")


def insert_unless(
    model: Any, values: Mapping[str, object], *conditions: ColumnElement[bool]
) -> Insert:
    """``INSERT ... SELECT ... WHERE NOT EXISTS (a row matching conditions)``: a guarded insert."""
    names = list(values)
    source = select(*(literal(values[n]) for n in names)).where(~exists().where(*conditions))
    return insert(model).from_select(names, source)


@dataclass(slots=True)
class RunReport:
    """One run of one task: what it looked at, wrote, and was refused."""

    task: str
    host: str
    run: str
    started_at: float = 0.0  # wall clock
    duration: float = 0.0
    #: rows (instances, counters, migrations...) the task considered
    items: int = 0
    #: guarded writes the primary accepted
    written: int = 0
    #: guarded writes the primary refused: what was read on the replica was stale
    rejected: int = 0
    #: calls made to the hypervisor
    driver_calls: int = 0
    #: notifications emitted
    notifications: int = 0
    #: why the task did nothing this time (an option turns it off...)
    skipped: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "host": self.host,
            "run": self.run,
            "started_at": self.started_at,
            "duration": round(self.duration, 6),
            "items": self.items,
            "written": self.written,
            "rejected": self.rejected,
            "driver_calls": self.driver_calls,
            "notifications": self.notifications,
            "skipped": self.skipped,
            "error": self.error,
            "details": self.details,
        }


@dataclass(slots=True)
class Compute:
    """The compute host the tasks run for."""

    host: str
    db: Database
    driver: FakeDriver
    notifier: Notifier
    options: ComputeSettings
    now: Callable[[], datetime] = utcnow
    #: what a task keeps from one run to the next (e.g. the heal round robin)
    memory: dict[str, Any] = field(default_factory=dict)

    def guarded(
        self, session: Session, statement: Executable, report: RunReport, *, what: str
    ) -> bool:
        """Run a conditional write; True if the primary applied it, else count a rejection."""
        return self.guarded_result(session, statement, report, what=what) is not None

    def guarded_result(
        self, session: Session, statement: Executable, report: RunReport, *, what: str
    ) -> CursorResult[Any] | None:
        """``guarded`` that hands back the result (``lastrowid``...) of an applied write."""
        # Core execution on the session's connection: an ORM-enabled UPDATE would
        # first SELECT the matching rows on the primary to synchronise the session
        result = session.connection().execute(statement)
        if result.rowcount == 0:
            report.rejected += 1
            log.info(
                "%s on %s: guarded write rejected (%s): the primary no longer "
                "matches what the replica showed",
                report.task,
                self.host,
                what,
            )
            return None
        report.written += 1
        return result

    def notify(self, report: RunReport, event_type: str, payload: dict[str, Any]) -> None:
        self.notifier.notify(event_type, payload)
        report.notifications += 1
