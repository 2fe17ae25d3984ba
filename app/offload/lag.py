"""Replication lag in milliseconds: a heartbeat on the primary, readings on each replica.

The heartbeat table has pt-heartbeat's layout (``ts varchar(26)``,
``server_id int unsigned`` primary key, ...), so an existing pt-heartbeat can
feed it instead of offload's writer (``[replica] heartbeat_source``).

How lag is read.  A replica shows the newest heartbeat it has applied, ``ts``.

* With offload's writer in the same process, the writer remembers when it
  wrote each heartbeat (monotonic clock).  If a heartbeat written after ``ts``
  exists, the replica is behind by at least *now - the moment that next
  heartbeat was written* — an exact lower bound, never off by more than one
  interval; if none exists, the replica has everything the heartbeat shows
  (lag 0, not "up to one interval" as pt-heartbeat would say).
* Otherwise (pt-heartbeat, or another process) lag is *now - ts* on the wall
  clock, pt-heartbeat's own rule: it includes up to one interval and assumes
  synchronised clocks.

``Seconds_Behind_Master`` is shown by status but never used to decide.

No heartbeat table (a Nova database offload was pointed at without
``offload db sync``) is not an unreachable replica: the reading is reachable,
its lag unknown, and its error names the table and :data:`NO_HEARTBEAT_FIX`, so
the guard's fallback reason is ``no_heartbeat`` and every view says what to do.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pymysql
from sqlalchemy import Connection, Engine, MetaData, Table, literal_column, select, text, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError

from offload.dberrors import translate
from offload.errors import ConnectionLost, DatabaseError, MissingTable, OffloadError
from offload.schema import Heartbeat
from offload.waiting import Clock

__all__ = [
    "NO_HEARTBEAT_FIX",
    "HeartbeatHistory",
    "HeartbeatWriter",
    "LagProbe",
    "LagReading",
    "format_ts",
    "heartbeat_table",
    "missing_heartbeat",
    "parse_ts",
]

log = logging.getLogger("offload.lag")
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"  # pt-heartbeat's 26 characters
#: a connection's info key: the @@server_id of the server it reached
_SERVER_ID = "offload_server_id"
#: what to do when there is no heartbeat table to read lag from
NO_HEARTBEAT_FIX = (
    "run `offload db sync` (it adds offload's heartbeat table), or set [replica] "
    "heartbeat_source = pt-heartbeat and heartbeat_table = the table pt-heartbeat updates"
)


def missing_heartbeat(table: Table, engine: Engine) -> str:
    """The reading's error when ``table`` does not exist where ``engine`` looks."""
    where = f"{engine.url.database}.{table.name}" if engine.url.database else table.name
    return f"no heartbeat table `{where}` to measure lag by: {NO_HEARTBEAT_FIX}"


def format_ts(moment: float) -> str:
    """A UNIX time as pt-heartbeat writes it (UTC, microseconds)."""
    return datetime.fromtimestamp(moment, UTC).strftime(_TS_FORMAT)


def parse_ts(value: str) -> float:
    """pt-heartbeat's ``ts`` back to a UNIX time (UTC)."""
    return datetime.strptime(value.strip(), _TS_FORMAT).replace(tzinfo=UTC).timestamp()


def heartbeat_table(name: str) -> Table:
    """The heartbeat table under ``name`` (pt-heartbeat's layout)."""
    if name == Heartbeat.__tablename__:
        return Heartbeat.__table__  # type: ignore[return-value]
    return Heartbeat.__table__.to_metadata(MetaData(), name=name)  # type: ignore[attr-defined,no-any-return]


@dataclass(frozen=True, slots=True)
class LagReading:
    """One look at one replica."""

    replica: str
    #: seconds behind by the heartbeat; None when unknown (unreachable, no heartbeat)
    lag: float | None
    reachable: bool
    error: str = ""
    #: monotonic time of the reading
    at: float = 0.0
    #: the server behind the replica's URL is the one the heartbeat is written to: the
    #: primary (a moved endpoint, a promoted replica): never a replica to read from
    acting_primary: bool = False

    @property
    def usable(self) -> bool:
        return self.reachable and self.lag is not None and not self.acting_primary

    @property
    def unfit_reason(self) -> str | None:
        """Why it is no replica to read from: unreachable | replica_is_primary |
        no_heartbeat (None: a lag was read)."""
        if not self.reachable:
            return "unreachable"
        if self.acting_primary:
            return "replica_is_primary"
        return None if self.lag is not None else "no_heartbeat"


