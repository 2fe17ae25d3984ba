"""Role changes of a testbed: switchover (planned), failover (unplanned), rejoin.

Clients reach the servers through the testbed's endpoints (link proxies: natively
processes, see ``NativeTopology``; on compose the ``endpoint`` and ``replica-endpoint``
services, see ``ComposeTopology``): ``primary-endpoint`` and one ``replicaN-endpoint``
per replica slot.  The logic here is the backends' one: it asks a topology only what
:class:`RoleTopology` says (SQL on a server as admin, kill/start a server, move an
endpoint, record the roles).  A role change promotes a replica, then retargets the
endpoints (the proxy resets every connection it relayed, so no client keeps a session on
a server whose role changed) and records the new roles in ``state.json``:

* **switchover**: the primary read-only (MySQL: super_read_only), the replica waits
  for its GTID position, is promoted (replication stopped, RESET SLAVE ALL / RESET
  REPLICA ALL, writes allowed), the endpoints move, the old primary replicates from
  the new one by GTID auto-position (MariaDB: MASTER_USE_GTID=slave_pos after
  adopting its own binlog position; MySQL: SOURCE_AUTO_POSITION=1).
* **failover**: the primary is down (``--kill`` SIGKILLs it first); the running,
  unbroken replica that received the most transactions applies its relay log and is
  promoted; the endpoints move; the old primary is recorded as *departed*.
* **rejoin**: a departed primary, started again read-only, replicates from the
  primary, unless it holds transactions the primary lacks (GTID sets compared,
  ``gtid.missing_from``; MariaDB's refusal of the start position, error 1236): then
  it is recorded as *diverged* and kept out, never silently rejoined.
* **rebuild** (native): a diverged server, asked for by name, made again from the
  primary (a fresh data dir replicating the primary's whole binary log).

While a replica endpoint has no replica to go to (a failover with one replica), it
refuses connections until a rejoin or rebuild (reads fall back as ``unreachable``).
Before a server is promoted, the replica endpoints on it move, so a replica read
never reaches a server that takes writes; a direct replica URL that does is caught
by the staleness guard (``replica_is_primary``).
"""

from __future__ import annotations

import shutil
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, text

from offload import replication
from offload.errors import ServerDiverged, TestbedError
from offload.gtid import gtid_distance, missing_from
from offload.testbed.native import NativeTopology, endpoint_name, is_replica_endpoint
from offload.waiting import Clock, Deadline, wait_for

__all__ = [
    "RoleChange",
    "RoleState",
    "RoleTopology",
    "failover",
    "rebuild",
    "rejoin",
    "server_id",
    "switchover",
]

#: MariaDB's "the start position is not in the source's binlog" (a forked history)
_GTID_NOT_IN_BINLOG = 1236
#: how long a failover waits for the relay log to apply (seconds)
_PARTIAL_WAIT = 5.0


@dataclass(slots=True)
class _Steps:
    clock: Clock
    started: float = 0.0
    done: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def mark(self, step: str) -> None:
        self.done.append((step, round(self.clock() - self.started, 4)))


@dataclass(frozen=True, slots=True)
class RoleChange:
    """What a switchover, failover or rejoin did, each step with its time since the start."""

    kind: str
    #: the primary before and after (a rejoin: the primary it rejoined)
    old: str
    new: str
    steps: tuple[tuple[str, float], ...]

    def describe(self) -> str:
        if self.kind in ("rejoin", "rebuild"):
            head = f"{self.kind}: {self.old} replicates from {self.new}"
        else:
            head = f"{self.kind}: {self.new} is the primary (was {self.old})"
        return head + "; " + ", ".join(f"{step} {at:.3f}s" for step, at in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "old": self.old, "new": self.new, "steps": dict(self.steps)}


# --- what a topology offers -----------------------------------------------------


