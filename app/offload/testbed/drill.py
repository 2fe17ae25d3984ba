"""The role-change drill: a writer that counts its own commits, and the time a role
change leaves the primary's endpoint without a write.

``CountingWriter`` commits one row per slot (``rate`` a second) through the primary's
URL into a table of its own (``seq`` unique), each attempt retried until it is
*confirmed*: its COMMIT returned, or a retry of the same ``seq`` hit the unique key
(the commit had landed; its answer was lost with the connection).  So its count is
exact whatever the role change did, and the table must hold exactly that many rows
on every server afterwards — a lost or doubled write shows.  Each commit notes the
``@@server_id`` that took it, so *time to the first write on the new primary* is read
from the writer's own record, not assumed.

``drill`` runs ``times`` switchovers (or failovers, each followed by the old primary's
rejoin) back and forth on a testbed with endpoints (native or compose), the writer committing
throughout, and returns each change's time to the first write (``offload testbed
drill``).  Figures measured on a loaded machine are upper bounds.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    URL,
    BigInteger,
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    create_engine,
    insert,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from offload import replication
from offload.dberrors import DUPLICATE_KEY, error_code, install_translation
from offload.errors import OffloadError, TestbedError
from offload.testbed import roles
from offload.testbed.knobs import ApplierKnobs, apply_to_primary, apply_to_replica
from offload.waiting import Clock, Deadline, wait_for

__all__ = ["DRILL_TABLE", "CountingWriter", "DrillResult", "drill"]

#: the writer's table, in the database of the URL it writes through
DRILL_TABLE = "offload_drill_writes"
#: pause between attempts while the primary refuses or is away (seconds)
_RETRY_PAUSE = 0.005


class CountingWriter:
    """Commits ``rate`` rows a second through ``url``, each exactly once, on its own thread."""

    def __init__(
        self,
        url: URL,
        *,
        rate: float = 50.0,
        table: str = DRILL_TABLE,
        clock: Clock = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise TestbedError(f"a write rate of {rate}/s is no rate", hint="use more than 0")
        self.url = url
        self.rate = rate
        self.table = Table(
            table,
            MetaData(),
            Column("seq", BigInteger, primary_key=True, autoincrement=False),
            Column("server_id", Integer, nullable=False),
        )
        self._clock = clock
        # no rollback at check-in: a transaction the endpoint's move cut has ended already
        # (the failed ROLLBACK would only be logged, with its traceback)
        self.engine: Engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=1,
            pool_reset_on_return=None,
            # a server gone silent fails the attempt (then retried), never hangs the writer
            connect_args={"connect_timeout": 2, "read_timeout": 10, "write_timeout": 10},
        )
        install_translation(self.engine, name="drill writer")
        #: the seqs confirmed, in order, with (monotonic time of the commit, @@server_id)
        self.commits: list[tuple[int, float, int]] = []
        #: failed attempts by error (code or class): what the role change cost
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def confirmed(self) -> int:
        with self._lock:
            return len(self.commits)

    def create(self) -> None:
        """The writer's table, empty (its seqs start at 1: a row left over would read as
        a commit whose answer was lost)."""
        self.table.drop(self.engine, checkfirst=True)
        self.table.create(self.engine)

    def drop(self) -> None:
        self.table.drop(self.engine, checkfirst=True)

    def _commit(self, seq: int) -> int | None:
        """One attempt at ``seq``: the committing server's id, or None when it failed."""
        try:
            with self.engine.begin() as conn:
                server_id = int(conn.execute(text("SELECT @@server_id")).scalar_one())
                conn.execute(insert(self.table).values(seq=seq, server_id=server_id))
            return server_id
        except (OffloadError, SQLAlchemyError) as exc:
            code = error_code(getattr(exc, "orig", None) or exc)
            if code == DUPLICATE_KEY:  # an earlier attempt committed: its answer was lost
                with self.engine.connect() as conn:
                    found = conn.execute(
                        select(self.table.c.server_id).where(self.table.c.seq == seq)
                    ).scalar()
                self.errors["committed, answer lost"] += 1
                return int(found) if found is not None else 0
            self.errors[type(exc).__name__ if code is None else f"{type(exc).__name__} {code}"] += 1
            return None

    def _run(self) -> None:
        period = 1.0 / self.rate
        seq, due = 0, self._clock()
        while not self._stop.is_set():
            seq += 1
            while not self._stop.is_set():
                try:
                    server_id = self._commit(seq)
                except (OffloadError, SQLAlchemyError) as exc:  # the duplicate's look-up
                    self.errors[type(exc).__name__] += 1
                    server_id = None
                if server_id is not None:
                    with self._lock:
                        self.commits.append((seq, self._clock(), server_id))
                    break
                self._stop.wait(_RETRY_PAUSE)
            due = max(due + period, self._clock())  # missed slots are dropped, not bunched
            self._stop.wait(max(0.0, due - self._clock()))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drill-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.engine.dispose()

    def first_on(self, server_id: int, after: float) -> float | None:
        """Monotonic time of the first commit ``server_id`` took after ``after``."""
        with self._lock:
            return next((t for _, t, s in self.commits if s == server_id and t >= after), None)

    def wait_for_commit_on(self, server_id: int, after: float, timeout: float) -> float:
        """Seconds from ``after`` to the first commit on ``server_id``; TestbedError if none."""
        if not wait_for(
            lambda: self.first_on(server_id, after) is not None, Deadline(timeout), interval=0.005
        ):
            raise TestbedError(
                f"no write reached server_id {server_id} within {timeout:.0f}s "
                f"(writer errors: {dict(self.errors)})"
            )
        first = self.first_on(server_id, after)
        assert first is not None
        return first - after


