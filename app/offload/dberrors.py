"""Driver errors translated once, at the engine.

PyMySQL reports everything as ``OperationalError``/``InternalError`` with a
server or client error number.  The numbers that callers must act on differently
become offload exceptions; everything else (syntax errors, integrity errors)
stays SQLAlchemy's, which callers already know how to catch.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import pymysql
from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from offload.errors import (
    AccessDenied,
    CannotConnect,
    ConnectionLost,
    DatabaseError,
    Deadlock,
    MissingTable,
    ReadOnlyRefused,
    SchemaMismatch,
    TlsRefused,
    UnknownDatabase,
)

__all__ = [
    "DUPLICATE_KEY",
    "ERROR_CODES",
    "error_code",
    "install_translation",
    "is_access_denied",
    "translate",
    "unpooled_engine",
]

#: The one table of the driver's error numbers offload acts on (client CR_*, server ER_*),
#: and the exception each becomes.  Every other number stays SQLAlchemy's.
ERROR_CODES: Final[Mapping[int, type[DatabaseError]]] = MappingProxyType(
    {
        # no connection: socket, TCP refused, unknown host
        2002: CannotConnect,
        2003: CannotConnect,
        2005: CannotConnect,
        # the connection broke: gone away, lost, shutdown, killed, disconnect
        2006: ConnectionLost,
        2013: ConnectionLost,
        2055: ConnectionLost,
        1053: ConnectionLost,
        1927: ConnectionLost,
        4031: ConnectionLost,
        # the server rolled the transaction back: deadlock, lock wait timeout
        1213: Deadlock,
        1205: Deadlock,
        # the user lacks a privilege, or the credentials are wrong
        1044: AccessDenied,  # database
        1045: AccessDenied,  # user/password
        1142: AccessDenied,  # table
        1143: AccessDenied,  # column
        1227: AccessDenied,  # SUPER, REPLICATION CLIENT... (global)
        1370: AccessDenied,  # routine
        1698: AccessDenied,  # auth plugin (unix_socket)
        1049: UnknownDatabase,
        # require_secure_transport refused a connection without TLS (MySQL, MariaDB 11)
        3159: TlsRefused,
        # --read-only, read-only transaction, read-only mode
        1290: ReadOnlyRefused,
        1792: ReadOnlyRefused,
        1836: ReadOnlyRefused,
        # a table or column offload uses is not there (another schema, an old Nova)
        1146: MissingTable,
        1054: SchemaMismatch,
    }
)

#: what both schema errors ask for
_SYNC_HINT: Final = (
    "`offload db sync` creates offload's tables, or on a Nova database adds what offload "
    "needs and names what is missing"
)


#: what each exception says: its message (of ``where`` and the driver's text) and hint
_WORDING: Final[Mapping[type[DatabaseError], tuple[str, str | None]]] = MappingProxyType(
    {
        CannotConnect: (
            "cannot connect to {where} ({text})",
            "is the server running? `make up` starts the testbed; check host and port",
        ),
        ConnectionLost: ("lost the connection to {where} ({text})", None),
        Deadlock: ("{where} rolled the transaction back ({text})", None),
        AccessDenied: (
            "{where} refused access ({text})",
            "check the user and password in the URL and the user's grants",
        ),
        UnknownDatabase: ("{where}: {text}", "create it with `offload db sync` or fix the URL"),
        TlsRefused: (
            "{where} requires TLS ({text})",
            "add ssl_ca=<the CA that signed the server's certificate> to the URL "
            "(a testbed's is DIR/tls/ca.pem; `offload testbed up` writes it)",
        ),
        ReadOnlyRefused: ("{where} refused a write ({text})", None),
        MissingTable: ("{where}: {text}", _SYNC_HINT),
        SchemaMismatch: ("{where}: {text}", _SYNC_HINT),
    }
)

#: a connect error (2003) whose text is the TLS library's: the certificate did not verify
_TLS_FAILURE: Final = ("SSL:", "CERTIFICATE_VERIFY_FAILED", "certificate verify failed")
_TLS_FAILURE_WORDING: Final = (
    "{where}: TLS failed ({text})",
    "ssl_ca in the URL must name the CA that signed the server's certificate, and the "
    "URL's host must be a name the certificate holds (a testbed's CA is DIR/tls/ca.pem)",
)

#: ER_DUP_ENTRY: not translated (an IntegrityError stays SQLAlchemy's); callers may name it
DUPLICATE_KEY: Final = 1062


def error_code(exc: BaseException) -> int | None:
    """The MySQL error number a PyMySQL exception carries, if any."""
    if isinstance(exc, pymysql.err.Error) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def _driver_message(exc: BaseException) -> str:
    if len(exc.args) > 1:
        return str(exc.args[1]).splitlines()[0] if str(exc.args[1]) else ""
    return ""


def translate(exc: BaseException, where: str) -> DatabaseError | None:
    """The offload exception for a driver error at ``where`` ('primary 127.0.0.1:33061')."""
    if isinstance(exc, pymysql.err.InterfaceError):
        return ConnectionLost(f"connection to {where} is closed", code=error_code(exc))
    code = error_code(exc)
    kind = ERROR_CODES.get(code) if code is not None else None
    if kind is None:
        return None
    message, hint = _WORDING[kind]
    if kind is CannotConnect and any(mark in _driver_message(exc) for mark in _TLS_FAILURE):
        kind, (message, hint) = TlsRefused, _TLS_FAILURE_WORDING
    return kind(message.format(where=where, text=_driver_message(exc)), hint=hint, code=code)


def is_access_denied(exc: BaseException) -> bool:
    """Whether ``exc`` says the user lacks a privilege (translated, or a raw driver error)."""
    if isinstance(exc, AccessDenied):
        return True
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    code = error_code(cause) if cause is not None else None
    return code is not None and ERROR_CODES.get(code) is AccessDenied


def install_translation(engine: Engine, *, name: str) -> None:
    """Make ``engine`` raise offload exceptions for the driver errors above."""
    url = engine.url
    where = f"{name} {url.host}:{url.port or 3306}"

    @event.listens_for(engine, "handle_error")
    def _translate(context: ExceptionContext) -> BaseException | None:
        if context.is_pre_ping:
            return None  # a dead pooled connection: the pool reconnects, nothing to report
        execution = context.execution_context
        if execution is not None and execution.execution_options.get("skip_user_error_events"):
            return None  # SQLAlchemy's own probe (has_table's DESCRIBE): it reads the error
        return translate(context.original_exception, where)


def unpooled_engine(url: URL, *, name: str, connect_timeout: int = 5) -> Engine:
    """An engine for one-off administrative work: a fresh connection each time, no
    pool left behind, errors translated like every other engine's."""
    engine = create_engine(
        url, poolclass=NullPool, connect_args={"connect_timeout": connect_timeout}
    )
    install_translation(engine, name=name)
    return engine