class RoleState(Protocol):
    """The roles a testbed's state records (NativeState, ComposeState)."""

    @property
    def flavor(self) -> str: ...
    @property
    def primary(self) -> str: ...
    @property
    def departed(self) -> tuple[str, ...]: ...
    @property
    def diverged(self) -> tuple[str, ...]: ...
    def server_names(self) -> list[str]: ...
    def replicas(self) -> list[str]: ...
    def role(self, name: str) -> str: ...


class RoleTopology(Protocol):
    """What a role change needs of a testbed (NativeTopology, ComposeTopology)."""

    @property
    def dir(self) -> Path: ...

    def state(self) -> RoleState:
        """The recorded roles of the running testbed."""
        ...

    def movable(self) -> RoleState:
        """The state, if the clients' endpoints can move (one line if not)."""
        ...

    def running(self, name: str) -> bool: ...

    def connect(self, name: str) -> AbstractContextManager[Connection]:
        """An autocommit admin connection to server ``name`` itself (no endpoint)."""
        ...

    def kill(self, name: str) -> None:
        """SIGKILL server ``name`` (no clean shutdown)."""
        ...

    def start(self, name: str) -> None:
        """Start a stopped server on its data, in its recorded role (read-only unless
        primary), and return once it answers."""
        ...

    def record_roles(
        self,
        *,
        primary: str | None = None,
        departed: tuple[str, ...] | None = None,
        diverged: tuple[str, ...] | None = None,
    ) -> RoleState:
        """Record the roles given (the others kept); the new state."""
        ...

    def follow(self, name: str) -> None:
        """Make ``name`` (prepared: read-only, no source) replicate from the acting
        primary by GTID auto-position."""
        ...

    def repoint(self, name: str) -> None:
        """A replicating ``name`` replicates from the acting primary (position kept)."""
        ...

    def await_replicas(self) -> None:
        """Every replica replicates and applied the primary's position."""
        ...

    def endpoint_targets(self) -> dict[str, str]:
        """Endpoint name -> the server it leads to (a cut one: where it led)."""
        ...

    def move_endpoint(self, endpoint: str, server: str | None) -> None:
        """Lead ``endpoint`` to ``server`` (and open it), or cut it (None): its
        connections are reset either way."""
        ...

    def server_log(self, name: str) -> str:
        """Where to read server ``name``'s error log (a hint)."""
        ...


def server_id(topology: RoleTopology, name: str) -> int:
    """``@@server_id`` of server ``name``, asked of it."""
    with topology.connect(name) as conn:
        return int(conn.execute(text("SELECT @@server_id")).scalar_one())


# --- checks -------------------------------------------------------------------


def _broken(status: replication.ReplicaStatus | None, *, source_down: bool) -> str | None:
    """Why a replica cannot be promoted (None: it can)."""
    if status is None:
        return "it is not replicating"
    if status.last_sql_errno:
        return status.describe()
    if not source_down and not status.threads_running:
        return status.describe()
    return None


def _status(topology: RoleTopology, name: str, flavor: replication.Flavor) -> Any:
    with topology.connect(name) as conn:
        return replication.replica_status(conn, flavor)


# --- moves --------------------------------------------------------------------


def _replica_endpoints_off(topology: RoleTopology, leaving: str, replacement: str | None) -> None:
    """Before ``leaving`` is promoted: the replica endpoints on it lead to ``replacement``
    (caught up and read-only), or, with none, refuse connections until a rejoin (reads
    fall back to the primary as ``unreachable``).  No replica read ever reaches a server
    that takes writes through its replica endpoint."""
    for endpoint, server in topology.endpoint_targets().items():
        if is_replica_endpoint(endpoint) and server == leaving:
            topology.move_endpoint(endpoint, replacement)


def _repoint_others(topology: RoleTopology, state: RoleState, skip: str) -> None:
    """Every other running replica replicates from the new primary (auto-position kept)."""
    for name in state.replicas():
        if name != skip and topology.running(name):
            topology.repoint(name)


