"""Statement tags and traces: where every statement of every task went.

Each statement is sent with a tag prepended (MySQL truncates long statements
in its logs, so the tag comes first)::

    /* offload task=_poll_bandwidth_usage route=replica run=7f3a9c01 */ SELECT ...

The tag carries the current task and run (a ``ContextVar`` set by
``task_scope``) and the session's route, so the servers' own records
(performance_schema statement history, the general log) show which task sent
what where.  On the client, every executed statement becomes a
``StatementRecord`` — task, run, route, target, the identity of the server that
ran it (read once per connection), verb, tables, duration — handed to the
tracer's sinks: a ``QueryTrace`` in tests, counters and a JSON-lines file in
the service.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import pymysql
import pymysql.cursors
from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry

from offload.sqlverbs import classify

__all__ = [
    "JsonLinesSink",
    "QueryTrace",
    "ServerIdentity",
    "StatementCounter",
    "StatementRecord",
    "TaskContext",
    "TracedCursor",
    "Tracer",
    "current_task",
    "server_identity",
    "set_route",
    "tables_in",
    "tag_for",
    "tagged",
    "task_scope",
]

_SERVER_KEY = "offload_server"
_SAFE = re.compile(r"[^A-Za-z0-9_.:-]")
_NAME = r"`?([A-Za-z_][A-Za-z0-9_$]*)`?"
_TABLE = re.compile(
    rf"\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+{_NAME}(?:\s*\.\s*{_NAME})?", re.IGNORECASE
)
_NOT_TABLES = frozenset({"select", "dual", "set", "values", "where"})


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The task (and which run of it) the current code is working for."""

    task: str
    run: str


_current: ContextVar[TaskContext | None] = ContextVar("offload_task", default=None)


def current_task() -> TaskContext | None:
    return _current.get()


@contextmanager
def task_scope(task: str, run: str | None = None) -> Iterator[TaskContext]:
    """Tag every statement sent inside the block with ``task`` and a run id."""
    context = TaskContext(_SAFE.sub("_", task), run or secrets.token_hex(4))
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


@functools.lru_cache(maxsize=1024)
def tag_for(route: str | None, context: TaskContext | None) -> str:
    """The comment prepended to a statement (safe: no ``*/`` can occur in it)."""
    parts = ["offload"]
    if context is not None:
        parts.append(f"task={context.task}")
    parts.append(f"route={_SAFE.sub('_', route or 'none')}")
    if context is not None:
        parts.append(f"run={context.run}")
    return f"/* {' '.join(parts)} */ "


_BULK_VERB = re.compile(r"\s*(INSERT|REPLACE)\b", re.IGNORECASE)


def tagged(statement: str, tag: str, *, executemany: bool = False) -> str:
    """``statement`` with ``tag`` in front — or, for a bulk INSERT, right after the verb.

    PyMySQL turns an executemany INSERT into one multi-row statement only when
    the text starts with INSERT/REPLACE; a leading comment would cost one round
    trip per row.
    """
    if executemany:
        bulk = _BULK_VERB.match(statement)
        if bulk:
            return f"{statement[: bulk.end()]} {tag.rstrip()}{statement[bulk.end() :]}"
    return tag + statement


@functools.lru_cache(maxsize=4096)
def tables_in(statement: str) -> tuple[str, ...]:
    """Table names a statement names after FROM/JOIN/INTO/UPDATE (in order, no repeats)."""
    found: list[str] = []
    for match in _TABLE.finditer(statement):
        name = match.group(2) or match.group(1)
        if name.lower() not in _NOT_TABLES and name not in found:
            found.append(name)
    return tuple(found)


@functools.lru_cache(maxsize=4096)
def _facts(statement: str) -> tuple[str, bool, tuple[str, ...]]:
    """(verb, read-only, tables) of a statement: one cache lookup per statement."""
    verb, read_only = classify(statement)
    return verb, read_only, tables_in(statement)


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """Which server a connection is really talking to, as the server says."""

    server_id: int
    hostname: str
    port: int
    version: str = ""

    def __str__(self) -> str:
        return f"{self.hostname}:{self.port}/server_id={self.server_id}"


class StatementRecord(NamedTuple):
    """One executed statement, as the client saw it.

    A named tuple: one is made per statement on the read path, and a tuple is built in
    a third of a frozen dataclass's time.
    """

    task: str | None
    run: str | None
    route: str | None
    target: str
    server: ServerIdentity | None
    verb: str
    tables: tuple[str, ...]
    duration: float
    at: float  # wall-clock time.time() when it finished

    def as_dict(self) -> dict[str, Any]:
        data = self._asdict()
        data["server"] = asdict(self.server) if self.server else None
        return data


Sink = Callable[[StatementRecord], None]
#: the write guard: (route, statement) -> None, raises before the server sees a write
Guard = Callable[[str | None, str], None]


