"""offload's pytest plugin (``pytest11`` entry point): options, ini settings, default fixtures.

Loaded for every project that installs offload.  Every fixture is prefixed
``offload_`` and built from :mod:`offload.pytest.factories`:

- ``offload_testbed`` (session): ``TestbedInfo`` of the run's testbed (``--testbed``);
- ``offload_db``: a ``Database`` on a scratch database of its own;
- ``offload_db_factory``: ``make(with_replica=True, settings=None)``, Databases on
  one scratch database;
- ``offload_wait_for_replication``: ``wait(db, timeout=None)``;
- ``offload_tracer``, ``offload_trace``: the ``Tracer`` the test's Databases share,
  a ``QueryTrace`` of their statements;
- ``offload_compute_factory``: ``make(db, host="compute-1", options=None, seed=0)``;
- ``offload_primary_admin``, ``offload_replica_admin``: privileged engines.

Each command-line option has an ini twin (:mod:`offload.pytest.options`).
"""

from __future__ import annotations

import os

import pytest

from offload.errors import OffloadError
from offload.pytest import factories
from offload.pytest.options import BACKENDS, OPTIONS, RunOptions, server_ran
from offload.testbed.nova import SCHEMA_VARIABLE
from offload.testbed.servers import FLAVOR_VARIABLE
from offload.testbed.tls import TLS_VARIABLE

__all__ = [
    "offload_compute_factory",
    "offload_db",
    "offload_db_factory",
    "offload_primary_admin",
    "offload_replica_admin",
    "offload_testbed",
    "offload_trace",
    "offload_tracer",
    "offload_wait_for_replication",
    "pytest_addoption",
    "pytest_configure",
    "pytest_report_header",
    "pytest_terminal_summary",
]

_HELP = {
    "--testbed": "where the primary and replicas come from: native (default; servers of "
    "the run's own on free ports), compose (docker-compose.yml through pytest-docker), "
    "external (--primary-url, --replica-url)",
    "--testbed-dir": "directory of the run's native testbed (default: a temporary one)",
    "--testbed-replicas": "replicas in the native testbed (default 1)",
    "--testbed-flavor": "server of the native and compose testbeds: mariadb, mariadb-10.11, "
    "mariadb-11.8, mysql, mysql-9.7 (default: $OFFLOAD_FLAVOR, else the host's server; "
    "compose: $OFFLOAD_DB_IMAGE or mysql:8.4); one offload does not have is provided from "
    "Debian and cached",
    "--testbed-schema": "what makes a native testbed's nova database: offload (its own "
    "tables, default) or nova (Nova's migrations in a side environment; "
    "$OFFLOAD_SCHEMA)",
    "--testbed-tls": "on (default) or off: the testbeds' servers (native, compose) require TLS and "
    "every client verifies their certificate against the testbed's own CA ($OFFLOAD_TLS)",
    "--primary-url": "external: privileged URL of the primary",
    "--replica-url": "external: privileged URL of a replica (repeatable)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("offload", "offload testbed")
    group.addoption("--testbed", choices=list(BACKENDS), default=None, help=_HELP["--testbed"])
    group.addoption("--testbed-dir", default=None, help=_HELP["--testbed-dir"])
    group.addoption("--testbed-replicas", default=None, help=_HELP["--testbed-replicas"])
    group.addoption("--testbed-flavor", default=None, help=_HELP["--testbed-flavor"])
    group.addoption("--testbed-schema", default=None, help=_HELP["--testbed-schema"])
    group.addoption(
        "--testbed-tls", choices=["on", "off"], default=None, help=_HELP["--testbed-tls"]
    )
    group.addoption("--primary-url", default=None, help=_HELP["--primary-url"])
    group.addoption("--replica-url", action="append", default=None, help=_HELP["--replica-url"])
    for option, ini in OPTIONS.items():
        if option == "--replica-url":
            parser.addini(ini, f"{_HELP[option]}; one per line", type="linelist", default=[])
        else:
            parser.addini(ini, f"{_HELP[option]} (ini twin of {option})", default="")


def pytest_configure(config: pytest.Config) -> None:
    run = RunOptions.of(config)  # a bad value stops the run here, in one line
    if run.flavor is not None:
        # every testbed of the run, the tests' own and their subprocesses', runs this server
        os.environ[FLAVOR_VARIABLE] = str(run.flavor)
    if run.schema is not None:
        os.environ[SCHEMA_VARIABLE] = run.schema  # the same for the nova database's schema
    if run.tls is not None:
        os.environ[TLS_VARIABLE] = "on" if run.tls else "off"  # and for TLS
    if run.backend != "compose":
        return
    if not config.pluginmanager.hasplugin("docker"):
        raise pytest.UsageError(
            "--testbed=compose needs pytest-docker "
            "(pip install pytest-docker; it is in offload[test])"
        )
    from offload.pytest.compose import ComposeFixtures  # noqa: PLC0415 - compose runs only

    config.pluginmanager.register(ComposeFixtures(), "offload-compose-fixtures")


def pytest_report_header(config: pytest.Config) -> str:
    """The server the run's testbed will be: ``offload testbed: native mysql 9.7.4 (path)``."""
    run = RunOptions.of(config)
    flavor = run.flavor
    if run.backend == "native":
        from offload.testbed.mysqld import find_server  # noqa: PLC0415

        try:
            program = find_server(spec=flavor, provide=False)
        except OffloadError:
            return (
                f"offload testbed: native {flavor or 'server'} (not found yet: provided "
                "or reported when the first test needs it)"
            )
        return f"offload testbed: native {program.describe()} ({program.path})"
    if run.backend == "compose":
        from offload.testbed.compose import registry_image  # noqa: PLC0415
        from offload.testbed.images import db_image  # noqa: PLC0415

        image = os.environ.get("OFFLOAD_DB_IMAGE") or (
            f"{db_image(flavor)} (offline)"
            if os.environ.get("OFFLOAD_OFFLINE")
            else f"{registry_image(flavor)}, or {db_image(flavor)} offline"
        )
        return f"offload testbed: compose, flavor {flavor or 'default'}, image {image}"
    return "offload testbed: external (--primary-url / --replica-url)"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    server = server_ran(config)
    if server:
        terminalreporter.write_line(f"offload testbed ran: {server}")


offload_testbed = factories.testbed()
offload_tracer = factories.tracer()
offload_trace = factories.trace()
offload_db_factory = factories.database_factory()
offload_db = factories.database()
offload_wait_for_replication = factories.wait_for_replication()
offload_primary_admin = factories.primary_admin()
offload_replica_admin = factories.replica_admin()
offload_compute_factory = factories.compute_factory()