@dataclass(frozen=True)
class DrillResult:
    """Each change's seconds to the first write on the new primary, and what it did."""

    kind: str
    seconds: tuple[float, ...]
    changes: tuple[roles.RoleChange, ...]
    confirmed: int
    errors: dict[str, int] = field(default_factory=dict)
    #: why the drill stopped before ``times`` changes ('' when it did them all)
    stopped: str = ""

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "seconds": list(self.seconds),
            "p50": self.p50,
            "max": max(self.seconds, default=float("nan")),
            "confirmed_writes": self.confirmed,
            "writer_errors": self.errors,
            "stopped": self.stopped,
            "changes": [c.as_dict() for c in self.changes],
        }


def semi_sync(topology: roles.RoleTopology, *, on: bool = True) -> None:
    """Semi-synchronous replication on (or off) for the roles the servers have now: with
    it on, a failover loses no write the writer saw committed.  A replica's own source
    side is switched off (it was a primary before a role change)."""
    state = topology.state()
    flavor = replication.Flavor(state.flavor)
    knobs = ApplierKnobs(semi_sync=on)
    with topology.connect(state.primary) as conn:
        apply_to_primary(conn, flavor, knobs)
    for name in state.replicas():
        with topology.connect(name) as conn:
            apply_to_primary(conn, flavor, ApplierKnobs(semi_sync=False))
            apply_to_replica(conn, flavor, knobs)


def drill(
    topology: roles.RoleTopology,
    url: URL,
    kind: Literal["switchover", "failover"],
    *,
    times: int = 5,
    rate: float = 50.0,
    timeout: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> DrillResult:
    """``times`` role changes of ``kind`` back and forth, a writer committing throughout."""
    writer = CountingWriter(url, rate=rate)
    seconds: list[float] = []
    changes: list[roles.RoleChange] = []
    stopped = ""
    try:
        writer.create()
        writer.start()
        if not wait_for(lambda: writer.confirmed >= 5, Deadline(timeout), interval=0.01):
            raise TestbedError(f"the drill's writer could not write ({dict(writer.errors)})")
        for _ in range(times):
            if kind == "failover":
                semi_sync(topology)
            started = time.monotonic()
            if kind == "switchover":
                change = roles.switchover(topology, timeout=timeout)
            else:
                change = roles.failover(topology, kill=True, timeout=timeout)
            new_id = roles.server_id(topology, change.new)
            took = writer.wait_for_commit_on(new_id, started, timeout)
            seconds.append(took)
            changes.append(change)
            if progress is not None:
                progress(f"{change.describe()}; first write on {change.new} after {took:.3f}s")
            if kind == "failover":
                try:
                    changes.append(roles.rejoin(topology, change.old, timeout=timeout))
                except TestbedError as exc:  # diverged: the next failover has no replica
                    stopped = str(exc)
                    break
    finally:
        writer.stop()
        try:
            writer.drop()
        finally:
            writer.close()
    return DrillResult(
        kind,
        tuple(seconds),
        tuple(changes),
        writer.confirmed,
        dict(writer.errors),
        stopped,
    )
