"""Role changes: a testbed of their own whose clients reach the servers through endpoints."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from offload.pytest import OwnTestbed, factories
from offload.testbed import roles
from offload.testbed.native import NativeTopology

#: servers whose roles these tests move (switchover, failover), behind endpoints
roles_testbed = factories.native_testbed(replicas=1, scope="package", endpoints=True)
#: offload_db, offload_primary_admin... reach these servers through their endpoints
offload_testbed = factories.testbed("roles_testbed", scope="package")


@pytest.fixture(scope="package")
def topology(roles_testbed: OwnTestbed) -> NativeTopology:
    return roles_testbed.topology


@pytest.fixture
def heal(topology: NativeTopology) -> Iterator[None]:
    """Whatever role a test left each server in, the next one starts replicating: every
    server up, a departed primary rejoined, a diverged one rebuilt."""
    yield
    topology.up()
    for name in topology.state().diverged:
        roles.rebuild(topology, name)
