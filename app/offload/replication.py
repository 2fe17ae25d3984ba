"""Replication helpers for both server flavors: MariaDB and MySQL 8.4.

The two flavors differ in GTID format, in statement names and in the return
codes of their GTID wait functions.  Every flavor-specific statement lives in
one ``FlavorSQL`` instance per flavor (see ``sql_for``); everything else here
is either a pure function (flavor detection, status parsing, wait-result
interpretation, argument validation) or a thin function that runs one of
those statements on a ``sqlalchemy.engine.Connection``.

Facts this module relies on (checked against the servers' docs and source):

* MariaDB ``MASTER_GTID_WAIT(gtid, timeout)`` returns 0 when the position is
  reached and -1 on timeout; a NULL gtid gives NULL; a NULL or negative
  timeout waits forever; fractional timeouts work (MariaDB's own test suite
  calls it with 0.5).  (mariadb.com/kb/en/master_gtid_wait/)
* MySQL ``WAIT_FOR_EXECUTED_GTID_SET(gtid_set, timeout)`` returns 0 when the
  set is executed and 1 on timeout.  Since 8.0 the timeout is read as a
  DOUBLE, so fractions of a second work (5.7 took whole seconds); a timeout of
  0 means *no timeout* and a negative one is an error.  It returns NULL (with
  an error) for a NULL set or when called from a replication applier thread.
  (sql/item_gtid_func.cc and Gtid_state::wait_for_gtid_set in mysql-server;
  WL#7796)
* ``MASTER_DELAY`` / ``SOURCE_DELAY`` are whole seconds, 0 to 2**31 - 1.
  MariaDB requires the replica stopped to change it; MySQL needs at least the
  SQL (applier) thread stopped (WL#6120).
"""

from __future__ import annotations

import contextlib
import enum
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Final

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from offload.dberrors import is_access_denied
from offload.errors import AccessDenied, ReplicationError
from offload.flavor import Flavor, describe_server, detect_flavor

__all__ = [
    "HEARTBEAT_PERIOD",
    "MAX_DELAY",
    "MIN_WAIT_TIMEOUT",
    "Flavor",
    "FlavorSQL",
    "ReplicaStatus",
    "ReplicationTimeout",
    "WaitOutcome",
    "admin_writes",
    "describe_server",
    "detect_flavor",
    "finish_wait",
    "gtid_position",
    "interpret_wait_result",
    "last_gtid",
    "normalize_gtid",
    "parse_replica_status",
    "point_at",
    "prepare_to_replicate",
    "promote",
    "replica_status",
    "server_flavor",
    "set_read_only",
    "set_replica_delay",
    "set_source_tls",
    "sql_for",
    "start_replica",
    "stop_replica",
    "try_wait_for_gtid",
    "validate_delay",
    "wait_for_gtid",
    "wait_timeout_argument",
    "with_worker_error",
]

#: Seconds between the primary's heartbeats to an idle replica (mysql/bootstrap/replica-*.sql
#: set the same): a dump thread then notices a stopped replica within about two of them
#: (the default, half of replica_net_timeout, is 30 s, and a MySQL primary's shutdown waits
#: for its dump threads).  MariaDB resets it to the default on every CHANGE MASTER that does
#: not name it, so every CHANGE statement here names it.
HEARTBEAT_PERIOD: Final = 1

#: Largest MASTER_DELAY / SOURCE_DELAY both servers accept (seconds).
MAX_DELAY: Final = 2**31 - 1

#: Smallest timeout passed to a GTID wait.  MySQL treats a timeout of 0 as
#: "wait forever", so a caller's 0 (no time left) must never reach it as 0.
MIN_WAIT_TIMEOUT: Final = 0.001