# --- the three changes --------------------------------------------------------


def switchover(
    topology: RoleTopology,
    *,
    to: str | None = None,
    timeout: float = 30.0,
    clock: Clock = time.monotonic,
) -> RoleChange:
    """Planned: the primary read-only, ``to`` (default: the first replica) caught up by
    GTID and promoted, the endpoints moved, the old primary its replica."""
    state = topology.movable()
    flavor = replication.Flavor(state.flavor)
    old = state.primary
    if not topology.running(old):
        raise TestbedError(
            f"the primary {old} is down: nothing to switch over from",
            hint="`offload testbed failover` promotes a replica when the primary is lost",
        )
    candidates = [n for n in state.replicas() if topology.running(n)]
    if to is not None and to not in candidates:
        raise TestbedError(
            f"{to} is not a running replica",
            hint=f"name one of: {', '.join(candidates) or 'none (rejoin one first)'}",
        )
    if not candidates:
        raise TestbedError(
            "no running replica to promote",
            hint="`offload testbed rejoin` brings a departed primary back as one",
        )
    new = to or candidates[0]
    why = _broken(_status(topology, new, flavor), source_down=False)
    if why is not None:
        raise TestbedError(
            f"{new} cannot be promoted: {why}",
            hint="`offload testbed status` shows its replication",
        )
    steps = _Steps(clock)
    with topology.connect(old) as old_conn:
        replication.set_read_only(old_conn, flavor, on=True)
        steps.mark("read-only")
        try:
            position = replication.gtid_position(old_conn, flavor)
            with topology.connect(new) as conn:
                replication.wait_for_gtid(conn, position, timeout, flavor, replica=new)
                steps.mark("caught up")
                # the old primary, read-only and caught up, serves the replica reads now
                _replica_endpoints_off(topology, new, replacement=old)
                replication.promote(conn, flavor)
            steps.mark("promoted")
        except BaseException:
            # the primary endpoint did not move: the old primary takes writes again
            replication.set_read_only(old_conn, flavor, on=False)
            raise
        state = topology.record_roles(primary=new)
        topology.move_endpoint(endpoint_name("primary"), new)
        steps.mark("endpoints moved")
        replication.prepare_to_replicate(old_conn, flavor)
    topology.follow(old)
    _repoint_others(topology, state, old)
    topology.await_replicas()
    steps.mark("replicating")
    return RoleChange("switchover", old, new, tuple(steps.done))


def failover(
    topology: RoleTopology,
    *,
    kill: bool = False,
    timeout: float = 30.0,
    clock: Clock = time.monotonic,
) -> RoleChange:
    """Unplanned: the primary is lost (``kill``: SIGKILL it first); the most advanced
    unbroken replica applies what it received and is promoted; the endpoints move."""
    state = topology.movable()
    flavor = replication.Flavor(state.flavor)
    old = state.primary
    steps = _Steps(clock)
    if topology.running(old):
        if not kill:
            raise TestbedError(
                f"the primary {old} is running: a failover promotes a replica only once "
                "the primary is lost",
                hint="`offload testbed switchover` for a planned change "
                "(`failover --kill` kills the primary first)",
            )
        topology.kill(old)
        steps.mark("primary killed")
    ready: dict[str, str] = {}  # name -> received GTIDs
    refused: list[str] = []
    for name in state.replicas():
        if not topology.running(name):
            refused.append(f"{name}: down")
            continue
        status = _status(topology, name, flavor)
        why = _broken(status, source_down=True)
        if why is not None:
            refused.append(f"{name}: {why}")
        else:
            ready[name] = status.received_gtid or status.executed_gtid
    if not ready:
        raise TestbedError(
            "no replica can be promoted"
            + (f" ({'; '.join(refused)})" if refused else " (there is none)"),
            hint="start or repair a replica, or rejoin the old primary (`offload testbed rejoin`)",
        )
    # the most advanced: the most transactions received (it applies them before promotion)
    new = max(sorted(ready), key=lambda n: gtid_distance(ready[n], "", flavor))
    with topology.connect(new) as conn:
        # what it received, applied (a transaction cut off mid-stream never applies:
        # after a short wait the promotion drops it with the relay log)
        applied, _ = replication.try_wait_for_gtid(
            conn, ready[new], min(timeout, _PARTIAL_WAIT), flavor
        )
        steps.mark("relay log applied" if applied else "relay log applied but a partial trx")
        others = [n for n in ready if n != new]
        _replica_endpoints_off(topology, new, replacement=others[0] if others else None)
        replication.promote(conn, flavor)
    steps.mark("promoted")
    state = topology.record_roles(primary=new, departed=(*state.departed, old))
    topology.move_endpoint(endpoint_name("primary"), new)
    steps.mark("endpoints moved")
    _repoint_others(topology, state, "")
    return RoleChange("failover", old, new, tuple(steps.done))