def server_identity(conn: Connection) -> ServerIdentity | None:
    """The identity read when the connection was opened (None if not read)."""
    identity = conn.info.get(_SERVER_KEY)
    return identity if isinstance(identity, ServerIdentity) else None


class QueryTrace:
    """Statement records collected while recording; thread-safe."""

    def __init__(self) -> None:
        self._records: list[StatementRecord] = []
        self._lock = threading.Lock()

    def __call__(self, record: StatementRecord) -> None:
        with self._lock:
            self._records.append(record)

    @property
    def records(self) -> list[StatementRecord]:
        with self._lock:
            return list(self._records)

    def for_task(self, task: str) -> list[StatementRecord]:
        return [r for r in self.records if r.task == task]

    def counts(self, task: str | None = None) -> Counter[tuple[str, str]]:
        """(route, verb) → number of statements, for one task or all."""
        records = self.for_task(task) if task else self.records
        return Counter((r.route or "none", r.verb) for r in records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def table(self, task: str | None = None) -> str:
        """A readable table of what went where, for assertion messages."""
        rows = [("task", "route", "target", "server", "verb", "tables")]
        for r in self.for_task(task) if task else self.records:
            rows.append(
                (
                    r.task or "-",
                    r.route or "-",
                    r.target,
                    str(r.server or "?"),
                    r.verb,
                    ",".join(r.tables) or "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
        )


class JsonLinesSink:
    """Writes each record as one JSON object per line (the service's ``--trace FILE``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: TextIO = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, record: StatementRecord) -> None:
        line = json.dumps(record.as_dict(), sort_keys=True)
        with self._lock:
            self._handle.write(line + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


class StatementCounter:
    """A tracer sink counting statements by (task, route, target, verb).

    Counting is the tracer's cheap path: no ``StatementRecord`` is built for it, and a
    statement costs one increment of its connection's own tally (see ``_Traced``),
    handed to the counters when the connection's (route, task) changes and when it
    goes back to the pool: a snapshot holds every statement of the sessions that
    ended, not those of a session still open.
    """

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, key: tuple[str, str, str, str], n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def __call__(self, record: StatementRecord) -> None:
        self.add((record.task or "-", record.route or "none", record.target, record.verb))

    def snapshot(self) -> Counter[tuple[str, str, str, str]]:
        with self._lock:
            return Counter(self.counts)


class _Traced:
    """What a traced DBAPI connection's cursors need: where to report, the route, and
    what is made once per (route, task) rather than per statement: the tag, and the
    tally of statements by verb the counters get when the (route, task) changes or
    the connection is checked in (a shared, locked counter touched at every statement
    cost ~3 µs per statement in a 200-statement session, `make bench`)."""

    __slots__ = (
        "guard",
        "route",
        "server",
        "tag",
        "tag_route",
        "tag_task",
        "tally",
        "target",
        "tracer",
    )

    def __init__(
        self, tracer: Tracer, target: str, guard: Guard | None, server: ServerIdentity
    ) -> None:
        self.tracer = tracer
        self.target = target
        self.guard = guard
        self.server = server
        #: the route of the session using the connection now (None between sessions)
        self.route: str | None = None
        self.tag_task: TaskContext | None = None
        self.tag_route: str | None = None
        self.tag = tag_for(None, None)
        #: verb -> statements sent under (tag_task, tag_route), not yet counted
        self.tally: dict[str, int] = {}

    def before(self, query: str) -> tuple[TaskContext | None, tuple[str, bool, tuple[str, ...]]]:
        """The statement's task and facts; the write guard run for one that is not
        read-only; the tag made anew when the (route, task) changed."""
        facts = _facts(query)
        route = self.route
        if not facts[1] and self.guard is not None:
            self.guard(route, query)
        task = _current.get()
        if task is not self.tag_task or route != self.tag_route:
            if self.tally:
                self.count()  # the tally was the previous (route, task)'s
            self.tag_task, self.tag_route = task, route
            self.tag = tag_for(route, task)
        return task, facts

    def after(
        self, task: TaskContext | None, facts: tuple[str, bool, tuple[str, ...]], started: float
    ) -> None:
        """The statement's record to the record sinks, its verb to the tally."""
        tracer = self.tracer
        if tracer._sinks:
            _report(self, task, self.route, facts, started)
        if tracer._counters:
            tally, verb = self.tally, facts[0]
            tally[verb] = tally.get(verb, 0) + 1

    def count(self) -> None:
        """The tally to the tracer's counters, under the (route, task) it was made in."""
        tally, self.tally = self.tally, {}
        task = self.tag_task.task if self.tag_task is not None else "-"
        route = self.tag_route or "none"
        for counter in self.tracer._counters:
            for verb, n in tally.items():
                counter.add((task, route, self.target, verb), n)


class TracedCursor(pymysql.cursors.Cursor):
    """PyMySQL's cursor, tagging each statement and handing its record to the tracer."""

    _offload_many = False

    def execute(self, query: str, args: Any = None) -> int:
        traced: _Traced | None = getattr(self.connection, "offload_traced", None)
        if traced is None or self._offload_many:  # an executemany's rows: tagged already
            return super().execute(query, args)
        task, facts = traced.before(query)
        started = time.perf_counter()
        result = super().execute(traced.tag + query, args)
        traced.after(task, facts, started)
        return result

    def executemany(self, query: str, args: Any) -> int | None:
        traced: _Traced | None = getattr(self.connection, "offload_traced", None)
        if traced is None:
            return super().executemany(query, args)
        task, facts = traced.before(query)
        started = time.perf_counter()
        self._offload_many = True
        try:
            result = super().executemany(tagged(query, traced.tag, executemany=True), args)
        finally:
            self._offload_many = False
        traced.after(task, facts, started)
        return result


def _report(
    traced: _Traced,
    task: TaskContext | None,
    route: str | None,
    facts: tuple[str, bool, tuple[str, ...]],
    started: float,
) -> None:
    """The statement's record to the tracer's record sinks."""
    # positional: a named tuple built from keywords costs several times more
    traced.tracer._emit(
        StatementRecord(
            task.task if task else None,
            task.run if task else None,
            route,
            traced.target,
            traced.server,
            facts[0],
            facts[2],
            time.perf_counter() - started,
            time.time(),
        )
    )


def set_route(conn: Connection, route: str) -> None:
    """Give ``conn`` (checked out) the route its statements are tagged, guarded and
    recorded with, on its traced DBAPI connection (not as a SQLAlchemy execution option:
    a connection with options merges them at every statement, which ``make bench`` sees)."""
    traced = getattr(conn.connection.dbapi_connection, "offload_traced", None)
    if traced is not None:
        traced.route = route


class Tracer:
    """Tags statements on the engines it is installed on and feeds records to sinks."""

    def __init__(self) -> None:
        #: sinks given each statement's record; counters, given its key only
        self._sinks: list[Sink] = []
        self._counters: list[StatementCounter] = []
        self._lock = threading.Lock()

    def add_sink(self, sink: Sink) -> None:
        """Hand ``sink`` every statement (a ``StatementCounter`` counts without a record)."""
        with self._lock:
            if isinstance(sink, StatementCounter):
                self._counters = [*self._counters, sink]
            else:
                self._sinks = [*self._sinks, sink]

    def remove_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks = [s for s in self._sinks if s is not sink]
            self._counters = [c for c in self._counters if c is not sink]

    @contextmanager
    def recording(self) -> Iterator[QueryTrace]:
        """Collect every statement sent through this tracer's engines inside the block."""
        trace = QueryTrace()
        self.add_sink(trace)
        try:
            yield trace
        finally:
            self.remove_sink(trace)

    def _emit(self, record: StatementRecord) -> None:
        for sink in self._sinks:  # a snapshot: add/remove replace the list
            sink(record)

    def install(self, engine: Engine, *, target: str, guard: Guard | None = None) -> None:
        """Tag and record every statement ``engine`` runs; ``target`` names the server.

        The work is done by the DBAPI cursor (``TracedCursor``), not by SQLAlchemy's
        ``before/after_cursor_execute`` events: any listener of those makes SQLAlchemy
        take its event path at every statement, which cost more than the tagging and the
        record themselves (`make bench`, 200-statement session).  ``guard(route,
        statement)`` runs first and raises before the server sees a write; the
        statement's verb and tables are computed once per distinct text.
        """
        tracer = self

        @event.listens_for(engine, "connect")
        def _identify(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT @@server_id, @@hostname, @@port, VERSION()")
                server_id, hostname, port, version = cursor.fetchone()
            finally:
                cursor.close()
            identity = ServerIdentity(int(server_id), str(hostname), int(port), str(version))
            record.info[_SERVER_KEY] = identity
            dbapi_connection.offload_traced = _Traced(tracer, target, guard, identity)
            dbapi_connection.cursorclass = TracedCursor

        @event.listens_for(engine, "checkin")
        def _forget_route(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            traced = getattr(dbapi_connection, "offload_traced", None)
            if traced is not None:
                traced.route = None
                if traced.tally:
                    traced.count()

        @event.listens_for(engine, "invalidate")
        def _count_before_close(
            dbapi_connection: Any, record: ConnectionPoolEntry, exception: BaseException | None
        ) -> None:
            """A connection closed by the pool (it died, or was invalidated) is not
            checked in with its tally: counted here."""
            traced = getattr(dbapi_connection, "offload_traced", None)
            if traced is not None and traced.tally:
                traced.count()