# --- per-flavor SQL ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlavorSQL:
    """Every statement whose text depends on the flavor."""

    flavor: Flavor
    show_replica_status: str
    #: the primary's position: every GTID it has written or applied
    gtid_position: str
    #: the replica's applied position, when SHOW ... STATUS does not carry it
    replica_executed_gtid: str | None
    #: the GTID this session last wrote (or a superset of it)
    last_gtid: str
    #: takes :gtid and :timeout (seconds)
    wait_for_gtid: str
    #: the wait function's result on timeout (0 always means reached)
    wait_timed_out: int
    start_replica: str
    stop_replica: str
    start_sql_thread: str
    stop_sql_thread: str
    #: takes :seconds; run it with replication stopped (see ``set_replica_delay``)
    set_delay: str
    #: the applier worker's own last error (multi-threaded appliers), None: in the status row
    worker_error: str | None = None
    #: let a privileged session write on a replica (for fault injection), and undo it
    allow_admin_writes: str | None = None
    deny_admin_writes: str | None = None
    #: forget the source entirely (a promoted replica)
    reset_replica_all: str = "RESET REPLICA ALL"
    #: refuse clients' writes (MySQL: even privileged ones), and allow them again
    read_only_on: tuple[str, ...] = ()
    read_only_off: tuple[str, ...] = ()
    #: before a server that wrote binlog of its own replicates by GTID: where it is
    adopt_own_position: str | None = None

    @property
    def wait_function(self) -> str:
        """The GTID wait function's name, for messages."""
        return self.wait_for_gtid.removeprefix("SELECT ").split("(", 1)[0]


_MARIADB_SQL: Final = FlavorSQL(
    flavor=Flavor.MARIADB,
    show_replica_status="SHOW SLAVE STATUS",
    gtid_position="SELECT @@GLOBAL.gtid_binlog_pos",
    replica_executed_gtid="SELECT @@GLOBAL.gtid_slave_pos",
    last_gtid="SELECT @@SESSION.last_gtid",
    wait_for_gtid="SELECT MASTER_GTID_WAIT(:gtid, :timeout)",
    wait_timed_out=-1,
    start_replica="START SLAVE",
    stop_replica="STOP SLAVE",
    start_sql_thread="START SLAVE SQL_THREAD",
    stop_sql_thread="STOP SLAVE SQL_THREAD",
    set_delay=f"CHANGE MASTER TO MASTER_DELAY = :seconds, "
    f"MASTER_HEARTBEAT_PERIOD = {HEARTBEAT_PERIOD}",
    reset_replica_all="RESET SLAVE ALL",
    read_only_on=("SET GLOBAL read_only = ON",),
    read_only_off=("SET GLOBAL read_only = OFF",),
    # MASTER_USE_GTID=slave_pos starts from gtid_slave_pos, which a former primary's own
    # transactions never entered: its binlog position is where it really is
    adopt_own_position="SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos",
)

_MYSQL_SQL: Final = FlavorSQL(
    flavor=Flavor.MYSQL,
    show_replica_status="SHOW REPLICA STATUS",
    gtid_position="SELECT @@GLOBAL.gtid_executed",
    replica_executed_gtid=None,  # Executed_Gtid_Set is a column of SHOW REPLICA STATUS
    # MySQL exposes a session's own GTID only through session_track_gtids in
    # the OK packet, which PyMySQL does not surface.  gtid_executed contains
    # it (it is a superset), so waiting for it is still a correct causal wait,
    # only sometimes longer than needed.
    last_gtid="SELECT @@GLOBAL.gtid_executed",
    wait_for_gtid="SELECT WAIT_FOR_EXECUTED_GTID_SET(:gtid, :timeout)",
    wait_timed_out=1,
    start_replica="START REPLICA",
    stop_replica="STOP REPLICA",
    start_sql_thread="START REPLICA SQL_THREAD",
    stop_sql_thread="STOP REPLICA SQL_THREAD",
    set_delay=f"CHANGE REPLICATION SOURCE TO SOURCE_DELAY = :seconds, "
    f"SOURCE_HEARTBEAT_PERIOD = {HEARTBEAT_PERIOD}",
    # MySQL's applier is multi-threaded by default: SHOW REPLICA STATUS then carries the
    # coordinator's "Coordinator stopped because there were error(s) in the worker(s)",
    # the cause is the worker's (performance_schema, MySQL 8.0+)
    worker_error=(
        "SELECT LAST_ERROR_NUMBER, LAST_ERROR_MESSAGE"
        " FROM performance_schema.replication_applier_status_by_worker"
        " WHERE LAST_ERROR_NUMBER <> 0 ORDER BY LAST_ERROR_TIMESTAMP DESC LIMIT 1"
    ),
    # super_read_only stops even privileged users; read_only alone lets them write
    allow_admin_writes="SET GLOBAL super_read_only = OFF",
    deny_admin_writes="SET GLOBAL super_read_only = ON",
    reset_replica_all="RESET REPLICA ALL",
    # super_read_only = ON sets read_only too; OFF leaves read_only as it was
    read_only_on=("SET GLOBAL super_read_only = ON",),
    read_only_off=("SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"),
)


