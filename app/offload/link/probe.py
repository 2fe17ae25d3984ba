"""Commit → visible: how long a row committed on the primary takes to show on a replica.

Two plain PyMySQL clients, no offload routing: one inserts a row into
``offload_link.probe`` on the primary (autocommit), the other polls the replica for
that row.  A sample is the time from the commit's OK to the first poll that sees the
row (so it includes up to one poll, ~0.1 ms on loopback).  Needs a privileged URL on
each side (the testbed's ``offload_admin``): the probe has a database of its own.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import pymysql
from sqlalchemy import URL

from offload.errors import ReplicationError
from offload.urls import tls_connect_args
from offload.waiting import Deadline, wait_for

__all__ = ["PROBE_TABLE", "Probe", "median"]

PROBE_DATABASE: Final = "offload_link"
PROBE_TABLE: Final = f"{PROBE_DATABASE}.probe"


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def _connect(url: URL) -> Any:
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "",
        password=url.password or "",
        autocommit=True,
        connect_timeout=5,
        **tls_connect_args(url),
    )


@dataclass
class Probe:
    """Open clients on a primary and a replica; ``sample()`` measures one commit."""

    primary: Any
    replica: Any
    clock: Callable[[], float] = time.perf_counter
    #: between polls: short, but the poller leaves the CPU to the servers and the link
    poll: float = 0.0001
    _next_id: int = 0

    @classmethod
    @contextmanager
    def open(cls, primary: URL, replica: URL) -> Iterator[Probe]:
        writer, reader = _connect(primary), _connect(replica)
        try:
            with writer.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {PROBE_DATABASE}")
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} "
                    "(id BIGINT PRIMARY KEY, written DOUBLE NOT NULL)"
                )
                cur.execute("SELECT COALESCE(MAX(id), 0) FROM offload_link.probe")
                (last,) = cur.fetchone()
            probe = cls(writer, reader, _next_id=int(last))
            if not wait_for(probe._table_on_replica, Deadline(30.0), interval=0.02):
                raise ReplicationError(
                    f"{PROBE_TABLE} did not reach the replica within 30s",
                    hint="`offload testbed status` shows its threads",
                )
            yield probe
        finally:
            writer.close()
            reader.close()

    def _table_on_replica(self) -> bool:
        with self.replica.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = 'probe'",
                (PROBE_DATABASE,),
            )
            return cur.fetchone() is not None

    def commit(self) -> tuple[int, float]:
        """Insert the next row on the primary; (its id, the time its commit returned)."""
        self._next_id += 1
        with self.primary.cursor() as cur:
            cur.execute(
                "INSERT INTO offload_link.probe (id, written) VALUES (%s, %s)",
                (self._next_id, time.time()),
            )
        return self._next_id, self.clock()

    def visible(self, row: int) -> bool:
        with self.replica.cursor() as cur:
            cur.execute("SELECT 1 FROM offload_link.probe WHERE id = %s", (row,))
            return cur.fetchone() is not None

    def await_row(self, row: int, timeout: float) -> float:
        """Poll the replica until ``row`` shows; the clock's time it did."""
        if not wait_for(lambda: self.visible(row), Deadline(timeout), interval=self.poll):
            raise ReplicationError(f"probe row {row} not visible on the replica in {timeout:g}s")
        return self.clock()

    def sample(self, timeout: float = 10.0) -> float:
        """One commit's visibility on the replica, in seconds."""
        row, committed = self.commit()
        return self.await_row(row, timeout) - committed

    def samples(self, count: int, timeout: float = 10.0) -> list[float]:
        return [self.sample(timeout) for _ in range(count)]

    def checksums(self) -> tuple[int, int]:
        """CHECKSUM TABLE of the probe table on the primary and on the replica."""
        values = []
        for conn in (self.primary, self.replica):
            with conn.cursor() as cur:
                cur.execute(f"CHECKSUM TABLE {PROBE_TABLE}")
                values.append(int(cur.fetchone()[1]))
        return values[0], values[1]
