"""Driver errors translated once, at the engine.

PyMySQL reports everything as ``OperationalError``/``InternalError`` with a
server or client error number.  The numbers that callers must act on differently
become offload exceptions; everything else (syntax errors, integrity errors)
stays SQLAlchemy's, which callers already know how to catch.
"""

from __future__ import annotations

from typing import Final

import pymysql
from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
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
    UnknownDatabase,
)

__all__ = ["error_code", "install_translation", "translate", "unpooled_engine"]

# client-side (CR_*) and server-side (ER_*) error numbers
_CANNOT_CONNECT: Final = frozenset({2002, 2003, 2005})  # socket, TCP refused, unknown host
_LOST: Final = frozenset({2006, 2013, 2055, 1053, 1927, 4031})  # gone away, lost, shutdown
_DEADLOCK: Final = frozenset({1213, 1205})  # deadlock, lock wait timeout
_ACCESS: Final = frozenset({1044, 1045, 1142, 1143, 1227, 1698})
_UNKNOWN_DB: Final = frozenset({1049})
_READ_ONLY: Final = frozenset({1290, 1792, 1836})  # --read-only, read-only trx, read-only mode
_NO_SUCH_TABLE: Final = 1146
_UNKNOWN_COLUMN: Final = 1054
#: what both schema errors ask for
_SYNC_HINT: Final = (
    "`offload db sync` creates offload's tables, or on a Nova database adds what offload "
    "needs and names what is missing"
)


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
    if code is None:
        return None
    text = _driver_message(exc)
    if code in _CANNOT_CONNECT:
        return CannotConnect(
            f"cannot connect to {where} ({text})",
            hint="is the server running? `make up` starts the testbed; check host and port",
            code=code,
        )
    if code in _LOST:
        return ConnectionLost(f"lost the connection to {where} ({text})", code=code)
    if code in _DEADLOCK:
        return Deadlock(f"{where} rolled the transaction back ({text})", code=code)
    if code in _ACCESS:
        return AccessDenied(
            f"{where} refused access ({text})",
            hint="check the user and password in the URL and the user's grants",
            code=code,
        )
    if code in _UNKNOWN_DB:
        return UnknownDatabase(
            f"{where}: {text}", hint="create it with `offload db sync` or fix the URL", code=code
        )
    if code in _READ_ONLY:
        return ReadOnlyRefused(f"{where} refused a write ({text})", code=code)
    if code == _NO_SUCH_TABLE:
        return MissingTable(f"{where}: {text}", hint=_SYNC_HINT, code=code)
    if code == _UNKNOWN_COLUMN:
        return SchemaMismatch(f"{where}: {text}", hint=_SYNC_HINT, code=code)
    return None


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
