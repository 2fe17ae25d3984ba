"""Where an experiment runs: a testbed (its own, or a configured one) and a database of its own.

* a testbed of its own: :class:`offload.testbed.own.OwnTestbed` (free ports, a
  temporary directory, stopped and deleted afterwards);
* :func:`experiment_database` — a scratch database ``offload_lag_<hex>`` on the
  configured testbed (a :class:`~offload.testbed.janitor.DatabaseJanitor`: created,
  granted to the service's accounts, the nova schema and ``lag_burst`` in it,
  replicated; dropped and its grants revoked afterwards), so the experiment's
  writes and lag never touch the ``nova`` data a running service works on.  The
  replicas' lag, of course, is shared by every database;
* :func:`topology_of` — the testbed a config was written by (native: kill-replica and
  links; compose: its replica's link).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection

from offload.config import Settings
from offload.errors import ConfigError
from offload.experiments.workload import create_burst_table
from offload.schema import create_all
from offload.testbed.compose import ComposeTopology
from offload.testbed.janitor import DatabaseJanitor
from offload.testbed.native import NativeTopology

__all__ = ["experiment_database", "experiment_schema", "topology_of"]


def topology_of(settings: Settings) -> NativeTopology | ComposeTopology | None:
    """The testbed a config was written by (its links; native: its servers), if any."""
    if not settings.testbed.dir:
        return None
    directory = Path(settings.testbed.dir)
    if not (directory / "state.json").exists():
        return None
    if settings.testbed.backend == "compose":
        return ComposeTopology(directory)
    if settings.testbed.backend != "native":
        return None
    replicas = max(1, len(settings.database.slave_connections))
    return NativeTopology(directory, replicas=replicas)


def experiment_schema(conn: Connection) -> None:
    """The nova tables and the workload's ``lag_burst``."""
    create_all(conn)
    create_burst_table(conn)


def experiment_database(settings: Settings) -> DatabaseJanitor:
    """The experiment's scratch database (``with``: made, then dropped and revoked)."""
    if settings.testbed.admin_connection is None:
        raise ConfigError(
            "an experiment creates a database of its own, which needs the testbed's "
            "privileged account ([testbed] admin_connection)",
            hint="use a testbed's config (`make up` writes .testbed/offload.conf), or "
            "run without --config (a testbed of its own)",
        )
    return DatabaseJanitor(settings, prefix="offload_lag_", schema=experiment_schema)
