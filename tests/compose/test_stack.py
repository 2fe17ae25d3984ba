"""docker-compose.yml's stack as ``--testbed=compose`` brings it up (pytest-docker).

The task and routing suites run unchanged against the same stack; these tests
cover what only the stack has: the compose file, two servers in two containers,
the compute container reading from the replica container (proved from the
servers' own statement history), scaling it, and a stopped replica container.
Run last in the session: the final test stops and restarts the replica.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from offload.testbed.compose import ComposeTopology
from offload.testbed.topology import TestbedInfo
from offload.testing import server_statements
from offload.waiting import Deadline, wait_for

from ..unit.test_compose import published_hosts

#: every task runs within 20 s on the testbed's intervals (TESTBED_COMPUTE_OPTIONS)
TASK_WAIT = 60.0


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=30) as answer:
        data: dict[str, Any] = json.loads(answer.read())
    return data


def healthz(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as answer:
        return str(answer.read().decode())


def compute_containers(compose: ComposeTopology) -> list[dict[str, Any]]:
    """The compute containers that run (the engine's inspect, through the Docker SDK)."""
    return [c for c in compose.containers("compute") if c["State"]["Status"] == "running"]


@pytest.fixture
def compose(offload_compose: ComposeTopology, offload_testbed: TestbedInfo) -> ComposeTopology:
    """The session's compose testbed, up (``offload_compose`` alone is only prepared)."""
    return offload_compose


@pytest.fixture
def admins(offload_testbed: TestbedInfo) -> Iterator[tuple[Engine, Engine]]:
    primary = create_engine(offload_testbed.admin_url(), poolclass=NullPool)
    replica = create_engine(offload_testbed.replica_admin_urls()[0], poolclass=NullPool)
    yield primary, replica
    primary.dispose()
    replica.dispose()


def test_the_compose_file_validates_and_publishes_on_loopback_only(
    compose: ComposeTopology,
) -> None:
    assert compose.run("config", "-q").returncode == 0
    rendered = compose.run("config").stdout
    assert published_hosts(rendered) == ["127.0.0.1"] * 8, rendered
    assert "container_name" not in rendered  # `--scale compute=N` needs generated names


def test_primary_and_replica_are_two_containers(
    admins: tuple[Engine, Engine], offload_testbed: TestbedInfo
) -> None:
    identities = []
    for engine in admins:
        with engine.connect() as conn:
            identities.append(
                conn.execute(text("SELECT @@server_id, @@hostname, @@read_only")).one()
            )
    (primary_id, primary_host, primary_ro), (replica_id, replica_host, replica_ro) = identities
    assert primary_id != replica_id
    assert primary_host != replica_host  # each container has its own host name
    assert (primary_ro, replica_ro) == (0, 1)
    assert offload_testbed.backend == "compose"


def test_the_compute_container_reads_from_the_replica_container(
    offload_testbed: TestbedInfo, admins: tuple[Engine, Engine]
) -> None:
    """Every task that ran in the container sent its SELECTs to the replica only."""
    wanted = "update_available_resource"
    last: dict[str, Any] = {}

    def run_of(document: dict[str, Any]) -> str | None:
        return next(
            (
                t["last_run"]["run"]
                for t in document["tasks"]
                if t["task"] == wanted and t["last_run"]
            ),
            None,
        )

    # a run made from now on: the servers' statement history (20,000 statements) still
    # holds it, whatever earlier tests sent to the replica (the link probe polls it fast)
    earlier = run_of(status(offload_testbed.service_port))

    def ran() -> bool:
        last.update(status(offload_testbed.service_port))
        return run_of(last) not in (None, earlier)

    assert wait_for(ran, Deadline(TASK_WAIT), interval=1.0), last
    assert last["host"] == "compute-1"
    ran_tasks = [t for t in last["tasks"] if t["runs"]]
    for task in ran_tasks:
        assert not any(k.startswith("primary:SELECT") for k in task["statements"]), task
    assert any(k == "replica:SELECT" for t in ran_tasks for k in t["statements"])
    # the servers' own records of one run: SELECTs on the replica, none on the primary
    run = run_of(last)
    assert run is not None
    primary, replica = admins
    on_replica = server_statements(replica, task=wanted, run=run)
    on_primary = server_statements(primary, task=wanted, run=run)
    assert on_replica, f"the replica recorded nothing of run {run}"
    assert all("SELECT" in s.split("*/", 1)[1].lstrip()[:6].upper() for s in on_replica)
    # (the GTID lookup after a commit, route=causal, is not a read of data)
    assert not [
        s
        for s in on_primary
        if "route=causal" not in s and s.split("*/", 1)[1].lstrip().upper().startswith("SELECT")
    ], on_primary


def test_scaled_compute_instances_act_for_their_own_hosts(compose: ComposeTopology) -> None:
    compose.run("up", "-d", "--no-recreate", "--scale", "compute=2", timeout=300)
    try:

        def two_healthy() -> bool:
            containers = compute_containers(compose)
            return len(containers) == 2 and all(
                c["State"].get("Health", {}).get("Status") == "healthy" for c in containers
            )

        assert wait_for(two_healthy, Deadline(120), interval=1.0)
        hosts = set()
        for container in compute_containers(compose):
            binding = container["NetworkSettings"]["Ports"]["8080/tcp"][0]
            assert binding["HostIp"] == "127.0.0.1"
            hosts.add(status(int(binding["HostPort"]))["host"])
        assert hosts == {"compute-1", "compute-2"}
    finally:
        compose.run("up", "-d", "--no-recreate", "--scale", "compute=1", timeout=300)


def test_a_stopped_replica_container_does_not_stop_the_compute_service(
    compose: ComposeTopology, offload_testbed: TestbedInfo
) -> None:
    (before,) = compute_containers(compose)
    compose.stop("replica")
    try:
        last: dict[str, Any] = {}

        def noticed() -> bool:
            last.update(status(offload_testbed.service_port))
            return bool(last["health"] == "degraded")

        assert wait_for(noticed, Deadline(TASK_WAIT), interval=1.0), last
        runs = sum(t["runs"] for t in last["tasks"])
        # tasks keep running (reads go to the primary: lag_policy primary)
        assert wait_for(
            lambda: sum(t["runs"] for t in status(offload_testbed.service_port)["tasks"]) > runs,
            Deadline(TASK_WAIT),
            interval=1.0,
        )
        assert healthz(offload_testbed.service_port).startswith("degraded")
        (after,) = compute_containers(compose)
        assert after["Id"] == before["Id"]
        assert after["State"]["Running"] and after["RestartCount"] == 0
        assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
        logs = compose.logs(tail=200, service="compute")
        assert "no replica fit to read (unreachable)" in logs, logs[-2000:]
    finally:
        compose.start("replica")
        compose.await_up(timeout=180)  # healthy and caught up again
