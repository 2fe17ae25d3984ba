"""Unit tests for offload.dberrors: PyMySQL errors become offload exceptions."""

from __future__ import annotations

import pymysql
import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from offload.dberrors import ERROR_CODES, error_code, is_access_denied, translate
from offload.errors import (
    AccessDenied,
    CannotConnect,
    ConnectionLost,
    DatabaseError,
    Deadlock,
    MissingTable,
    OffloadError,
    ReadOnlyRefused,
    SchemaMismatch,
    TlsRefused,
    UnknownDatabase,
)

WHERE = "replica0 127.0.0.1:33062"


def translated(exc: BaseException) -> DatabaseError:
    result = translate(exc, WHERE)
    assert result is not None, f"{exc!r} was not translated"
    assert WHERE in result.message
    assert isinstance(result, OffloadError)
    return result


def test_refused_tcp_connection_is_cannot_connect() -> None:
    exc = pymysql.err.OperationalError(
        2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)"
    )

    err = translated(exc)

    assert type(err) is CannotConnect
    assert isinstance(err, ConnectionLost)  # retry code catches both
    assert err.code == 2003
    assert "Connection refused" in err.message
    assert "make up" in (err.hint or "")
    assert err.exit_code == 1


@pytest.mark.parametrize("code", [2002, 2005])
def test_socket_and_unknown_host_are_cannot_connect(code: int) -> None:
    assert type(translated(pymysql.err.OperationalError(code, "nope"))) is CannotConnect


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (2013, "Lost connection to MySQL server during query"),
        (2006, "MySQL server has gone away"),
        (2055, "Lost connection to MySQL server at 'reading initial communication packet'"),
        (1053, "Server shutdown in progress"),
    ],
)
def test_lost_connection(code: int, text: str) -> None:
    err = translated(pymysql.err.OperationalError(code, text))

    assert type(err) is ConnectionLost
    assert err.code == code
    assert text in err.message


def test_closed_connection_interface_error_is_connection_lost() -> None:
    err = translated(pymysql.err.InterfaceError(0, ""))

    assert type(err) is ConnectionLost
    assert "closed" in err.message


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (1213, "Deadlock found when trying to get lock; try restarting transaction"),
        (1205, "Lock wait timeout exceeded; try restarting transaction"),
    ],
)
def test_deadlock_and_lock_wait_timeout(code: int, text: str) -> None:
    err = translated(pymysql.err.OperationalError(code, text))

    assert type(err) is Deadlock
    assert err.code == code
    assert "Deadlock" in err.message or "Lock wait" in err.message


def test_access_denied_is_a_usage_error() -> None:
    exc = pymysql.err.OperationalError(
        1045, "Access denied for user 'nova'@'localhost' (using password: YES)"
    )

    err = translated(exc)

    assert type(err) is AccessDenied
    assert err.exit_code == 2
    assert err.code == 1045
    assert "password" in (err.hint or "")


def test_missing_privilege_is_access_denied() -> None:
    exc = pymysql.err.OperationalError(
        1142, "INSERT command denied to user 'nova_ro'@'localhost' for table 'instances'"
    )

    assert type(translated(exc)) is AccessDenied


def test_unknown_database() -> None:
    err = translated(pymysql.err.OperationalError(1049, "Unknown database 'nova'"))

    assert type(err) is UnknownDatabase
    assert err.exit_code == 2
    assert "Unknown database 'nova'" in err.message
    assert "db sync" in (err.hint or "")


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (
            1290,
            "The MySQL server is running with the --read-only option so it cannot "
            "execute this statement",
        ),
        (1792, "Cannot execute statement in a READ ONLY transaction."),
        (1836, "Running in read-only mode"),
    ],
)
def test_read_only_server_refusal(code: int, text: str) -> None:
    err = translated(pymysql.err.InternalError(code, text))

    assert type(err) is ReadOnlyRefused
    assert err.code == code


def test_multi_line_driver_message_keeps_the_first_line() -> None:
    err = translated(pymysql.err.OperationalError(2013, "Lost connection\nsecond line"))

    assert "second line" not in str(err)
    assert "\n" not in str(err)


