"""The routes a statement can take: fixed when a session opens, carried on its connection.

``WRITE``, ``READ_PRIMARY`` and ``READ_REPLICA`` are the routes a session opens with
(``Database.writer()``, ``reader()``, ``reader(allow_replica=True)``).  ``CAUSAL`` tags the
one statement that is not a session's: the GTID lookup right after a writer commits, on the
writer's connection, that later replica reads of the same task run wait for (causal reads).
It reads no data, so proofs count it neither as a read nor as a write of a task.

Each traced DBAPI connection carries the route of the session using it
(``tracing.set_route``, forgotten at check-in): the write guard, the statement tags and the
traces all read it from there.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Route"]


class Route(StrEnum):
    """Why a statement goes to a server; a session's route is fixed for its life."""

    WRITE = "write"
    READ_PRIMARY = "primary"
    READ_REPLICA = "replica"
    #: the GTID lookup after a commit (causal reads), on the writer's connection
    CAUSAL = "causal"

    @property
    def writes(self) -> bool:
        """Statements on this route may change data (only ``WRITE``'s may)."""
        return self is Route.WRITE
