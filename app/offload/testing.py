"""Proof helpers: where did a task's statements go — by the client's trace and by the servers.

No pytest here: the helpers raise ``AssertionError`` with a readable table of
what went where, so they serve any test runner (and a curious operator).

The server-side proof reads ``performance_schema.events_statements_history_long``
on each server: every statement arrives tagged
(``/* offload task=... route=... run=... */``), so a server's own record of a
run's statements cannot be mistaken for another's.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, text

from offload.routes import Route
from offload.tracing import QueryTrace, StatementRecord

__all__ = [
    "assert_task_read_from_primary",
    "assert_task_read_from_replica",
    "server_statements",
    "table_checksums",
]

# a tag leads the statement, or follows the verb of a bulk INSERT/REPLACE
_HISTORY = text(
    "SELECT SQL_TEXT FROM performance_schema.events_statements_history_long "
    "WHERE SQL_TEXT LIKE :pattern OR SQL_TEXT LIKE CONCAT('INSERT ', :pattern) "
    "OR SQL_TEXT LIKE CONCAT('REPLACE ', :pattern) ORDER BY EVENT_ID"
)


def server_statements(engine: Engine, *, task: str, run: str | None = None) -> list[str]:
    """Statements of ``task`` (one run, or any) the server behind ``engine`` recorded."""
    pattern = f"/* offload task={task} route=% run={run or '%'} */%"
    with engine.connect() as conn:
        return [str(row[0]) for row in conn.execute(_HISTORY, {"pattern": pattern})]


def table_checksums(
    engine: Engine, database: str, tables: Sequence[str] | None = None
) -> dict[str, int | None]:
    """``CHECKSUM TABLE`` of the nova tables (heartbeat excluded: it moves every 100 ms)."""
    from offload.schema import NOVA_TABLES  # noqa: PLC0415 - schema is heavy; tests only

    names = [t for t in (tables or NOVA_TABLES) if t != "heartbeat"]
    listed = ", ".join(f"`{database}`.`{name}`" for name in names)
    with engine.connect() as conn:
        rows = conn.execute(text(f"CHECKSUM TABLE {listed}")).all()
    return {
        str(row[0]).split(".", 1)[1]: (int(row[1]) if row[1] is not None else None) for row in rows
    }


def _fail(trace: QueryTrace, task: str, problem: str) -> AssertionError:
    return AssertionError(f"{task}: {problem}\n{trace.table(task)}")


def _selects(records: Sequence[StatementRecord]) -> list[StatementRecord]:
    return [r for r in records if r.verb == "SELECT" and r.route != Route.CAUSAL]


def _check_writes(trace: QueryTrace, task: str, records: Sequence[StatementRecord]) -> None:
    writes = [r for r in records if r.verb != "SELECT" or r.route == Route.CAUSAL]
    stray = [
        r
        for r in writes
        if r.route not in (Route.WRITE, Route.CAUSAL)
        or r.target != "primary"
        or (r.route == Route.CAUSAL and r.tables)
    ]
    if stray:
        raise _fail(trace, task, f"{len(stray)} write statement(s) not on the primary")


def _records(trace: QueryTrace, task: str, run: str | None) -> list[StatementRecord]:
    return [r for r in trace.for_task(task) if run is None or r.run == run]


def assert_task_read_from_replica(
    trace: QueryTrace, task: str, *, run: str | None = None, primary_server_id: int | None = None
) -> list[StatementRecord]:
    """Every SELECT of ``task`` ran on a replica (route and server), every write on the primary.

    Returns the task's records (of one ``run``, or all).  ``primary_server_id``
    adds the check that no SELECT's server identity is the primary's.
    """
    records = _records(trace, task, run)
    selects = _selects(records)
    if not selects:
        raise _fail(trace, task, "no SELECT was traced: did the task read at all?")
    off_route = [r for r in selects if r.route != Route.READ_REPLICA or r.target == "primary"]
    if off_route:
        raise _fail(trace, task, f"{len(off_route)} of {len(selects)} SELECTs not on a replica")
    if primary_server_id is not None:
        on_primary = [
            r for r in selects if r.server is None or r.server.server_id == primary_server_id
        ]
        if on_primary:
            raise _fail(
                trace,
                task,
                f"{len(on_primary)} SELECTs ran on server_id "
                f"{primary_server_id} (the primary) or an unknown one",
            )
    _check_writes(trace, task, records)
    return records


def assert_task_read_from_primary(
    trace: QueryTrace, task: str, *, run: str | None = None
) -> list[StatementRecord]:
    """Without a replica: the task's reads asked for the replica and got the primary."""
    records = _records(trace, task, run)
    selects = _selects(records)
    if not selects:
        raise _fail(trace, task, "no SELECT was traced: did the task read at all?")
    wrong = [r for r in selects if r.route != Route.READ_REPLICA or r.target != "primary"]
    if wrong:
        raise _fail(
            trace, task, f"{len(wrong)} SELECTs not replica-route reads served by the primary"
        )
    _check_writes(trace, task, records)
    return records
