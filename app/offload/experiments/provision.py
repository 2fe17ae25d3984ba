"""Where an experiment runs: a testbed (its own, or a configured one) and a database of its own.

* ``own_testbed(replicas)`` — a native primary + replicas on free ports in a
  temporary directory, bound to this process, stopped and deleted afterwards;
* ``experiment_database(settings)`` — a fresh database ``offload_lag_<hex>``
  on the configured testbed (created, granted to the service's accounts, and
  dropped afterwards through the testbed's privileged account), so the
  experiment's writes and lag never touch the ``nova`` data a running service
  works on.  The replicas' lag, of course, is shared by every database.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import URL, Connection, text

from offload.config import Settings
from offload.dberrors import unpooled_engine
from offload.errors import ConfigError
from offload.testbed.native import NativeTopology
from offload.testbed.topology import TestbedInfo
from offload.urls import with_database

__all__ = ["SERVICE_PRIVILEGES", "experiment_database", "own_testbed", "topology_of"]

#: what the service's account may do on the experiment's database (as primary.sql)
SERVICE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, REFERENCES"


@contextmanager
def own_testbed(
    replicas: int = 1, directory: Path | None = None
) -> Iterator[tuple[TestbedInfo, NativeTopology]]:
    """A native testbed on free ports; stopped (and its temporary directory removed) after."""
    temporary = directory is None
    where = Path(tempfile.mkdtemp(prefix="offload-lag-")) if directory is None else directory
    topology = NativeTopology(where, port=0, replicas=replicas, bind_to_parent=True)
    try:
        info = topology.up()
        try:
            yield info, topology
        finally:
            topology.down()
    finally:
        if temporary:
            shutil.rmtree(where, ignore_errors=True)


def topology_of(settings: Settings) -> NativeTopology | None:
    """The native testbed a config was written by (to kill and restart its servers), if any."""
    if settings.testbed.backend != "native" or not settings.testbed.dir:
        return None
    directory = Path(settings.testbed.dir)
    if not (directory / "state.json").exists():
        return None
    replicas = max(1, len(settings.database.slave_connections))
    return NativeTopology(directory, replicas=replicas)


def _grant(conn: Connection, database: str, url: URL, privileges: str, admin: URL) -> None:
    if url.username and url.username != admin.username:
        conn.execute(text(f"GRANT {privileges} ON `{database}`.* TO '{url.username}'@'%'"))


@contextmanager
def experiment_database(settings: Settings, *, name: str | None = None) -> Iterator[Settings]:
    """A new database for the experiment; ``settings`` pointed at it; dropped afterwards."""
    admin = settings.testbed.admin_connection
    primary = settings.require_connection()
    if admin is None:
        raise ConfigError(
            "an experiment creates a database of its own, which needs the testbed's "
            "privileged account ([testbed] admin_connection)",
            hint="use a testbed's config (`make up` writes .testbed/offload.conf), or "
            "run without --config (a testbed of its own)",
        )
    database = name or f"offload_lag_{secrets.token_hex(4)}"
    engine = unpooled_engine(admin, name="primary-admin")
    try:
        with engine.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
            conn.execute(text(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4"))
            _grant(conn, database, primary, SERVICE_PRIVILEGES, admin)
            for url in settings.database.slave_connections:
                _grant(conn, database, url, "SELECT", admin)
        moved = dataclasses.replace(
            settings,
            database=dataclasses.replace(
                settings.database,
                connection=with_database(primary, database),
                slave_connections=tuple(
                    with_database(u, database) for u in settings.database.slave_connections
                ),
            ),
        )
        try:
            yield moved
        finally:
            with engine.begin() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
    finally:
        engine.dispose()
