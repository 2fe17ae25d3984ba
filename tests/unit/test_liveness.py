"""The checkout check: which pooled connection is pinged (injected clock, real sockets)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from sqlalchemy.exc import DisconnectionError

from offload.liveness import ALIVE_BYPASS, install_liveness_check, needs_ping, socket_has_news


@pytest.mark.parametrize(
    ("idle", "news", "ping"),
    [
        (0.0, False, False),
        (ALIVE_BYPASS, False, False),
        (ALIVE_BYPASS + 0.001, False, True),
        (0.0, True, True),
    ],
)
def test_needs_ping(idle: float, news: bool, ping: bool) -> None:
    assert needs_ping(idle, socket_news=news) is ping


class FakeConnection:
    """What the check uses of a PyMySQL connection: its socket and ping()."""

    def __init__(self, sock: socket.socket | None, *, dead: bool = False) -> None:
        self._sock = sock
        self.dead = dead
        self.pings = 0

    def ping(self, reconnect: bool = False) -> None:
        self.pings += 1
        if self.dead:
            raise pymysql.err.OperationalError(2013, "Lost connection to server during query")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair()
    with client, server:
        yield client, server


def test_a_quiet_socket_has_no_news_and_a_closed_peer_has(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    assert not socket_has_news(FakeConnection(client))
    server.close()  # the server's FIN: readable (EOF) without a round trip
    assert socket_has_news(FakeConnection(client))


def test_no_socket_or_a_closed_one_is_news(pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = pair
    assert socket_has_news(FakeConnection(None))
    client.close()
    assert socket_has_news(FakeConnection(client))


class Clock:
    def __init__(self) -> None:
        self.now = 64.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """Collects the listeners install_liveness_check registers (no SQLAlchemy engine)."""


@pytest.fixture
def listeners(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def listens_for(target: object, name: str) -> Any:
        def register(fn: Any) -> Any:
            found[name] = fn
            return fn

        return register

    monkeypatch.setattr("offload.liveness.event.listens_for", listens_for)
    return found


class Record:
    def __init__(self) -> None:
        self.info: dict[str, Any] = {}


def test_a_connection_back_moments_ago_is_not_pinged_an_idle_or_closed_one_is(
    listeners: dict[str, Any], pair: tuple[socket.socket, socket.socket]
) -> None:
    clock = Clock()
    install_liveness_check(FakeEngine(), clock=clock)  # type: ignore[arg-type]
    client, server = pair
    conn, record = FakeConnection(client), Record()
    listeners["checkout"](conn, record, None)  # fresh from connect(): not pinged
    listeners["checkin"](conn, record)
    clock.now += ALIVE_BYPASS / 2
    listeners["checkout"](conn, record, None)
    assert conn.pings == 0
    listeners["checkin"](conn, record)
    clock.now += ALIVE_BYPASS * 2  # idle long enough for a silent death: pinged
    listeners["checkout"](conn, record, None)
    assert conn.pings == 1
    listeners["checkin"](conn, record)
    server.close()  # killed moments after its check-in: the FIN is seen, pinged
    listeners["checkout"](conn, record, None)
    assert conn.pings == 2


def test_a_dead_connection_is_handed_back_to_the_pool_to_replace(
    listeners: dict[str, Any], pair: tuple[socket.socket, socket.socket]
) -> None:
    install_liveness_check(FakeEngine(), clock=Clock())  # type: ignore[arg-type]
    client, server = pair
    conn, record = FakeConnection(client, dead=True), Record()
    listeners["checkin"](conn, record)
    server.close()
    with pytest.raises(DisconnectionError, match="dead"):
        listeners["checkout"](conn, record, None)
