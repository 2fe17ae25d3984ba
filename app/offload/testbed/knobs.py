"""The servers' own applier and durability knobs: parallel appliers, semi-sync, group commit.

Set at run time (``SET GLOBAL``, MySQL's semi-sync plugins installed on first use),
on a running testbed, by ``offload testbed up --replica-workers N --semi-sync
--group-commit-delay 2ms``, by ``offload lag run`` (options or the scenario file) for one
experiment, and by ``offload lag matrix`` per cell:

* parallel appliers — MariaDB ``slave_parallel_threads`` (0 for one applier: the SQL
  thread itself) with ``slave_parallel_mode = optimistic``; MySQL
  ``replica_parallel_workers`` (1: single-threaded);
* semi-synchronous replication — MariaDB's built-in ``rpl_semi_sync_master/slave``;
  MySQL's ``rpl_semi_sync_source/replica`` plugins.  A commit on the primary then
  waits for a replica's acknowledgement (one round trip of the link);
* binlog group commit — the primary holds a commit back up to a delay so that more
  commits share one binlog write (and, for MariaDB's conservative parallel applier,
  one group the replica may apply in parallel): MariaDB ``binlog_commit_wait_usec``
  with ``binlog_commit_wait_count`` = GROUP_COMMIT_COUNT; MySQL
  ``binlog_group_commit_sync_delay`` with ``binlog_group_commit_sync_no_delay_count``
  = GROUP_COMMIT_COUNT.  A group leaves at that many commits or after the delay; a
  lone writer waits the whole delay.  0 turns it off.

A knob left ``None`` is left as the server has it.  The servers forget run-time
settings when they restart; ``testbed up`` with the options sets them again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import URL, Connection, text

from offload import replication
from offload.dberrors import unpooled_engine
from offload.errors import ConfigError
from offload.flavor import Flavor

__all__ = [
    "GROUP_COMMIT_COUNT",
    "MAX_GROUP_COMMIT_DELAY",
    "ApplierKnobs",
    "apply_to_primary",
    "apply_to_replica",
    "current_knobs",
    "knobs_in_force",
    "read_knobs",
    "set_knobs",
]

MAX_WORKERS = 64
#: commits that make a group leave before the delay is over (both flavors)
GROUP_COMMIT_COUNT = 16
#: MySQL's binlog_group_commit_sync_delay is at most 1 s (1,000,000 µs)
MAX_GROUP_COMMIT_DELAY = 1.0


@dataclass(frozen=True)
class ApplierKnobs:
    """What to set; None: leave the server's own setting."""

    replica_workers: int | None = None
    semi_sync: bool | None = None
    #: seconds a commit may wait for others to share its binlog write (0: off)
    group_commit_delay: float | None = None

    def __post_init__(self) -> None:
        if self.replica_workers is not None and not 1 <= self.replica_workers <= MAX_WORKERS:
            raise ConfigError(
                f"--replica-workers {self.replica_workers} is out of range",
                hint=f"use 1 (one applier) to {MAX_WORKERS}",
            )
        delay = self.group_commit_delay
        if delay is not None and not 0 <= delay <= MAX_GROUP_COMMIT_DELAY:
            raise ConfigError(
                f"--group-commit-delay {delay:g}s is out of range",
                hint="use 0 (off) to 1s, e.g. 2ms",
            )

    @property
    def empty(self) -> bool:
        return (
            self.replica_workers is None
            and self.semi_sync is None
            and self.group_commit_delay is None
        )

    @property
    def replica_empty(self) -> bool:
        """Nothing to set on a replica (group commit is the primary's alone)."""
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


def _group_commit(conn: Connection, flavor: Flavor, delay: float) -> None:
    micros = round(delay * 1e6)
    if flavor is Flavor.MARIADB:
        count = GROUP_COMMIT_COUNT if micros else 0
        conn.execute(text(f"SET GLOBAL binlog_commit_wait_count = {count}"))
        conn.execute(text(f"SET GLOBAL binlog_commit_wait_usec = {micros}"))
        return
    count = GROUP_COMMIT_COUNT if micros else 0
    conn.execute(text(f"SET GLOBAL binlog_group_commit_sync_no_delay_count = {count}"))
    conn.execute(text(f"SET GLOBAL binlog_group_commit_sync_delay = {micros}"))


