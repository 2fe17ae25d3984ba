"""Pooled connections checked at checkout, with a round trip only when one can be dead.

SQLAlchemy's ``pool_pre_ping`` (and oslo.db, which turns it on) sends a ping at every
checkout: one round trip per session, before its first statement.  A connection given
back to the pool moments ago is almost never dead, and when it is — the server killed
it, restarted, or closed it for ``wait_timeout`` — the server's FIN (or its last error
packet) is already waiting in the socket.  So, at checkout:

* the socket is polled without waiting (no round trip): anything readable on an idle
  connection means the server closed it or said something unasked → ping;
* a connection idle for longer than ``bypass`` seconds is pinged anyway (a link that
  died silently sends nothing; HikariCP's ``aliveBypassWindowMs`` is the same idea);
* otherwise no ping.

A failed ping raises ``DisconnectionError``: the pool drops the connection and checks
out a fresh one, as pre-ping does — a session never sees the dead connection.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Any, Final

import pymysql
from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from offload.waiting import Clock

__all__ = ["ALIVE_BYPASS", "install_liveness_check", "needs_ping", "socket_has_news"]

#: seconds since check-in within which a quiet socket is trusted without a ping
ALIVE_BYPASS: Final = 0.5
_CHECKED_IN = "offload_checked_in"


def needs_ping(idle: float, *, socket_news: bool, bypass: float = ALIVE_BYPASS) -> bool:
    """Whether a checkout of a connection idle for ``idle`` seconds must ping first."""
    return idle > bypass or socket_news


def socket_has_news(dbapi_connection: Any) -> bool:
    """Something is readable on an idle connection's socket (EOF, an error), or no socket.

    A zero-timeout poll: no byte is read, no round trip is made.  TLS sockets are
    polled on their file descriptor too (a pending TLS record reads as news: a ping).
    """
    sock = getattr(dbapi_connection, "_sock", None)
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed: fileno() -1
        return True


def install_liveness_check(
    engine: Engine,
    *,
    clock: Clock = time.monotonic,
    bypass: float = ALIVE_BYPASS,
    news: Callable[[Any], bool] = socket_has_news,
) -> None:
    """Check ``engine``'s pooled connections at checkout as the module says (no pre-ping)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_CHECKED_IN] = clock()

    @event.listens_for(engine, "checkout")
    def _check(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        checked_in = record.info.pop(_CHECKED_IN, None)
        if checked_in is None:  # fresh from connect() (info is cleared): nothing to check
            return
        if not needs_ping(clock() - checked_in, socket_news=news(dbapi_connection), bypass=bypass):
            return
        try:
            dbapi_connection.ping(reconnect=False)
        except (pymysql.Error, OSError) as exc:
            # the pool discards this connection and checks out a fresh one
            raise DisconnectionError(f"a pooled connection was dead: {exc}") from exc