def sql_for(flavor: Flavor) -> FlavorSQL:
    """The statements for ``flavor``."""
    return _MARIADB_SQL if flavor is Flavor.MARIADB else _MYSQL_SQL


# --- value normalisation ----------------------------------------------------


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _int_or_none(value: object) -> int | None:
    raw = _text(value).strip()
    return int(raw) if raw else None


def _int(value: object) -> int:
    number = _int_or_none(value)
    return 0 if number is None else number


def normalize_gtid(value: object) -> str:
    """A GTID position as one clean string ('' for NULL or nothing).

    MySQL prints long GTID sets with a newline after each comma; the
    whitespace is dropped so positions compare and log as one line.
    """
    return "".join(_text(value).split())


def _one_line(message: str) -> str:
    return " ".join(message.split())


# --- replica status ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """The parts of SHOW REPLICA STATUS / SHOW SLAVE STATUS offload uses."""

    io_running: str  # 'Yes', 'No' or 'Connecting'
    sql_running: str
    last_io_errno: int
    last_io_error: str
    last_sql_errno: int
    last_sql_error: str
    seconds_behind: int | None  # NULL while the SQL thread is stopped
    source_host: str
    source_port: int | None
    using_gtid: str  # MariaDB 'Slave_Pos'/'Current_Pos'/'No'; MySQL 'auto_position'/'No'
    received_gtid: str
    executed_gtid: str
    sql_delay: int
    sql_remaining_delay: int | None
    #: Master_SSL_Allowed / Source_SSL_Allowed: 'Yes' when the channel is set up for TLS
    #: ('No', or 'Ignored' where the replica's client lacks TLS); '' when not reported
    ssl_allowed: str = ""
    #: Master_SSL_Verify_Server_Cert / Source_SSL_Verify_Server_Cert: 'Yes' or 'No'
    ssl_verify_server_cert: str = ""

    @property
    def replicates_over_tls(self) -> bool:
        """The channel uses TLS and verifies the source's certificate."""
        return self.ssl_allowed == "Yes" and self.ssl_verify_server_cert == "Yes"

    @property
    def threads_running(self) -> bool:
        """Both the IO (receiver) and SQL (applier) threads run."""
        return self.io_running == "Yes" and self.sql_running == "Yes"

    def describe(self) -> str:
        """One line for logs and error messages."""
        behind = "NULL" if self.seconds_behind is None else f"{self.seconds_behind}s"
        parts = [
            f"IO={self.io_running or '?'} SQL={self.sql_running or '?'} behind={behind}",
            f"received={self.received_gtid or '-'} executed={self.executed_gtid or '-'}",
        ]
        if self.sql_delay:
            parts.append(f"delay={self.sql_delay}s")
        line = " ".join(parts)
        if self.last_io_errno or self.last_io_error:
            line += f"; last IO error {self.last_io_errno}: {_one_line(self.last_io_error)}"
        if self.last_sql_errno or self.last_sql_error:
            line += f"; last SQL error {self.last_sql_errno}: {_one_line(self.last_sql_error)}"
        return line

    def as_dict(self) -> dict[str, object]:
        """The fields (and ``threads_running``) as JSON-friendly values."""
        result: dict[str, object] = asdict(self)
        result["threads_running"] = self.threads_running
        return result