def _diverge(topology: RoleTopology, name: str, why: str) -> ServerDiverged:
    state = topology.state()
    topology.record_roles(
        departed=tuple(n for n in state.departed if n != name),
        diverged=tuple(sorted({*state.diverged, name})),
    )
    return ServerDiverged(
        f"server {name} diverged: {why}; it is kept out of replication (read-only, no source)",
        hint=f"rebuild server {name} from the acting primary {state.primary} (a new testbed: "
        "`make clean`), or inspect its extra transactions in its binary log first",
    )


def _departed(state: RoleState, name: str | None) -> str:
    """The departed primary to rejoin: ``name``, else the first one (one line if none)."""
    if name is None:
        if not state.departed:
            raise TestbedError(
                "no departed primary to rejoin",
                hint="only a primary that a failover left rejoins (`offload testbed status`)",
            )
        return state.departed[0]
    if name not in state.server_names():
        raise TestbedError(
            f"there is no server {name!r}", hint=f"one of: {', '.join(state.server_names())}"
        )
    if name in state.diverged:
        raise TestbedError(
            f"{name} diverged from the primary and is kept out",
            hint=f"rebuild {name} from the primary (`make clean` makes a new testbed)",
        )
    if name not in state.departed:
        raise TestbedError(
            f"{name} is a {state.role(name)}, not a departed primary: nothing to rejoin",
            hint="`offload testbed status` shows the roles",
        )
    return name


def _follow(
    topology: RoleTopology, name: str, theirs: str, flavor: replication.Flavor, timeout: float
) -> None:
    """Wait until ``name`` replicates and has ``theirs``; ServerDiverged if the primary's
    binlog refused its start position (MariaDB 1236), TestbedError on the deadline."""
    primary = topology.state().primary
    seen: list[replication.ReplicaStatus | None] = [None]

    def settled() -> bool:
        seen[0] = status = _status(topology, name, flavor)
        if status is None:
            return False
        if status.last_io_errno or status.last_sql_errno:
            return True
        return status.threads_running and not gtid_distance(theirs, status.executed_gtid, flavor)

    caught_up = wait_for(settled, Deadline(timeout), interval=0.05)
    status = seen[0]
    if status is not None and status.last_io_errno == _GTID_NOT_IN_BINLOG:
        with topology.connect(name) as conn:  # kept out: read-only, no source
            replication.prepare_to_replicate(conn, flavor)
        raise _diverge(
            topology,
            name,
            f"the primary ({primary})'s binary log lacks its last transaction "
            f"({status.last_io_error.strip()})",
        )
    if not caught_up or status is None or not status.threads_running:
        shown = status.describe() if status is not None else "not replicating"
        raise TestbedError(
            f"{name} did not rejoin within {timeout:.0f}s ({shown})",
            hint=f"see {topology.server_log(name)}",
        )


