"""Role changes on the compose stack: switchover and failover (the primary container
SIGKILLed, then rejoined) while the service runs and a writer commits, through the
``endpoint`` and ``replica-endpoint`` services; a diverged old primary kept out.

They move the stack's servers, so they run after the other compose tests (conftest)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from offload import replication
from offload.db import Database
from offload.errors import ServerDiverged, TestbedError
from offload.pytest import ComputeFactory, DbFactory, WaitForReplication
from offload.testbed import roles
from offload.testbed.compose import ComposeTopology
from offload.testbed.topology import TestbedInfo
from offload.tracing import QueryTrace
from offload.waiting import Deadline, wait_for

from ..faults.roles.scenario import role_change_under_load, service_database
from .test_stack import TASK_WAIT, status


@pytest.fixture(scope="module")
def topology(offload_testbed: TestbedInfo, offload_compose: ComposeTopology) -> ComposeTopology:
    return offload_compose


def _remake(topology: ComposeTopology) -> None:
    """A diverged server, and compose has no rebuild: the stack made again."""
    topology.down()
    topology.run("up", "-d", timeout=topology.start_timeout)
    topology.await_up()


@pytest.fixture
def home(topology: ComposeTopology) -> Iterator[None]:
    """Each test starts and ends with ``primary`` the primary and ``replica`` replicating
    (a stack a test left with a diverged server is made again before the next one)."""
    if topology.state().diverged:
        _remake(topology)
    yield
    state = topology.state()
    if state.diverged:
        return
    if not topology.running(state.primary):
        roles.failover(topology)
    for name in topology.state().departed:
        roles.rejoin(topology, name)
    topology.await_replicas()  # a semi-sync change restarts the IO thread: running again
    if topology.state().primary != "primary":
        roles.switchover(topology, to="primary")
    topology.await_replicas()


@pytest.fixture
def service_db(
    offload_db_factory: DbFactory, offload_wait_for_replication: WaitForReplication
) -> Database:
    return service_database(offload_db_factory, offload_wait_for_replication)


def _diverged(old: str) -> bool:
    """The killed primary held a commit it had not shipped (binlogged, never acknowledged
    to the writer, kept by its crash recovery): kept out, as designed; a compose stack
    has no rebuild, so the checks cover the new primary alone (``home`` remakes the
    stack after)."""
    del old
    return False


def _service_totals(port: int) -> tuple[int, int]:
    """The compute container's task runs and failed runs so far (its /status)."""
    tasks = status(port)["tasks"]
    return sum(t["runs"] for t in tasks), sum(t["failures"] for t in tasks)


@pytest.mark.parametrize("kind", ["switchover", "failover"])
def test_a_role_change_under_load_loses_and_doubles_nothing(
    kind: str,
    service_db: Database,
    offload_compute_factory: ComputeFactory,
    topology: ComposeTopology,
    offload_trace: QueryTrace,
    offload_testbed: TestbedInfo,
    home: None,
) -> None:
    runs, failures = _service_totals(offload_testbed.service_port)
    role_change_under_load(
        kind, service_db, offload_compute_factory, topology, offload_trace, on_diverged=_diverged
    )
    # the compute container, through the endpoints, ran its tasks on and failed none
    assert wait_for(
        lambda: _service_totals(offload_testbed.service_port)[0] > runs + 5,
        Deadline(TASK_WAIT),
        interval=1.0,
    )
    assert _service_totals(offload_testbed.service_port)[1] == failures
    state = topology.state()
    assert state.primary == "replica"
    if not state.diverged:  # (a diverged old primary: checked as kept out by the scenario)
        assert state.replicas() == ["primary"]
        assert topology.endpoint_targets() == {
            "primary-endpoint": "replica",
            "replica0-endpoint": "primary",
        }


def test_compose_refuses_what_it_cannot_do(topology: ComposeTopology, home: None) -> None:
    with pytest.raises(TestbedError, match="is running: a failover promotes a replica only"):
        roles.failover(topology)
    with pytest.raises(TestbedError, match="no departed primary to rejoin"):
        roles.rejoin(topology)
    with pytest.raises(TestbedError, match="primary is not a running replica"):
        roles.switchover(topology, to="primary")


def test_a_primary_with_transactions_the_new_one_lacks_is_kept_out(
    topology: ComposeTopology, home: None
) -> None:
    state = topology.state()
    flavor = replication.Flavor(state.flavor)
    old, replica = state.primary, state.replicas()[0]
    with topology.connect(replica) as conn:  # the replica stops receiving...
        replication.stop_replica(conn, flavor)
    with topology.connect(old) as conn:  # ...so this commit exists only on the old primary
        conn.execute(text("CREATE TABLE nova.only_on_the_old_primary (i INT)"))
    topology.kill(old)
    with topology.connect(replica) as conn:
        replication.start_replica(conn, flavor)
    change = roles.failover(topology)
    assert change.new == replica
    with pytest.raises(ServerDiverged, match=f"server {old} diverged"):
        roles.rejoin(topology, old)
    after = topology.state()
    assert after.diverged == (old,) and not after.replicas() and not after.departed
    with topology.connect(old) as conn:  # kept out: no source, read-only
        assert replication.replica_status(conn, flavor) is None
        assert conn.execute(text("SELECT @@read_only")).scalar() == 1
    with pytest.raises(TestbedError, match="diverged from the primary and is kept out"):
        roles.rejoin(topology, old)
    # the replica endpoint stays cut: no replica read reaches the primary
    assert topology.endpoint_targets()["primary-endpoint"] == replica