class ReplicationTimeout(ReplicationError):
    """A replica did not apply a GTID position within the allowed time."""

    def __init__(
        self,
        gtid: str,
        waited: float,
        replica_status: ReplicaStatus | None,
        *,
        replica: str = "replica",
    ) -> None:
        state = replica_status.describe() if replica_status else "replica status unavailable"
        super().__init__(
            f"{replica} did not apply GTID {gtid} within {waited:.3f}s ({state})",
            hint="check the replica's IO/SQL threads with `offload testbed status`",
        )
        self.gtid = gtid
        self.waited = waited
        self.replica_status = replica_status


def _pick(row: Mapping[str, object], *names: str) -> object:
    """The value of the first of ``names`` present in ``row`` (None if none is)."""
    for name in names:
        if name in row:
            return row[name]
    return None


def parse_replica_status(
    row: Mapping[str, object], flavor: Flavor, *, executed_gtid: str | None = None
) -> ReplicaStatus:
    """A ``ReplicaStatus`` from one row of SHOW REPLICA STATUS / SHOW SLAVE STATUS.

    Accepts MySQL 8.4's Replica_/Source_ column names and the older Slave_/
    Master_ ones (MySQL before 8.0.22, MariaDB).  For MariaDB pass the value of
    ``@@gtid_slave_pos`` as ``executed_gtid``; the row does not carry it.  An
    explicit ``executed_gtid`` also overrides MySQL's Executed_Gtid_Set.
    """
    if flavor is Flavor.MARIADB:
        received = _pick(row, "Gtid_IO_Pos")
        executed: object = (
            executed_gtid if executed_gtid is not None else _pick(row, "Gtid_Slave_Pos")
        )
    else:
        received = _pick(row, "Retrieved_Gtid_Set")
        executed = executed_gtid if executed_gtid is not None else _pick(row, "Executed_Gtid_Set")
    if "Using_Gtid" in row:
        using_gtid = _text(row["Using_Gtid"]).strip() or "No"
    else:
        using_gtid = "auto_position" if _int(_pick(row, "Auto_Position")) else "No"
    return ReplicaStatus(
        io_running=_text(_pick(row, "Replica_IO_Running", "Slave_IO_Running")).strip(),
        sql_running=_text(_pick(row, "Replica_SQL_Running", "Slave_SQL_Running")).strip(),
        last_io_errno=_int(_pick(row, "Last_IO_Errno")),
        last_io_error=_text(_pick(row, "Last_IO_Error")).strip(),
        last_sql_errno=_int(_pick(row, "Last_SQL_Errno")),
        last_sql_error=_text(_pick(row, "Last_SQL_Error")).strip(),
        seconds_behind=_int_or_none(_pick(row, "Seconds_Behind_Source", "Seconds_Behind_Master")),
        source_host=_text(_pick(row, "Source_Host", "Master_Host")).strip(),
        source_port=_int_or_none(_pick(row, "Source_Port", "Master_Port")),
        using_gtid=using_gtid,
        received_gtid=normalize_gtid(received),
        executed_gtid=normalize_gtid(executed),
        sql_delay=_int(_pick(row, "SQL_Delay")),
        sql_remaining_delay=_int_or_none(_pick(row, "SQL_Remaining_Delay")),
        ssl_allowed=_text(_pick(row, "Source_SSL_Allowed", "Master_SSL_Allowed")).strip(),
        ssl_verify_server_cert=_text(
            _pick(row, "Source_SSL_Verify_Server_Cert", "Master_SSL_Verify_Server_Cert")
        ).strip(),
    )


# --- GTID wait: pure parts --------------------------------------------------