def rejoin(
    topology: RoleTopology,
    name: str | None = None,
    *,
    timeout: float = 30.0,
    clock: Clock = time.monotonic,
) -> RoleChange:
    """A departed primary (started read-only if it is down) replicates from the primary;
    ``ServerDiverged`` (and recorded so) when it holds transactions the primary lacks."""
    state = topology.state()
    flavor = replication.Flavor(state.flavor)
    name = _departed(state, name)
    steps = _Steps(clock)
    if not topology.running(name):
        topology.start(name)  # in its recorded role: read-only
        steps.mark("started")
    with topology.connect(name) as conn:
        replication.set_read_only(conn, flavor, on=True)
        own = replication.gtid_position(conn, flavor)
    with topology.connect(state.primary) as conn:
        theirs = replication.gtid_position(conn, flavor)
    extra = missing_from(own, theirs, flavor)
    steps.mark("compared")
    if extra:
        raise _diverge(
            topology,
            name,
            f"it holds transactions the primary ({state.primary}) lacks: at least {extra} "
            f"by the GTIDs (its {own!r}, the primary's {theirs!r})",
        )
    with topology.connect(name) as conn:
        replication.prepare_to_replicate(conn, flavor)
    topology.follow(name)
    _follow(topology, name, theirs, flavor, timeout)
    steps.mark("caught up")
    state = topology.state()
    state = topology.record_roles(departed=tuple(n for n in state.departed if n != name))
    _replica_endpoints_back(topology, state, name)
    steps.mark("endpoints moved")
    return RoleChange("rejoin", name, state.primary, tuple(steps.done))


def _replica_endpoints_back(topology: RoleTopology, state: RoleState, name: str) -> None:
    """A replica endpoint cut for want of a replica leads to ``name`` (and opens) again."""
    for endpoint, server in topology.endpoint_targets().items():
        if is_replica_endpoint(endpoint) and server == state.primary:
            topology.move_endpoint(endpoint, name)


def rebuild(
    topology: NativeTopology,
    name: str,
    *,
    timeout: float = 60.0,
    clock: Clock = time.monotonic,
) -> RoleChange:
    """A diverged server of a native testbed made again from the primary: stopped, its
    data dir discarded (a fresh one from the pristine copy), started read-only, and
    replicating the primary's whole binary log by GTID (the testbed never purges it).  Its
    extra transactions are gone: look at them first (docs/operations.md).  (Compose: make
    the stack again.)"""
    state = topology.state()
    flavor = replication.Flavor(state.flavor)
    if name not in state.diverged:
        raise TestbedError(
            f"{name} is a {state.role(name) if name in state.servers else 'unknown server'}, "
            "not a diverged one: nothing to rebuild",
            hint="`offload testbed status` shows the roles; only a diverged server is rebuilt",
        )
    steps = _Steps(clock)
    if topology.running(name, state):
        topology.kill(name)
    shutil.rmtree(topology.dir / name / "data")
    # a new server, with a server_id of its own: a replica skips the events that carry
    # its own id (the loop guard), and the primary's binary log holds the old one's
    fresh_id = max(r.server_id for r in state.servers.values()) + 1
    servers = {**state.servers, name: replace(state.servers[name], server_id=fresh_id)}
    topology.save(replace(state, servers=servers))
    topology.start(name)  # a fresh data dir, a replica's my.cnf: read-only
    steps.mark("started afresh")
    with topology.connect(state.primary) as conn:
        theirs = replication.gtid_position(conn, flavor)
    with topology.connect(name) as conn:
        replication.prepare_to_replicate(conn, flavor)
    topology.follow(name)
    _follow(topology, name, theirs, flavor, timeout)
    steps.mark("caught up")
    state = topology.state()
    new_state = topology.record_roles(diverged=tuple(n for n in state.diverged if n != name))
    _replica_endpoints_back(topology, new_state, name)
    steps.mark("endpoints moved")
    return RoleChange("rebuild", name, state.primary, tuple(steps.done))