def test_missing_table_says_how_to_create_it() -> None:
    err = translated(pymysql.err.ProgrammingError(1146, "Table 'nova.heartbeat' doesn't exist"))

    assert type(err) is MissingTable
    assert err.exit_code == 2
    assert err.code == 1146
    assert "nova.heartbeat" in err.message
    assert "offload db sync" in (err.hint or "")


def test_unknown_column_is_a_schema_mismatch() -> None:
    err = translated(
        pymysql.err.OperationalError(1054, "Unknown column 'scheduled_at' in 'INSERT INTO'")
    )

    assert type(err) is SchemaMismatch
    assert "scheduled_at" in err.message
    assert "offload db sync" in (err.hint or "")


def test_duplicate_key_is_left_to_sqlalchemy() -> None:
    exc = pymysql.err.IntegrityError(1062, "Duplicate entry 'x' for key 'uniq_instances0uuid'")

    assert translate(exc, WHERE) is None


def test_syntax_error_is_left_to_sqlalchemy() -> None:
    exc = pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax")

    assert translate(exc, WHERE) is None


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("nope"),
        OSError(111, "Connection refused"),  # an int first arg, but not a driver error
        RuntimeError(2003, "looks like a code"),
        pymysql.err.OperationalError("no code at all"),
    ],
)
def test_other_exceptions_are_not_translated(exc: BaseException) -> None:
    assert translate(exc, WHERE) is None


def test_error_code() -> None:
    assert error_code(pymysql.err.OperationalError(2003, "x")) == 2003
    assert error_code(pymysql.err.IntegrityError(1062, "x")) == 1062
    assert error_code(pymysql.err.InterfaceError(0, "")) == 0
    assert error_code(pymysql.err.OperationalError()) is None
    assert error_code(pymysql.err.OperationalError("text")) is None
    assert error_code(OSError(111, "Connection refused")) is None
    assert error_code(ValueError(5)) is None


def test_is_access_denied() -> None:
    denied = OperationalError(
        "SHOW REPLICA STATUS",
        None,
        pymysql.err.OperationalError(
            1227,
            "Access denied; you need (at least one of) the SUPER, REPLICATION CLIENT "
            "privilege(s) for this operation",
        ),
    )
    syntax = ProgrammingError(
        "SHOW REPLICA STATUS", None, pymysql.err.ProgrammingError(1064, "syntax error")
    )
    assert is_access_denied(denied)
    assert is_access_denied(AccessDenied("replica refused access", code=1227))
    assert not is_access_denied(syntax)
    assert not is_access_denied(RuntimeError("boom"))


@pytest.mark.parametrize(
    "code", sorted(c for c, kind in ERROR_CODES.items() if kind is AccessDenied)
)
def test_every_access_denied_code_is_translated_and_recognised(code: int) -> None:
    raw = pymysql.err.OperationalError(code, "denied")

    assert type(translated(raw)) is AccessDenied
    assert is_access_denied(OperationalError("SELECT 1", None, raw))


def test_routine_privilege_is_access_denied() -> None:
    # ER_PROCACCESS_DENIED_ERROR: once only in replication's own list, now in the one table
    raw = pymysql.err.OperationalError(
        1370, "execute command denied to user 'nova_ro'@'%' for routine 'nova.f'"
    )

    assert type(translated(raw)) is AccessDenied


def test_a_certificate_that_does_not_verify_is_a_tls_refusal_not_a_server_down() -> None:
    exc = pymysql.err.OperationalError(
        2003,
        "Can't connect to MySQL server on '127.0.0.1' ([SSL: CERTIFICATE_VERIFY_FAILED] "
        "certificate verify failed: self-signed certificate in certificate chain (_ssl.c:1006))",
    )

    err = translated(exc)

    assert type(err) is TlsRefused
    assert not isinstance(err, ConnectionLost)  # retrying does not help
    assert "CERTIFICATE_VERIFY_FAILED" in err.message
    assert "ssl_ca" in (err.hint or "") and "make up" not in (err.hint or "")
    assert err.exit_code == 2


def test_a_server_requiring_tls_refuses_a_plain_client() -> None:
    exc = pymysql.err.OperationalError(
        3159,
        "Connections using insecure transport are prohibited while --require_secure_transport=ON.",
    )

    err = translated(exc)

    assert type(err) is TlsRefused
    assert "requires TLS" in err.message and "ssl_ca=" in (err.hint or "")