class WaitOutcome(enum.Enum):
    """What a GTID wait function's result means."""

    REACHED = "reached"
    TIMED_OUT = "timed_out"
    FAILED = "failed"  # NULL or a value the function never documents


def interpret_wait_result(flavor: Flavor, value: object) -> WaitOutcome:
    """Read the result of ``MASTER_GTID_WAIT`` / ``WAIT_FOR_EXECUTED_GTID_SET``.

    Both return 0 when the position is reached.  A timeout is -1 on MariaDB
    and 1 on MySQL.  NULL means the server could not wait at all.
    """
    try:
        number = _int_or_none(value)
    except ValueError:
        return WaitOutcome.FAILED
    if number == 0:
        return WaitOutcome.REACHED
    if number is not None and number == sql_for(flavor).wait_timed_out:
        return WaitOutcome.TIMED_OUT
    return WaitOutcome.FAILED


def wait_timeout_argument(timeout: float) -> float:
    """The timeout to pass to the server's GTID wait for a caller's ``timeout``.

    Raises ValueError for a negative or non-finite timeout (both servers would
    wait forever).  Values below ``MIN_WAIT_TIMEOUT`` are raised to it, since
    MySQL reads 0 as "no timeout".
    """
    if not math.isfinite(timeout) or timeout < 0:
        raise ValueError(f"GTID wait timeout must be a finite number >= 0, not {timeout!r}")
    return max(float(timeout), MIN_WAIT_TIMEOUT)


def validate_delay(seconds: int) -> int:
    """``seconds`` checked as a MASTER_DELAY / SOURCE_DELAY value."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise TypeError(f"replication delay must be whole seconds (int), not {seconds!r}")
    if not 0 <= seconds <= MAX_DELAY:
        raise ValueError(f"replication delay must be between 0 and {MAX_DELAY}, not {seconds}")
    return seconds


# --- functions on a connection ----------------------------------------------


def server_flavor(conn: Connection) -> Flavor:
    """The flavor of the server ``conn`` talks to, from ``VERSION()``."""
    return detect_flavor(_text(conn.execute(text("SELECT VERSION()")).scalar()))


def gtid_position(conn: Connection, flavor: Flavor) -> str:
    """The server's current GTID position ('' when nothing was ever written)."""
    return normalize_gtid(conn.execute(text(sql_for(flavor).gtid_position)).scalar())


def last_gtid(conn: Connection, flavor: Flavor) -> str:
    """The GTID of this session's last write; on MySQL the (superset) gtid_executed."""
    return normalize_gtid(conn.execute(text(sql_for(flavor).last_gtid)).scalar())


def replica_status(conn: Connection, flavor: Flavor) -> ReplicaStatus | None:
    """The replica's status, or None when the server is not a replica.

    Needs REPLICATION CLIENT (MySQL) / SLAVE MONITOR (MariaDB).  With several
    replication channels only the first row is read.
    """
    sql = sql_for(flavor)
    row = conn.execute(text(sql.show_replica_status)).mappings().first()
    if row is None:
        return None
    executed: str | None = None
    if sql.replica_executed_gtid is not None:
        executed = _text(conn.execute(text(sql.replica_executed_gtid)).scalar())
    columns = {str(name): value for name, value in row.items()}
    status = parse_replica_status(columns, flavor, executed_gtid=executed)
    if status.last_sql_errno and sql.worker_error is not None:
        try:
            worker = conn.execute(text(sql.worker_error)).first()
        except DBAPIError as exc:  # no performance_schema access: keep the coordinator's
            if not is_access_denied(exc):
                raise
            worker = None
        status = with_worker_error(status, None if worker is None else (worker[0], worker[1]))
    return status


def with_worker_error(status: ReplicaStatus, worker: tuple[object, object] | None) -> ReplicaStatus:
    """The status with the applier worker's own error instead of its coordinator's summary."""
    if worker is None or not _int(worker[0]):
        return status
    return replace(status, last_sql_errno=_int(worker[0]), last_sql_error=_text(worker[1]).strip())


