"""Doing a scenario's injections to real servers, at their moments.

``Injector.timeline(scenario, duration)`` lists the actions (start and end of
each injection) in time order; the runner calls each one when the experiment's
clock reaches it, from the main thread (a server restarted from another thread
would lose its bond to this process).  Every injection is filed as an
``Event`` with the times it really started and ended.

* pause — ``STOP SLAVE SQL_THREAD`` / ``STOP REPLICA SQL_THREAD``, then start it;
* delay — ``MASTER_DELAY`` / ``SOURCE_DELAY`` (replication stopped, changed,
  started), lifted the same way;
* burst — ``Workload.burst(rows)`` on its own thread; its event lasts until
  every replica has applied it (the primary's GTID position after the commit);
* kill-replica — the testbed SIGKILLs the replica's server, and restarts it;
* link — the replica's shaped link (``offload link``, put in its path if it is not
  there; a compose replica always has one) gets the step's toxics, cleared at its end;
* cut — the link resets its connections and refuses new ones until the step's end.

``reset()`` puts every replica back to normal (applier running, no delay); the
runner calls it before and after the experiment, so an interrupted run leaves
no replica paused or delayed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from offload import replication
from offload.dberrors import unpooled_engine
from offload.errors import ConfigError, OffloadError
from offload.experiments.recorder import Recorder
from offload.experiments.scenarios import Injection, Kind, Scenario, link_toxics
from offload.experiments.workload import Workload
from offload.testbed.compose import ComposeTopology
from offload.testbed.native import NativeTopology
from offload.waiting import Deadline, wait_for

__all__ = ["Action", "Injector", "TestbedTopology"]

#: a testbed the injector can act on: its links (both), kill and restart (native only)
TestbedTopology = NativeTopology | ComposeTopology

log = logging.getLogger("offload.experiments")
#: how long a burst's event waits for the replicas to apply it
BURST_APPLY_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class Action:
    """One thing to do at ``at`` seconds."""

    at: float
    what: str
    run: Callable[[], None]


class Injector:
    """Applies injections to the replicas (privileged accounts) and the testbed."""

    def __init__(
        self,
        flavor: replication.Flavor,
        replica_admin_urls: Sequence[URL],
        *,
        recorder: Recorder,
        workload: Workload,
        topology: TestbedTopology | None = None,
    ) -> None:
        self.flavor = flavor
        self.recorder = recorder
        self.workload = workload
        self.topology = topology
        self._engines: list[Engine] = []
        for index, url in enumerate(replica_admin_urls):
            engine = unpooled_engine(url, name=f"replica{index}")
            self._engines.append(engine)
        self._open: dict[Injection, float] = {}
        self._bursts: list[threading.Thread] = []
        self._lock = threading.Lock()

    @staticmethod
    def requirements(
        scenario: Scenario, *, admin_urls: int, topology: TestbedTopology | None
    ) -> None:
        """Raise ConfigError when this testbed cannot do what the scenario asks."""
        kinds = {i.kind for i in scenario.injections}
        if kinds & {Kind.PAUSE, Kind.DELAY} and admin_urls == 0:
            raise ConfigError(
                "pausing or delaying replication needs a privileged account on the replica",
                hint="use a testbed's config ([testbed] replica_admin_connections), or "
                "run without --config (a testbed of its own)",
            )
        if kinds & {Kind.LINK, Kind.CUT} and topology is None:
            raise ConfigError(
                "link and cut steps need a testbed whose links this command can reach",
                hint="run without --config (a testbed of its own), or use "
                "a testbed's config ([testbed] dir = ...)",
            )
        if Kind.KILL in kinds and not isinstance(topology, NativeTopology):
            raise ConfigError(
                "kill-replica needs a native testbed this command can restart",
                hint="run without --config (a testbed of its own), or use "
                "a native testbed's config ([testbed] dir = ...)",
            )

    # --- replication control -------------------------------------------------------

    def _engine(self, replica: int) -> Engine:
        if replica >= len(self._engines):
            raise ConfigError(f"there is no privileged account for replica{replica}")
        return self._engines[replica]

    def _pause(self, replica: int) -> None:
        with self._engine(replica).connect() as conn:
            replication.stop_replica(conn, self.flavor, sql_thread_only=True)

    def _resume(self, replica: int) -> None:
        with self._engine(replica).connect() as conn:
            replication.start_replica(conn, self.flavor, sql_thread_only=True)

    def _set_delay(self, replica: int, seconds: int) -> None:
        with self._engine(replica).connect() as conn:
            replication.stop_replica(conn, self.flavor)
            try:
                replication.set_replica_delay(conn, self.flavor, seconds)
            finally:
                replication.start_replica(conn, self.flavor)

    def _kill(self, replica: int) -> None:
        assert isinstance(self.topology, NativeTopology)
        self.topology.kill(f"replica{replica}")

    def _restart(self, replica: int) -> None:
        assert isinstance(self.topology, NativeTopology)
        self.topology.start(f"replica{replica}")
        engine = self._engine(replica) if replica < len(self._engines) else None
        if engine is None:
            return

        def replicating() -> bool:
            try:
                with engine.connect() as conn:
                    status = replication.replica_status(conn, self.flavor)
                    if (
                        status is not None
                        and not status.threads_running
                        and not status.last_io_errno
                        and not status.last_sql_errno
                    ):
                        replication.start_replica(conn, self.flavor)
                    return status is not None and status.threads_running
            except (OffloadError, SQLAlchemyError):
                return False

        if not wait_for(replicating, Deadline(30), interval=0.1):
            log.warning("replica%d did not resume replication after its restart", replica)

    def _link(self, replica: int, path: str, body: dict[str, float] | None = None) -> None:
        assert self.topology is not None
        name = f"replica{replica}"
        self.topology.attach_link(name)
        self.topology.links().control(name, "POST", path, body)

    # --- the timeline -----------------------------------------------------------------

    def _started(self, injection: Injection) -> None:
        with self._lock:
            self._open[injection] = self.recorder.now()

    def _ended(self, injection: Injection, detail: str = "") -> None:
        with self._lock:
            start = self._open.pop(injection, None)
        if start is None:
            return
        target = "primary" if injection.kind is Kind.BURST else f"replica{injection.replica}"
        self.recorder.event(
            injection.kind.value,
            injection.spec,
            start=start,
            end=self.recorder.now(),
            target=target,
            detail=detail,
        )

    def _applied(self, position: str, timeout: float) -> float | None:
        """Wait until every replica applied ``position``; seconds waited (None: not seen)."""
        deadline = Deadline(timeout)
        for engine in self._engines:
            try:
                with engine.connect() as conn:
                    reached, _ = replication.try_wait_for_gtid(
                        conn, position, max(deadline.remaining(), 0.001), self.flavor
                    )
            except (OffloadError, SQLAlchemyError):
                return None
            if not reached:
                return None
        return deadline.elapsed()

    def _burst(self, injection: Injection) -> None:
        def write() -> None:
            try:
                seconds = self.workload.burst(injection.rows)
                position = self.workload.db.replication_position()
                detail = f"{injection.rows} rows committed in {seconds:.2f}s"
                applied = self._applied(position, BURST_APPLY_TIMEOUT)
                detail += (
                    f", applied {applied:.2f}s later"
                    if applied is not None
                    else ", not seen applied"
                )
            except (OffloadError, SQLAlchemyError) as exc:
                detail = f"failed: {str(exc).splitlines()[0]}"
                log.warning("burst failed: %s", detail)
            self._ended(injection, detail)

        self._started(injection)
        thread = threading.Thread(target=write, name="lag-burst", daemon=True)
        self._bursts.append(thread)
        thread.start()

    # the two ends of each injection
    def _pause_on(self, injection: Injection) -> None:
        self._pause(injection.replica)
        self._started(injection)

    def _pause_off(self, injection: Injection) -> None:
        self._resume(injection.replica)
        self._ended(injection)

    def _delay_on(self, injection: Injection) -> None:
        self._set_delay(injection.replica, int(injection.seconds))
        self._started(injection)

    def _delay_off(self, injection: Injection) -> None:
        self._set_delay(injection.replica, 0)
        self._ended(injection, f"MASTER_DELAY {int(injection.seconds)}")

    def _kill_on(self, injection: Injection) -> None:
        self._started(injection)
        self._kill(injection.replica)

    def _kill_off(self, injection: Injection) -> None:
        self._restart(injection.replica)
        self._ended(injection, "SIGKILL, restarted")

    def _link_on(self, injection: Injection) -> None:
        self._link(injection.replica, "/toxics", link_toxics(injection.link))
        self._started(injection)

    def _link_off(self, injection: Injection) -> None:
        self._link(injection.replica, "/clear")
        self._ended(injection, injection.link)

    def _cut_on(self, injection: Injection) -> None:
        assert injection.until is not None
        self._link(injection.replica, "/cut", {"seconds": injection.until - injection.at})
        self._started(injection)

    def _cut_off(self, injection: Injection) -> None:
        self._link(injection.replica, "/clear")
        self._ended(injection, "connections reset, new ones refused")

    def timeline(self, scenario: Scenario) -> list[Action]:
        """Every start and end of the scenario's injections, in time order.

        A delay without an end lasts until ``finish``.
        """
        actions: list[Action] = []
        for injection in scenario.injections:
            name = injection.spec
            if injection.kind is Kind.PAUSE:
                actions += [
                    Action(
                        injection.at, f"{name}: applier stopped", partial(self._pause_on, injection)
                    ),
                    Action(
                        injection.at + injection.seconds,
                        f"{name}: applier started",
                        partial(self._pause_off, injection),
                    ),
                ]
            elif injection.kind is Kind.DELAY:
                actions.append(
                    Action(injection.at, f"{name}: delay set", partial(self._delay_on, injection))
                )
                if injection.until is not None:
                    actions.append(
                        Action(
                            injection.until,
                            f"{name}: delay lifted",
                            partial(self._delay_off, injection),
                        )
                    )
            elif injection.kind is Kind.BURST:
                actions.append(
                    Action(injection.at, f"{name}: writing", partial(self._burst, injection))
                )
            elif injection.kind in (Kind.LINK, Kind.CUT):
                link = injection.kind is Kind.LINK
                actions.append(
                    Action(
                        injection.at,
                        f"{name}: {'toxics set' if link else 'link cut'}",
                        partial(self._link_on if link else self._cut_on, injection),
                    )
                )
                if injection.until is not None:
                    actions.append(
                        Action(
                            injection.until,
                            f"{name}: {'toxics cleared' if link else 'link healed'}",
                            partial(self._link_off if link else self._cut_off, injection),
                        )
                    )
            else:
                restart = injection.until if injection.until is not None else injection.at
                actions += [
                    Action(injection.at, f"{name}: killed", partial(self._kill_on, injection)),
                    Action(restart, f"{name}: restarting", partial(self._kill_off, injection)),
                ]
        return sorted(actions, key=lambda a: a.at)

    def finish(self, scenario: Scenario) -> None:
        """Lift whatever is still in force (delays to the end, an interrupted pause or kill).

        Then wait for bursts to be applied, so that their events have an end.
        """
        with self._lock:
            still = [i for i in self._open if i.kind is not Kind.BURST]
        for injection in still:
            try:
                if injection.kind is Kind.PAUSE:
                    self._resume(injection.replica)
                elif injection.kind is Kind.DELAY:
                    self._set_delay(injection.replica, 0)
                elif injection.kind is Kind.KILL:
                    self._restart(injection.replica)
                elif injection.kind in (Kind.LINK, Kind.CUT):
                    self._link(injection.replica, "/clear")
            finally:
                detail = (
                    f"MASTER_DELAY {int(injection.seconds)}"
                    if injection.kind is Kind.DELAY
                    else "lifted at the end"
                )
                self._ended(injection, detail)
        for thread in self._bursts:
            thread.join(timeout=BURST_APPLY_TIMEOUT + 10)

    def reset(self, replicas: int | None = None) -> None:
        """Every replica's applier running, its delay 0, its link (if any) without toxics
        (errors are logged, not raised)."""
        if self.topology is not None:
            try:
                links = self.topology.links()
                names = links.names()
            except OffloadError as exc:
                log.warning("could not list the links: %s", exc)
                names = []
            for name in names:
                try:
                    if links.answering(name):
                        links.control(name, "POST", "/clear")
                except OffloadError as exc:
                    log.warning("could not clear the link of %s: %s", name, exc)
        for index, engine in enumerate(self._engines[:replicas]):
            try:
                with engine.connect() as conn:
                    status = replication.replica_status(conn, self.flavor)
                    if status is None:
                        continue
                    if status.sql_delay:
                        self._set_delay(index, 0)
                    elif not status.threads_running:
                        replication.start_replica(conn, self.flavor)
            except (OffloadError, SQLAlchemyError) as exc:
                log.warning("could not reset replica%d: %s", index, str(exc).splitlines()[0])

    def close(self) -> None:
        for engine in self._engines:
            engine.dispose()
