"""Unit tests for offload.replication: the pure parts, no server needed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pymysql
import pytest
from sqlalchemy.exc import OperationalError

from offload import replication
from offload.errors import ReplicationError
from offload.replication import (
    Flavor,
    ReplicaStatus,
    ReplicationTimeout,
    WaitOutcome,
    detect_flavor,
    interpret_wait_result,
    normalize_gtid,
    parse_replica_status,
    sql_for,
    validate_delay,
    wait_timeout_argument,
)

PRIMARY_UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
OTHER_UUID = "8a94f357-aab4-11df-86ab-c80aa9429563"

# --- flavor detection -------------------------------------------------------


@pytest.mark.parametrize(
    "version",
    [
        "10.11.6-MariaDB-0+deb12u1-log",
        "11.4.2-MariaDB-ubu2404",
        "10.11.8-MariaDB",
        "5.5.5-10.11.6-MariaDB-0+deb12u1",  # the handshake form some proxies report
    ],
)
def test_detect_flavor_mariadb(version: str) -> None:
    assert detect_flavor(version) is Flavor.MARIADB


@pytest.mark.parametrize(
    "version", ["8.4.3", "8.0.36-0ubuntu0.22.04.1", "8.4.2-commercial", "8.0.36-28"]
)
def test_detect_flavor_mysql(version: str) -> None:
    assert detect_flavor(version) is Flavor.MYSQL


@pytest.mark.parametrize("version", ["", "   ", "PostgreSQL 16.2"])
def test_detect_flavor_rejects_garbage(version: str) -> None:
    with pytest.raises(ValueError):
        detect_flavor(version)


def test_flavor_values() -> None:
    assert Flavor("mariadb") is Flavor.MARIADB
    assert Flavor("mysql") is Flavor.MYSQL


# --- status rows ------------------------------------------------------------


def mysql84_row(**overrides: object) -> dict[str, object]:
    """A SHOW REPLICA STATUS row as PyMySQL returns it from MySQL 8.4 (abridged)."""
    row: dict[str, object] = {
        "Replica_IO_State": "Waiting for source to send event",
        "Source_Host": "127.0.0.1",
        "Source_User": "repl",
        "Source_Port": 33061,
        "Connect_Retry": 60,
        "Source_Log_File": "binlog.000002",
        "Read_Source_Log_Pos": 15876,
        "Relay_Log_File": "replica-relay-bin.000003",
        "Relay_Log_Pos": 16092,
        "Relay_Source_Log_File": "binlog.000002",
        "Replica_IO_Running": "Yes",
        "Replica_SQL_Running": "Yes",
        "Last_Errno": 0,
        "Last_Error": "",
        "Skip_Counter": 0,
        "Exec_Source_Log_Pos": 15876,
        "Seconds_Behind_Source": 0,
        "Last_IO_Errno": 0,
        "Last_IO_Error": "",
        "Last_SQL_Errno": 0,
        "Last_SQL_Error": "",
        "Source_Server_Id": 1,
        "Source_UUID": PRIMARY_UUID,
        "SQL_Delay": 0,
        "SQL_Remaining_Delay": None,
        "Replica_SQL_Running_State": "Replica has read all relay log; waiting for more updates",
        "Retrieved_Gtid_Set": f"{PRIMARY_UUID}:1-42",
        "Executed_Gtid_Set": f"{PRIMARY_UUID}:1-42",
        "Auto_Position": 1,
        "Channel_Name": "",
        "Get_Source_public_key": 1,
    }
    row.update(overrides)
    return row


def mariadb_row(**overrides: object) -> dict[str, object]:
    """A SHOW SLAVE STATUS row from MariaDB 10.11 (abridged)."""
    row: dict[str, object] = {
        "Slave_IO_State": "Waiting for master to send event",
        "Master_Host": "127.0.0.1",
        "Master_User": "repl",
        "Master_Port": 33061,
        "Connect_Retry": 60,
        "Master_Log_File": "mariadb-bin.000002",
        "Read_Master_Log_Pos": 3512,
        "Slave_IO_Running": "Yes",
        "Slave_SQL_Running": "Yes",
        "Last_Errno": 0,
        "Last_Error": "",
        "Seconds_Behind_Master": 0,
        "Last_IO_Errno": 0,
        "Last_IO_Error": "",
        "Last_SQL_Errno": 0,
        "Last_SQL_Error": "",
        "Master_Server_Id": 1,
        "Using_Gtid": "Slave_Pos",
        "Gtid_IO_Pos": "0-1-57",
        "Parallel_Mode": "optimistic",
        "SQL_Delay": 0,
        "SQL_Remaining_Delay": None,
        "Slave_SQL_Running_State": "Slave has read all relay log; waiting for more updates",
        "Slave_DDL_Groups": 3,
        "Slave_Non_Transactional_Groups": 0,
        "Slave_Transactional_Groups": 54,
    }
    row.update(overrides)
    return row


def test_parse_mysql84_running() -> None:
    status = parse_replica_status(mysql84_row(), Flavor.MYSQL)
    assert status == ReplicaStatus(
        io_running="Yes",
        sql_running="Yes",
        last_io_errno=0,
        last_io_error="",
        last_sql_errno=0,
        last_sql_error="",
        seconds_behind=0,
        source_host="127.0.0.1",
        source_port=33061,
        using_gtid="auto_position",
        received_gtid=f"{PRIMARY_UUID}:1-42",
        executed_gtid=f"{PRIMARY_UUID}:1-42",
        sql_delay=0,
        sql_remaining_delay=None,
    )
    assert status.threads_running


def test_parse_mysql84_io_connecting_with_error_2003() -> None:
    message = (
        "Error connecting to source 'repl@127.0.0.1:33061'. This was attempt 3/86400, "
        "with a delay of 60 seconds between attempts. Message: Can't connect to MySQL "
        "server on '127.0.0.1:33061' (111)"
    )
    row = mysql84_row(
        Replica_IO_Running="Connecting",
        Replica_IO_State="Connecting to source",
        Last_IO_Errno=2003,
        Last_IO_Error=message,
        Seconds_Behind_Source=None,
    )
    status = parse_replica_status(row, Flavor.MYSQL)
    assert status.io_running == "Connecting"
    assert status.sql_running == "Yes"
    assert status.last_io_errno == 2003
    assert status.last_io_error == message
    assert status.seconds_behind is None
    assert not status.threads_running


def test_parse_mysql84_sql_stopped_with_duplicate_key() -> None:
    message = (
        "Coordinator stopped because there were error(s) in the worker(s). The most "
        f"recent failure being: Worker 1 failed executing transaction '{PRIMARY_UUID}:43' "
        "at source log binlog.000002, end_log_pos 16201. See error log and/or "
        "performance_schema.replication_applier_status_by_worker table for more details "
        "about this failure or others, if any."
    )
    row = mysql84_row(
        Replica_SQL_Running="No",
        Last_SQL_Errno=1062,
        Last_SQL_Error=message,
        Last_Errno=1062,
        Last_Error=message,
        Seconds_Behind_Source=None,
        Retrieved_Gtid_Set=f"{PRIMARY_UUID}:1-45",
    )
    status = parse_replica_status(row, Flavor.MYSQL)
    assert status.sql_running == "No"
    assert status.io_running == "Yes"
    assert (status.last_sql_errno, status.last_sql_error) == (1062, message)
    assert status.seconds_behind is None
    assert status.received_gtid == f"{PRIMARY_UUID}:1-45"
    assert status.executed_gtid == f"{PRIMARY_UUID}:1-42"
    assert not status.threads_running


def test_parse_mysql_gtid_sets_with_newlines() -> None:
    row = mysql84_row(
        Retrieved_Gtid_Set=f"{PRIMARY_UUID}:1-42,\n{OTHER_UUID}:1-7",
        Executed_Gtid_Set=f"{PRIMARY_UUID}:1-40,\n{OTHER_UUID}:1-7,\n",
    )
    status = parse_replica_status(row, Flavor.MYSQL)
    assert status.received_gtid == f"{PRIMARY_UUID}:1-42,{OTHER_UUID}:1-7"
    assert status.executed_gtid == f"{PRIMARY_UUID}:1-40,{OTHER_UUID}:1-7,"
    assert "\n" not in status.describe()


def test_parse_mysql_values_as_bytes_and_strings() -> None:
    row = mysql84_row(
        Replica_IO_Running=b"Yes",
        Replica_SQL_Running=b"Yes",
        Seconds_Behind_Source=b"12",
        Source_Port="33061",
        Source_Host=b"db-primary",
        Last_IO_Errno="0",
        Auto_Position=b"0",
        SQL_Delay="30",
        SQL_Remaining_Delay=b"17",
        Executed_Gtid_Set=bytearray(f"{PRIMARY_UUID}:1-3".encode()),
    )
    status = parse_replica_status(row, Flavor.MYSQL)
    assert status.io_running == "Yes"
    assert status.seconds_behind == 12
    assert status.source_port == 33061
    assert status.source_host == "db-primary"
    assert status.using_gtid == "No"
    assert status.sql_delay == 30
    assert status.sql_remaining_delay == 17
    assert status.executed_gtid == f"{PRIMARY_UUID}:1-3"


def test_parse_mysql_explicit_executed_gtid_wins() -> None:
    status = parse_replica_status(mysql84_row(), Flavor.MYSQL, executed_gtid=f"{OTHER_UUID}:1")
    assert status.executed_gtid == f"{OTHER_UUID}:1"


def test_parse_old_mysql_slave_names() -> None:
    row = {
        "Slave_IO_Running": "Yes",
        "Slave_SQL_Running": "No",
        "Master_Host": "10.0.0.5",
        "Master_Port": 3306,
        "Seconds_Behind_Master": None,
        "Last_IO_Errno": 0,
        "Last_IO_Error": "",
        "Last_SQL_Errno": 1032,
        "Last_SQL_Error": "Could not execute Update_rows event on table nova.instances",
        "Retrieved_Gtid_Set": f"{PRIMARY_UUID}:1-9",
        "Executed_Gtid_Set": f"{PRIMARY_UUID}:1-8",
        "Auto_Position": 1,
        "SQL_Delay": 0,
        "SQL_Remaining_Delay": None,
    }
    status = parse_replica_status(row, Flavor.MYSQL)
    assert (status.io_running, status.sql_running) == ("Yes", "No")
    assert (status.source_host, status.source_port) == ("10.0.0.5", 3306)
    assert status.seconds_behind is None
    assert status.last_sql_errno == 1032
    assert status.using_gtid == "auto_position"
    assert status.received_gtid == f"{PRIMARY_UUID}:1-9"
    assert status.executed_gtid == f"{PRIMARY_UUID}:1-8"


def test_parse_mariadb_running_takes_executed_from_argument() -> None:
    status = parse_replica_status(mariadb_row(), Flavor.MARIADB, executed_gtid="0-1-57")
    assert status.io_running == "Yes"
    assert status.sql_running == "Yes"
    assert status.seconds_behind == 0
    assert (status.source_host, status.source_port) == ("127.0.0.1", 33061)
    assert status.using_gtid == "Slave_Pos"
    assert status.received_gtid == "0-1-57"
    assert status.executed_gtid == "0-1-57"
    assert status.threads_running


def test_parse_mariadb_delayed_and_multi_domain() -> None:
    row = mariadb_row(
        Gtid_IO_Pos="0-1-120,1-2-9",
        SQL_Delay=5,
        SQL_Remaining_Delay=3,
        Seconds_Behind_Master=4,
        Using_Gtid="Current_Pos",
    )
    status = parse_replica_status(row, Flavor.MARIADB, executed_gtid="0-1-118,1-2-9")
    assert status.received_gtid == "0-1-120,1-2-9"
    assert status.executed_gtid == "0-1-118,1-2-9"
    assert (status.sql_delay, status.sql_remaining_delay) == (5, 3)
    assert status.seconds_behind == 4
    assert status.using_gtid == "Current_Pos"


def test_parse_mariadb_without_executed_gtid_is_empty() -> None:
    status = parse_replica_status(mariadb_row(), Flavor.MARIADB)
    assert status.executed_gtid == ""
    assert status.received_gtid == "0-1-57"


def test_parse_mariadb_io_error_and_gtid_off() -> None:
    row = mariadb_row(
        Slave_IO_Running="Connecting",
        Last_IO_Errno=2003,
        Last_IO_Error="error connecting to master 'repl@127.0.0.1:33061' - retry-time: 60  "
        "maximum-retries: 100000  message: Can't connect to server on '127.0.0.1' (111 "
        '"Connection refused")',
        Using_Gtid="No",
        Gtid_IO_Pos="",
        Master_Port=None,
    )
    status = parse_replica_status(row, Flavor.MARIADB, executed_gtid="")
    assert status.io_running == "Connecting"
    assert status.last_io_errno == 2003
    assert status.using_gtid == "No"
    assert status.received_gtid == ""
    assert status.source_port is None


def test_normalize_gtid() -> None:
    assert normalize_gtid(None) == ""
    assert normalize_gtid(b"0-1-5") == "0-1-5"
    assert normalize_gtid(f" {PRIMARY_UUID}:1-3,\n{OTHER_UUID}:4\n") == (
        f"{PRIMARY_UUID}:1-3,{OTHER_UUID}:4"
    )


# --- describe / as_dict -----------------------------------------------------


def test_describe_running() -> None:
    status = parse_replica_status(mariadb_row(), Flavor.MARIADB, executed_gtid="0-1-56")
    assert status.describe() == "IO=Yes SQL=Yes behind=0s received=0-1-57 executed=0-1-56"


def test_describe_with_errors_and_null_lag() -> None:
    row = mysql84_row(
        Replica_IO_Running="Connecting",
        Replica_SQL_Running="No",
        Last_IO_Errno=2003,
        Last_IO_Error="Can't connect\nto source",
        Last_SQL_Errno=1062,
        Last_SQL_Error="Duplicate entry '1' for key 'instances.PRIMARY'",
        Seconds_Behind_Source=None,
        Retrieved_Gtid_Set="",
        Executed_Gtid_Set=f"{PRIMARY_UUID}:1-42",
    )
    status = parse_replica_status(row, Flavor.MYSQL)
    assert status.describe() == (
        f"IO=Connecting SQL=No behind=NULL received=- executed={PRIMARY_UUID}:1-42"
        "; last IO error 2003: Can't connect to source"
        "; last SQL error 1062: Duplicate entry '1' for key 'instances.PRIMARY'"
    )


def test_describe_shows_delay() -> None:
    status = parse_replica_status(mysql84_row(SQL_Delay=5, Seconds_Behind_Source=5), Flavor.MYSQL)
    assert "behind=5s" in status.describe()
    assert status.describe().endswith("delay=5s")


def test_as_dict_is_json_friendly() -> None:
    status = parse_replica_status(mysql84_row(Seconds_Behind_Source=None), Flavor.MYSQL)
    data = status.as_dict()
    assert data["io_running"] == "Yes"
    assert data["seconds_behind"] is None
    assert data["source_port"] == 33061
    assert data["threads_running"] is True
    assert json.loads(json.dumps(data)) == data


def test_replication_timeout_message_uses_describe() -> None:
    status = parse_replica_status(mariadb_row(), Flavor.MARIADB, executed_gtid="0-1-50")
    err = ReplicationTimeout("0-1-57", 0.25, status, replica="replica-1")
    assert str(err).startswith(
        "replica-1 did not apply GTID 0-1-57 within 0.250s "
        "(IO=Yes SQL=Yes behind=0s received=0-1-57 executed=0-1-50)"
    )


# --- wait results -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        (0, WaitOutcome.REACHED),
        (-1, WaitOutcome.TIMED_OUT),
        (1, WaitOutcome.FAILED),
        (None, WaitOutcome.FAILED),
        ("0", WaitOutcome.REACHED),
        (b"-1", WaitOutcome.TIMED_OUT),
    ],
)
def test_interpret_wait_result_mariadb(value: object, outcome: WaitOutcome) -> None:
    assert interpret_wait_result(Flavor.MARIADB, value) is outcome


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        (0, WaitOutcome.REACHED),
        (1, WaitOutcome.TIMED_OUT),
        (-1, WaitOutcome.FAILED),
        (None, WaitOutcome.FAILED),
        (2, WaitOutcome.FAILED),
        ("garbage", WaitOutcome.FAILED),
    ],
)
def test_interpret_wait_result_mysql(value: object, outcome: WaitOutcome) -> None:
    assert interpret_wait_result(Flavor.MYSQL, value) is outcome


@pytest.mark.parametrize(
    ("timeout", "expected"), [(0.5, 0.5), (2, 2.0), (0.0, 0.001), (0.0001, 0.001)]
)
def test_wait_timeout_argument_never_zero(timeout: float, expected: float) -> None:
    # MySQL's WAIT_FOR_EXECUTED_GTID_SET waits forever for a timeout of 0
    assert wait_timeout_argument(timeout) == pytest.approx(expected)
    assert wait_timeout_argument(timeout) > 0


@pytest.mark.parametrize("timeout", [-0.1, -1, float("nan"), float("inf")])
def test_wait_timeout_argument_rejects_bad_values(timeout: float) -> None:
    with pytest.raises(ValueError):
        wait_timeout_argument(timeout)


# --- per-flavor SQL ---------------------------------------------------------


def test_sql_for_mariadb() -> None:
    sql = sql_for(Flavor.MARIADB)
    assert sql.flavor is Flavor.MARIADB
    assert sql.show_replica_status == "SHOW SLAVE STATUS"
    assert sql.gtid_position == "SELECT @@GLOBAL.gtid_binlog_pos"
    assert sql.replica_executed_gtid == "SELECT @@GLOBAL.gtid_slave_pos"
    assert sql.last_gtid == "SELECT @@SESSION.last_gtid"
    assert sql.wait_for_gtid == "SELECT MASTER_GTID_WAIT(:gtid, :timeout)"
    assert sql.wait_function == "MASTER_GTID_WAIT"
    assert sql.wait_timed_out == -1
    assert sql.start_replica == "START SLAVE"
    assert sql.stop_replica == "STOP SLAVE"
    assert sql.start_sql_thread == "START SLAVE SQL_THREAD"
    assert sql.stop_sql_thread == "STOP SLAVE SQL_THREAD"
    assert sql.set_delay == "CHANGE MASTER TO MASTER_DELAY = :seconds, MASTER_HEARTBEAT_PERIOD = 1"


def test_sql_for_mysql() -> None:
    sql = sql_for(Flavor.MYSQL)
    assert sql.flavor is Flavor.MYSQL
    assert sql.show_replica_status == "SHOW REPLICA STATUS"
    assert sql.gtid_position == "SELECT @@GLOBAL.gtid_executed"
    assert sql.replica_executed_gtid is None
    assert sql.last_gtid == "SELECT @@GLOBAL.gtid_executed"
    assert sql.wait_for_gtid == "SELECT WAIT_FOR_EXECUTED_GTID_SET(:gtid, :timeout)"
    assert sql.wait_function == "WAIT_FOR_EXECUTED_GTID_SET"
    assert sql.wait_timed_out == 1
    assert sql.start_replica == "START REPLICA"
    assert sql.stop_replica == "STOP REPLICA"
    assert sql.start_sql_thread == "START REPLICA SQL_THREAD"
    assert sql.stop_sql_thread == "STOP REPLICA SQL_THREAD"
    assert sql.set_delay == (
        "CHANGE REPLICATION SOURCE TO SOURCE_DELAY = :seconds, SOURCE_HEARTBEAT_PERIOD = 1"
    )


@pytest.mark.parametrize("seconds", [0, 1, 3600, 2**31 - 1])
def test_validate_delay_accepts_whole_seconds(seconds: int) -> None:
    assert validate_delay(seconds) == seconds


@pytest.mark.parametrize("seconds", [-1, -3600, 2**31])
def test_validate_delay_rejects_out_of_range(seconds: int) -> None:
    with pytest.raises(ValueError):
        validate_delay(seconds)


@pytest.mark.parametrize("seconds", [1.5, "5", True])
def test_validate_delay_rejects_non_integers(seconds: Any) -> None:
    with pytest.raises(TypeError):
        validate_delay(seconds)


# --- wait_for_gtid control flow, on a scripted stand-in connection ----------


class _Result:
    def __init__(self, value: object) -> None:
        self._value = value

    def scalar(self) -> object:
        return self._value

    def mappings(self) -> _Result:
        return self

    def first(self) -> object:
        return self._value


class ScriptedConnection:
    """Answers each statement from a table of text -> value (or exception)."""

    def __init__(self, answers: Mapping[str, object]) -> None:
        self.answers = dict(answers)
        self.executed: list[tuple[str, dict[str, object] | None]] = []

    def execute(self, clause: Any, params: dict[str, object] | None = None) -> _Result:
        statement = str(clause)
        self.executed.append((statement, params))
        answer = self.answers[statement]
        if isinstance(answer, BaseException):
            raise answer
        return _Result(answer)


def test_wait_for_gtid_empty_returns_at_once() -> None:
    conn = ScriptedConnection({})
    assert replication.wait_for_gtid(conn, " \n", 1.0, Flavor.MYSQL) == 0.0  # type: ignore[arg-type]
    assert conn.executed == []


def test_wait_for_gtid_reached_binds_parameters() -> None:
    conn = ScriptedConnection({"SELECT WAIT_FOR_EXECUTED_GTID_SET(:gtid, :timeout)": 0})
    gtid = f"{PRIMARY_UUID}:1-42,\n{OTHER_UUID}:1-7"
    waited = replication.wait_for_gtid(conn, gtid, 0.0, Flavor.MYSQL)  # type: ignore[arg-type]
    assert waited >= 0.0
    assert conn.executed == [
        (
            "SELECT WAIT_FOR_EXECUTED_GTID_SET(:gtid, :timeout)",
            {"gtid": f"{PRIMARY_UUID}:1-42,{OTHER_UUID}:1-7", "timeout": 0.001},
        )
    ]


def test_wait_for_gtid_timeout_reads_status_through_status_conn() -> None:
    conn = ScriptedConnection({"SELECT MASTER_GTID_WAIT(:gtid, :timeout)": -1})
    status_conn = ScriptedConnection(
        {
            "SHOW SLAVE STATUS": mariadb_row(Slave_SQL_Running="No", Seconds_Behind_Master=None),
            "SELECT @@GLOBAL.gtid_slave_pos": "0-1-50",
        }
    )
    with pytest.raises(ReplicationTimeout) as caught:
        replication.wait_for_gtid(
            conn,  # type: ignore[arg-type]
            "0-1-57",
            0.2,
            Flavor.MARIADB,
            status_conn=status_conn,  # type: ignore[arg-type]
            replica="replica-2",
        )
    err = caught.value
    assert err.gtid == "0-1-57"
    assert err.replica_status is not None
    assert err.replica_status.sql_running == "No"
    assert err.replica_status.executed_gtid == "0-1-50"
    assert str(err).startswith("replica-2 did not apply GTID 0-1-57")
    assert [s for s, _ in conn.executed] == ["SELECT MASTER_GTID_WAIT(:gtid, :timeout)"]


def test_wait_for_gtid_timeout_without_privilege_has_no_status() -> None:
    denied = OperationalError(
        "SHOW REPLICA STATUS", None, pymysql.err.OperationalError(1227, "Access denied")
    )
    conn = ScriptedConnection(
        {
            "SELECT WAIT_FOR_EXECUTED_GTID_SET(:gtid, :timeout)": 1,
            "SHOW REPLICA STATUS": denied,
        }
    )
    with pytest.raises(ReplicationTimeout) as caught:
        replication.wait_for_gtid(conn, f"{PRIMARY_UUID}:5", 0.1, Flavor.MYSQL)  # type: ignore[arg-type]
    assert caught.value.replica_status is None
    assert "replica status unavailable" in str(caught.value)


def test_wait_for_gtid_timeout_does_not_swallow_other_errors() -> None:
    lost = OperationalError(
        "SHOW REPLICA STATUS", None, pymysql.err.OperationalError(2013, "Lost connection")
    )
    conn = ScriptedConnection(
        {
            "SELECT WAIT_FOR_EXECUTED_GTID_SET(:gtid, :timeout)": 1,
            "SHOW REPLICA STATUS": lost,
        }
    )
    with pytest.raises(OperationalError):
        replication.wait_for_gtid(conn, f"{PRIMARY_UUID}:5", 0.1, Flavor.MYSQL)  # type: ignore[arg-type]


@pytest.mark.parametrize("flavor", [Flavor.MARIADB, Flavor.MYSQL])
def test_wait_for_gtid_null_is_replication_error(flavor: Flavor) -> None:
    conn = ScriptedConnection({sql_for(flavor).wait_for_gtid: None})
    with pytest.raises(ReplicationError) as caught:
        replication.wait_for_gtid(conn, "0-1-5", 0.1, flavor, replica="r1")  # type: ignore[arg-type]
    assert not isinstance(caught.value, ReplicationTimeout)
    assert f"r1: {sql_for(flavor).wait_function}('0-1-5') returned NULL" in str(caught.value)


def test_replica_status_none_when_not_a_replica() -> None:
    conn = ScriptedConnection({"SHOW REPLICA STATUS": None})
    assert replication.replica_status(conn, Flavor.MYSQL) is None  # type: ignore[arg-type]


def test_server_flavor_and_positions() -> None:
    conn = ScriptedConnection(
        {
            "SELECT VERSION()": b"11.4.2-MariaDB-ubu2404",
            "SELECT @@GLOBAL.gtid_binlog_pos": "",
            "SELECT @@SESSION.last_gtid": "0-1-9",
        }
    )
    assert replication.server_flavor(conn) is Flavor.MARIADB  # type: ignore[arg-type]
    assert replication.gtid_position(conn, Flavor.MARIADB) == ""  # type: ignore[arg-type]
    assert replication.last_gtid(conn, Flavor.MARIADB) == "0-1-9"  # type: ignore[arg-type]


def test_set_replica_delay_validates_before_executing() -> None:
    conn = ScriptedConnection({sql_for(Flavor.MYSQL).set_delay: None})
    with pytest.raises(ValueError):
        replication.set_replica_delay(conn, Flavor.MYSQL, -5)  # type: ignore[arg-type]
    assert conn.executed == []
    replication.set_replica_delay(conn, Flavor.MYSQL, 5)  # type: ignore[arg-type]
    assert conn.executed == [(sql_for(Flavor.MYSQL).set_delay, {"seconds": 5})]


@pytest.mark.parametrize(
    ("row", "flavor"),
    [
        (mysql84_row(Source_SSL_Allowed="Yes", Source_SSL_Verify_Server_Cert="Yes"), Flavor.MYSQL),
        (
            mariadb_row(Master_SSL_Allowed="Yes", Master_SSL_Verify_Server_Cert="Yes"),
            Flavor.MARIADB,
        ),
    ],
)
def test_a_channel_over_verified_tls(row: dict[str, object], flavor: Flavor) -> None:
    status = parse_replica_status(row, flavor, executed_gtid="")
    assert (status.ssl_allowed, status.ssl_verify_server_cert) == ("Yes", "Yes")
    assert status.replicates_over_tls


@pytest.mark.parametrize(
    ("allowed", "verify"), [("Yes", "No"), ("No", "No"), ("Ignored", "Yes"), ("", "")]
)
def test_a_channel_without_tls_or_without_verification(allowed: str, verify: str) -> None:
    row = mariadb_row(Master_SSL_Allowed=allowed, Master_SSL_Verify_Server_Cert=verify)
    assert not parse_replica_status(row, Flavor.MARIADB).replicates_over_tls