def apply_to_primary(conn: Connection, flavor: Flavor, knobs: ApplierKnobs) -> None:
    """The primary's side of semi-sync, and its binlog group commit."""
    if knobs.group_commit_delay is not None:
        _group_commit(conn, flavor, knobs.group_commit_delay)
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
    if knobs.replica_empty:
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
            ["rpl_semi_sync_master_enabled", "binlog_commit_wait_count", "binlog_commit_wait_usec"]
            if primary
            else ["slave_parallel_threads", "slave_parallel_mode", "rpl_semi_sync_slave_enabled"]
        )
    else:
        names = (
            [
                "rpl_semi_sync_source_enabled",
                "binlog_group_commit_sync_no_delay_count",
                "binlog_group_commit_sync_delay",
            ]
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


def current_knobs(primary: dict[str, str], replica: dict[str, str]) -> ApplierKnobs:
    """The knobs as ``read_knobs`` found them on the primary and a replica (to put back).

    A variable the server does not have ("-": MySQL's semi-sync plugin not installed)
    counts as off, and so does MariaDB's group commit wait while its count is 0 (the
    server's default: ``binlog_commit_wait_usec`` is then ignored).
    """
    workers = replica.get("slave_parallel_threads", replica.get("replica_parallel_workers", "-"))
    semi = replica.get("rpl_semi_sync_slave_enabled", replica.get("rpl_semi_sync_replica_enabled"))
    delay = primary.get("binlog_commit_wait_usec", primary.get("binlog_group_commit_sync_delay"))
    if primary.get("binlog_commit_wait_count") == "0":
        delay = "0"
    return ApplierKnobs(
        replica_workers=max(1, int(workers)) if workers.isdigit() else None,
        semi_sync=semi == "ON",
        group_commit_delay=int(delay) / 1e6 if delay is not None and delay.isdigit() else None,
    )


def _each(primary: URL, replicas: Sequence[URL]) -> Iterator[tuple[bool, Connection]]:
    for index, url in enumerate([primary, *replicas]):
        engine = unpooled_engine(url, name="primary" if index == 0 else f"replica{index - 1}")
        try:
            with engine.connect() as conn:
                yield index == 0, conn
        finally:
            engine.dispose()


def set_knobs(
    primary: URL, replicas: Sequence[URL], flavor: Flavor, knobs: ApplierKnobs
) -> ApplierKnobs:
    """Set ``knobs`` through the privileged accounts; the knobs in force before."""
    before_primary: dict[str, str] = {}
    before_replica: dict[str, str] = {}
    for is_primary, conn in _each(primary, replicas):
        found = read_knobs(conn, flavor, primary=is_primary)
        if is_primary:
            before_primary = found
            apply_to_primary(conn, flavor, knobs)
        else:
            before_replica = before_replica or found
            apply_to_replica(conn, flavor, knobs)
    return current_knobs(before_primary, before_replica)


@contextmanager
def knobs_in_force(
    primary: URL, replicas: Sequence[URL], flavor: Flavor, knobs: ApplierKnobs
) -> Iterator[None]:
    """``knobs`` set for the ``with`` block, then the settings found before put back
    (only those ``knobs`` changed)."""
    if knobs.empty:
        yield
        return
    before = set_knobs(primary, replicas, flavor, knobs)
    try:
        yield
    finally:
        restore = ApplierKnobs(
            replica_workers=before.replica_workers if knobs.replica_workers is not None else None,
            semi_sync=before.semi_sync if knobs.semi_sync is not None else None,
            group_commit_delay=before.group_commit_delay
            if knobs.group_commit_delay is not None
            else None,
        )
        set_knobs(primary, replicas, flavor, restore)
