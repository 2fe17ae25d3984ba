"""The servers' own applier and durability knobs: parallel appliers, semi-sync.

Set at run time (``SET GLOBAL``, MySQL's semi-sync plugins installed on first use),
on a running testbed, by ``offload testbed up --replica-workers N --semi-sync``:

* parallel appliers — MariaDB ``slave_parallel_threads`` (0 for one applier: the SQL
  thread itself) with ``slave_parallel_mode = optimistic``; MySQL
  ``replica_parallel_workers`` (1: single-threaded);
* semi-synchronous replication — MariaDB's built-in ``rpl_semi_sync_master/slave``;
  MySQL's ``rpl_semi_sync_source/replica`` plugins.  A commit on the primary then
  waits for a replica's acknowledgement (one round trip of the link).

A knob left ``None`` is left as the server has it.  The servers forget run-time
settings when they restart; ``testbed up`` with the options sets them again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from offload import replication
from offload.errors import ConfigError
from offload.flavor import Flavor

__all__ = ["ApplierKnobs", "apply_to_primary", "apply_to_replica", "read_knobs"]

MAX_WORKERS = 64


@dataclass(frozen=True)
class ApplierKnobs:
    """What to set; None: leave the server's own setting."""

    replica_workers: int | None = None
    semi_sync: bool | None = None

    def __post_init__(self) -> None:
        if self.replica_workers is not None and not 1 <= self.replica_workers <= MAX_WORKERS:
            raise ConfigError(
                f"--replica-workers {self.replica_workers} is out of range",
                hint=f"use 1 (one applier) to {MAX_WORKERS}",
            )

    @property
    def empty(self) -> bool:
        return self.replica_workers is None and self.semi_sync is None


def _plugin_active(conn: Connection, name: str) -> bool:
    found = conn.execute(
        text("SELECT PLUGIN_STATUS FROM information_schema.plugins WHERE PLUGIN_NAME = :name"),
        {"name": name},
    ).scalar()
    return found == "ACTIVE"


def _mysql_plugin(conn: Connection, name: str, library: str) -> None:
    if not _plugin_active(conn, name):
        conn.execute(text(f"INSTALL PLUGIN {name} SONAME '{library}'"))


def apply_to_primary(conn: Connection, flavor: Flavor, knobs: ApplierKnobs) -> None:
    """The primary's side of semi-sync (nothing else to set there)."""
    if knobs.semi_sync is None:
        return
    value = "ON" if knobs.semi_sync else "OFF"
    if flavor is Flavor.MARIADB:
        conn.execute(text(f"SET GLOBAL rpl_semi_sync_master_enabled = {value}"))
        return
    if knobs.semi_sync:
        _mysql_plugin(conn, "rpl_semi_sync_source", "semisync_source.so")
    if _plugin_active(conn, "rpl_semi_sync_source"):
        conn.execute(text(f"SET GLOBAL rpl_semi_sync_source_enabled = {value}"))


def apply_to_replica(conn: Connection, flavor: Flavor, knobs: ApplierKnobs) -> None:
    """Stop replication, set the replica's knobs, start it again."""
    if knobs.empty:
        return
    replication.stop_replica(conn, flavor)
    try:
        if flavor is Flavor.MARIADB:
            if knobs.replica_workers is not None:
                threads = 0 if knobs.replica_workers == 1 else knobs.replica_workers
                conn.execute(text(f"SET GLOBAL slave_parallel_threads = {threads}"))
                conn.execute(text("SET GLOBAL slave_parallel_mode = 'optimistic'"))
            if knobs.semi_sync is not None:
                value = "ON" if knobs.semi_sync else "OFF"
                conn.execute(text(f"SET GLOBAL rpl_semi_sync_slave_enabled = {value}"))
            return
        if knobs.replica_workers is not None:
            conn.execute(text(f"SET GLOBAL replica_parallel_workers = {knobs.replica_workers}"))
        if knobs.semi_sync is not None:
            if knobs.semi_sync:
                with replication.admin_writes(conn, flavor):  # INSTALL PLUGIN writes mysql.plugin
                    _mysql_plugin(conn, "rpl_semi_sync_replica", "semisync_replica.so")
            if _plugin_active(conn, "rpl_semi_sync_replica"):
                value = "ON" if knobs.semi_sync else "OFF"
                conn.execute(text(f"SET GLOBAL rpl_semi_sync_replica_enabled = {value}"))
    finally:
        replication.start_replica(conn, flavor)


def read_knobs(conn: Connection, flavor: Flavor, *, primary: bool) -> dict[str, str]:
    """The knobs as the server reports them (its variable names, its values)."""
    if flavor is Flavor.MARIADB:
        names = (
            ["rpl_semi_sync_master_enabled"]
            if primary
            else ["slave_parallel_threads", "slave_parallel_mode", "rpl_semi_sync_slave_enabled"]
        )
    else:
        names = (
            ["rpl_semi_sync_source_enabled"]
            if primary
            else ["replica_parallel_workers", "rpl_semi_sync_replica_enabled"]
        )
    rows = conn.execute(
        text("SELECT VARIABLE_NAME, VARIABLE_VALUE FROM performance_schema.global_variables")
        if flavor is Flavor.MYSQL
        else text("SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES")
    ).all()
    found = {str(name).lower(): str(value) for name, value in rows}
    return {name: found.get(name, "-") for name in names}