class HeartbeatHistory:
    """What the in-process writer wrote recently: (ts text, monotonic time written)."""

    def __init__(self, keep: int = 10_000) -> None:
        self._written: deque[tuple[str, float]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._dropped = False  # True once the oldest entries fell out

    def add(self, ts: str, written_at: float) -> None:
        with self._lock:
            self._dropped |= len(self._written) == self._written.maxlen
            self._written.append((ts, written_at))

    def lag(self, applied_ts: str | None, now: float) -> float | None:
        """Seconds since the first heartbeat the replica has not applied (0: none).

        None when the history cannot tell: nothing written yet, or the replica is
        behind everything still remembered.  A binary search on the history itself
        (no copy): its stamps are written in increasing order.
        """
        with self._lock:
            written = self._written
            if not written:
                return None
            if applied_ts is None or applied_ts < written[0][0]:
                # older than all we remember: exact only if we remember our first beat
                return None if self._dropped else max(0.0, now - written[0][1])
            if applied_ts >= written[-1][0]:  # the usual case: the replica has the newest beat
                return 0.0
            index = bisect.bisect_right(written, applied_ts, key=_stamp)
            return max(0.0, now - written[index][1])


def _stamp(entry: tuple[str, float]) -> str:
    return entry[0]


class HeartbeatWriter:
    """Updates the primary's heartbeat row every ``interval`` seconds, on its own thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        table: str = "heartbeat",
        interval: float = 0.1,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.engine = engine
        self.table = heartbeat_table(table)
        self.interval = interval
        self.history = HeartbeatHistory()
        self._clock = clock
        self._wall = wall_clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: the heartbeat row's key: the @@server_id of the first primary written to
        self.server_id: int | None = None
        #: the @@server_id of the server the last beat went to: the acting primary (read
        #: once per new connection, so a moved endpoint shows at its first beat)
        self.written_to: int | None = None
        self.failures = 0
        #: the last failure's text ('' after a beat succeeded): logged once per change
        self.last_error = ""

    def beat(self) -> str:
        """Write one heartbeat now; returns the ts written."""
        with self.engine.begin() as conn:
            info = conn.connection.info
            if _SERVER_ID not in info:
                info[_SERVER_ID] = int(conn.execute(text("SELECT @@server_id")).scalar_one())
            written_to = int(info[_SERVER_ID])
            if self.server_id is None:
                self.server_id = written_to
            ts = format_ts(self._wall())
            written = conn.execute(
                update(self.table).where(self.table.c.server_id == self.server_id).values(ts=ts)
            ).rowcount
            if not written:
                conn.execute(self.table.insert().values(ts=ts, server_id=self.server_id))
        self.written_to = written_to
        self.history.add(ts, self._clock())
        return ts

    def _beat_or_log(self) -> None:
        try:
            self.beat()
        except MissingTable:  # keep trying: `offload db sync` may add it any time
            self.failures += 1
            self._failed(missing_heartbeat(self.table, self.engine))
        except (OffloadError, SQLAlchemyError) as exc:  # primary down: keep trying
            self.failures += 1
            self._failed(str(exc).splitlines()[0])
        else:
            if self.last_error:
                log.warning("heartbeat on the primary written again")
            self.last_error = ""

    def _failed(self, error: str) -> None:
        """Log a failure when it differs from the last one (not ten times a second)."""
        if error != self.last_error:
            log.warning("heartbeat on the primary failed: %s", error)
        self.last_error = error

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            self._beat_or_log()
            self._stop.wait(max(0.0, self.interval - (self._clock() - started)))

    def start(self) -> None:
        """Beat once now (so lag can be read at once), then every interval on a thread."""
        if self._thread is None:
            self._beat_or_log()
            self._thread = threading.Thread(target=self._run, name="offload-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


class LagProbe:
    """Reads one replica's heartbeat lag through a SELECT-only account."""

    def __init__(
        self,
        name: str,
        engine: Engine,
        *,
        table: str = "heartbeat",
        primary_server_id: Callable[[], int | None],
        acting_primary: Callable[[], int | None] = lambda: None,
        history: HeartbeatHistory | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.name = name
        self.engine = engine
        self.table = heartbeat_table(table)
        self._primary_server_id = primary_server_id
        #: the @@server_id of the server acting as primary now (None: unknown)
        self._acting_primary = acting_primary
        self.history = history
        self._clock = clock
        self._wall = wall_clock
        self._compiled: tuple[int | None, str] | None = None
        self._conn: Connection | None = None
        self._conn_lock = threading.Lock()
        self._where = f"{name} {engine.url.host}:{engine.url.port or 3306}"

    def _sql(self, server_id: int | None, dialect: Dialect) -> str:
        """The probe's SELECT, compiled once per primary server id (one round trip a read):
        the newest applied heartbeat and the @@server_id of the server that answers."""
        if self._compiled is None or self._compiled[0] != server_id:
            newest = select(self.table.c.ts)
            if server_id is not None:
                newest = newest.where(self.table.c.server_id == server_id)
            newest = newest.order_by(self.table.c.ts.desc()).limit(1)
            query = select(newest.scalar_subquery(), literal_column("@@server_id"))
            compiled = query.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            self._compiled = (server_id, str(compiled))
        return self._compiled[1]

    def _applied(self, server_id: int | None) -> tuple[object, object]:
        """The newest applied ts and the answering server's id, on a long-lived autocommit
        connection: no ping, no rollback, and the SELECT sent straight on the DBAPI
        connection (SQLAlchemy's execution context and result cost the refresher as much
        CPU as the round trip's own parsing; every read path pays for it under the GIL).

        A connection that died while idle (the replica restarted) is replaced and
        the read made once more on the fresh one.
        """
        with self._conn_lock:
            for attempt in (1, 2):
                fresh = self._conn is None or self._conn.closed or self._conn.invalidated
                if fresh:
                    self._conn = self.engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT"
                    )
                conn = self._conn
                assert conn is not None
                try:
                    return self._select(conn, self._sql(server_id, conn.dialect))
                except MissingTable:  # the server answered: the connection is fine
                    raise
                except ConnectionLost:
                    conn.invalidate()
                    self._close_conn()
                    if fresh or attempt == 2:
                        raise
                except (OffloadError, SQLAlchemyError):
                    self._close_conn()
                    raise
            raise AssertionError("unreachable")

    def _select(self, conn: Connection, sql: str) -> tuple[object, object]:
        """One row of ``sql`` through ``conn``'s DBAPI cursor, driver errors translated."""
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql)
            row = cursor.fetchone()
        except pymysql.Error as exc:
            translated = translate(exc, self._where)
            raise (translated or DatabaseError(f"{self._where}: {exc}")) from exc
        finally:
            cursor.close()
        if row is None:
            raise DatabaseError(f"{self._where}: the lag probe's SELECT returned no row")
        return row[0], row[1]

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OffloadError, SQLAlchemyError):
                conn.close()

    def close(self) -> None:
        """Close the probe's connection (the next read opens another)."""
        with self._conn_lock:
            self._close_conn()

    def read(self) -> LagReading:
        now = self._clock()
        server_id = self._primary_server_id()
        try:
            applied, answered_by = self._applied(server_id)
        except MissingTable:  # the replica answered: it has no heartbeat table
            return LagReading(
                self.name,
                None,
                reachable=True,
                error=missing_heartbeat(self.table, self.engine),
                at=now,
            )
        except (OffloadError, SQLAlchemyError) as exc:
            return LagReading(
                self.name, None, reachable=False, error=str(exc).splitlines()[0], at=now
            )
        assert applied is None or isinstance(applied, str)
        primary = self._acting_primary()
        if primary is not None and answered_by is not None and int(str(answered_by)) == primary:
            return LagReading(
                self.name,
                None,
                reachable=True,
                error=f"answers as the primary (server_id {primary}): the replica's endpoint "
                "leads to the server acting as primary",
                at=now,
                acting_primary=True,
            )
        lag = self.history.lag(applied, self._clock()) if self.history else None
        if lag is None and applied is None:
            return LagReading(self.name, None, reachable=True, error="no heartbeat yet", at=now)
        if lag is None and applied is not None:  # pt-heartbeat's rule
            lag = max(0.0, self._wall() - parse_ts(applied))
        return LagReading(self.name, lag, reachable=True, at=now)
