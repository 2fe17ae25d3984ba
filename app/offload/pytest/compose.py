"""``--testbed=compose``: docker-compose.yml's stack through pytest-docker.

:class:`ComposeFixtures` is registered in ``pytest_configure`` when the run's
testbed is compose — after every installed plugin, so its fixtures override
pytest-docker's defaults (a conftest.py can still override them).
``docker_services`` itself stays pytest-docker's: it runs ``up -d`` once per
session and ``down --volumes`` at the end.
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING

import pytest

from offload.pytest.options import RunOptions
from offload.testbed.topology import TestbedInfo

if TYPE_CHECKING:
    from offload.testbed.compose import ComposeCommand, ComposeTopology

__all__ = ["ComposeFixtures", "compose_testbed"]


class ComposeFixtures:
    """pytest-docker's configuration fixtures, pointed at offload's compose stack."""

    @pytest.fixture(scope="session")
    @classmethod
    def offload_compose(
        cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> ComposeTopology:
        """The compose testbed (own project name, ports Docker picks, a temporary dir)."""
        from offload.testbed.compose import ComposeTopology  # noqa: PLC0415

        return ComposeTopology(
            tmp_path_factory.mktemp("compose-testbed"),
            port=0,
            project=f"offload-pytest{os.getpid()}",
            flavor=RunOptions.of(request.config).flavor,
        )

    @pytest.fixture(scope="session")
    @classmethod
    def offload_compose_command(cls, offload_compose: ComposeTopology) -> ComposeCommand:
        """Credentials, images (offline: built or reused) and the env file, then the command."""
        return offload_compose.prepare()

    @pytest.fixture(scope="session")
    @classmethod
    def docker_compose_command(cls, offload_compose_command: ComposeCommand) -> str:
        return shlex.join(offload_compose_command.program)

    @pytest.fixture(scope="session")
    @classmethod
    def docker_compose_file(cls, offload_compose_command: ComposeCommand) -> str:
        return offload_compose_command.file

    @pytest.fixture(scope="session")
    @classmethod
    def docker_compose_project_name(cls, offload_compose_command: ComposeCommand) -> str:
        return offload_compose_command.project

    @pytest.fixture(scope="session")
    @classmethod
    def docker_setup(cls) -> list[str]:
        # not `up --wait` (compose v2 only): the testbed waits on health itself
        return ["up -d"]

    @pytest.fixture(scope="session")
    @classmethod
    def docker_cleanup(cls) -> list[str]:
        return ["down --volumes --remove-orphans --timeout 10"]


def compose_testbed(request: pytest.FixtureRequest) -> TestbedInfo:
    """The session's compose stack, up, healthy and replicating."""
    if not request.config.pluginmanager.hasplugin("offload-compose-fixtures"):
        pytest.fail("a compose testbed needs the run's --testbed=compose", pytrace=False)
    topology: ComposeTopology = request.getfixturevalue("offload_compose")
    try:
        request.getfixturevalue("docker_services")  # pytest-docker: `up -d` now, `down` at the end
    except BaseException:
        topology.down()  # `up` failed: pytest-docker's own clean-up is not armed yet
        raise
    return topology.await_up()  # healthy and replicating, or taken down and raised