@contextlib.contextmanager
def admin_writes(conn: Connection, flavor: Flavor) -> Iterator[None]:
    """Let this privileged connection write on a read-only replica, then forbid it again.

    MySQL's ``super_read_only`` refuses even the admin; MariaDB's ``read_only`` lets
    privileged users write already.  For fault injection (a conflicting row planted by hand).
    """
    sql = sql_for(flavor)
    if sql.allow_admin_writes:
        conn.execute(text(sql.allow_admin_writes))
    try:
        yield
    finally:
        if sql.deny_admin_writes:
            conn.execute(text(sql.deny_admin_writes))


def _status_or_none(conn: Connection, flavor: Flavor) -> ReplicaStatus | None:
    """``replica_status``, or None when the user may not read it."""
    try:
        return replica_status(conn, flavor)
    except (DBAPIError, AccessDenied) as exc:
        if is_access_denied(exc):
            return None
        raise


def wait_for_gtid(
    conn: Connection,
    gtid: str,
    timeout: float,
    flavor: Flavor,
    *,
    status_conn: Connection | None = None,
    replica: str = "replica",
) -> float:
    """Block until the replica behind ``conn`` has applied ``gtid``; seconds waited.

    Uses the server's own wait function, no polling.  Returns 0.0 at once for
    an empty ``gtid``.  On timeout raises ``ReplicationTimeout`` carrying the
    replica's status read through ``status_conn`` (default ``conn``), or None
    if that user may not read it.  Raises ``ReplicationError`` when the server
    cannot wait (the function returned NULL).
    """
    position = normalize_gtid(gtid)
    if not position:
        return 0.0
    sql = sql_for(flavor)
    params = {"gtid": position, "timeout": wait_timeout_argument(timeout)}
    started = time.monotonic()
    result = conn.execute(text(sql.wait_for_gtid), params).scalar()
    waited = time.monotonic() - started
    return finish_wait(
        flavor,
        position,
        result,
        waited,
        status_conn=status_conn if status_conn is not None else conn,
        replica=replica,
    )


def finish_wait(
    flavor: Flavor,
    position: str,
    result: object,
    waited: float,
    *,
    status_conn: Connection,
    replica: str = "replica",
) -> float:
    """What the server's wait function answered: seconds waited, or the error it means.

    ``ReplicationTimeout`` (with the status ``status_conn`` may read) on a timeout,
    ``ReplicationError`` when the server could not wait at all.
    """
    sql = sql_for(flavor)
    outcome = interpret_wait_result(flavor, result)
    if outcome is WaitOutcome.REACHED:
        return waited
    if outcome is WaitOutcome.TIMED_OUT:
        status = _status_or_none(status_conn, flavor)
        raise ReplicationTimeout(position, waited, status, replica=replica)
    shown = "NULL" if result is None else repr(result)
    raise ReplicationError(
        f"{replica}: {sql.wait_function}({position!r}) returned {shown}, so it cannot wait",
        hint="check that the server is a replica with GTID replication configured",
    )


def try_wait_for_gtid(
    conn: Connection, gtid: str, timeout: float, flavor: Flavor
) -> tuple[bool, float]:
    """Wait like ``wait_for_gtid``, but answer (reached, seconds waited) instead of raising."""
    position = normalize_gtid(gtid)
    if not position:
        return True, 0.0
    params = {"gtid": position, "timeout": wait_timeout_argument(timeout)}
    started = time.monotonic()
    result = conn.execute(text(sql_for(flavor).wait_for_gtid), params).scalar()
    return interpret_wait_result(flavor, result) is WaitOutcome.REACHED, time.monotonic() - started


def start_replica(conn: Connection, flavor: Flavor, *, sql_thread_only: bool = False) -> None:
    """START REPLICA / START SLAVE (only the SQL thread if ``sql_thread_only``)."""
    sql = sql_for(flavor)
    conn.execute(text(sql.start_sql_thread if sql_thread_only else sql.start_replica))


def stop_replica(conn: Connection, flavor: Flavor, *, sql_thread_only: bool = False) -> None:
    """STOP REPLICA / STOP SLAVE (only the SQL thread if ``sql_thread_only``)."""
    sql = sql_for(flavor)
    conn.execute(text(sql.stop_sql_thread if sql_thread_only else sql.stop_replica))


def _change_source(
    conn: Connection, flavor: Flavor, options: str, params: Mapping[str, object]
) -> None:
    """Stop, ``CHANGE MASTER / REPLICATION SOURCE TO`` ``options`` (``{K}`` standing for
    MASTER or SOURCE), start.  The heartbeat period is named again: MariaDB resets it on
    a CHANGE that omits it."""
    keyword = "MASTER" if flavor is Flavor.MARIADB else "SOURCE"
    statement = "MASTER" if flavor is Flavor.MARIADB else "REPLICATION SOURCE"
    stop_replica(conn, flavor)
    conn.execute(
        text(
            f"CHANGE {statement} TO {options.format(K=keyword)}, "
            f"{keyword}_HEARTBEAT_PERIOD = {HEARTBEAT_PERIOD}"
        ),
        dict(params),
    )
    start_replica(conn, flavor)


def point_at(conn: Connection, flavor: Flavor, host: str, port: int) -> None:
    """Make the replica's IO thread connect to ``host:port`` (its TLS options are kept)."""
    _change_source(
        conn, flavor, "{K}_HOST = :host, {K}_PORT = :port", {"host": host, "port": int(port)}
    )


def set_source_tls(conn: Connection, flavor: Flavor, ca: str | None) -> None:
    """The replica's channel over TLS, the source's certificate verified against ``ca`` (a
    path the replica's server reads), or plain TCP with ``ca`` None."""
    if ca is None:
        options = "{K}_SSL = 0, {K}_SSL_CA = '', {K}_SSL_VERIFY_SERVER_CERT = 0"
    else:
        options = "{K}_SSL = 1, {K}_SSL_CA = :ca, {K}_SSL_VERIFY_SERVER_CERT = 1"
    _change_source(conn, flavor, options, {"ca": ca} if ca is not None else {})


def set_read_only(conn: Connection, flavor: Flavor, *, on: bool) -> None:
    """Refuse clients' writes (``on``; MySQL: super_read_only) or accept them again."""
    sql = sql_for(flavor)
    for statement in sql.read_only_on if on else sql.read_only_off:
        conn.execute(text(statement))


def promote(conn: Connection, flavor: Flavor) -> None:
    """Make the replica behind ``conn`` a primary: replication stopped and forgotten
    (RESET SLAVE ALL / RESET REPLICA ALL), writes accepted."""
    sql = sql_for(flavor)
    if replica_status(conn, flavor) is not None:
        conn.execute(text(sql.stop_replica))
        conn.execute(text(sql.reset_replica_all))
    set_read_only(conn, flavor, on=False)


def prepare_to_replicate(conn: Connection, flavor: Flavor) -> None:
    """Before a former primary replicates by GTID: read-only, no source, its own position
    adopted where the flavor needs it (MariaDB's gtid_slave_pos)."""
    sql = sql_for(flavor)
    set_read_only(conn, flavor, on=True)
    if replica_status(conn, flavor) is not None:
        conn.execute(text(sql.stop_replica))
        conn.execute(text(sql.reset_replica_all))
    if sql.adopt_own_position:
        conn.execute(text(sql.adopt_own_position))


def set_replica_delay(conn: Connection, flavor: Flavor, seconds: int) -> None:
    """Set MASTER_DELAY / SOURCE_DELAY to ``seconds`` (whole, >= 0).

    Replication must be stopped first: MariaDB refuses the change while either
    thread runs; MySQL needs at least the SQL thread stopped.  Start it again
    afterwards with ``start_replica``.
    """
    conn.execute(text(sql_for(flavor).set_delay), {"seconds": validate_delay(seconds)})
