"""The nova tables that nova-compute's periodic tasks read and write.

The tables follow OpenStack Nova's main database as Nova's current release
(34.0.0) creates it with ``nova-manage db sync``.  Every column here is a
column of Nova's table, with Nova's type, length, nullability and default
(none on the server: Nova's defaults are client-side), the tables are InnoDB
in Nova's character set (``utf8``, which both servers store as ``utf8mb3``),
and every index, unique key and foreign key of Nova's over these columns is
here under Nova's name — so queries written against Nova's schema run here
unchanged and use the same indexes, and offload's tasks run unchanged on a
database Nova made.  Only the columns the periodic tasks (DESIGN.md §6) and
their notifications need are kept: Nova has 4 to 13 more per table, all
nullable.  ``tests/nova`` compares these tables with the ones
``nova-manage db sync`` creates, on both server flavors.

Nova's conventions, kept here:

* every Nova table carries ``created_at``, ``updated_at``, ``deleted_at`` and
  ``deleted`` (:class:`TimestampMixin`, :class:`SoftDeleteMixin`); times are
  naive UTC ``DATETIME`` without fractions (:func:`utcnow`);
* a live row has ``deleted = 0``; a soft-deleted row stores its own ``id`` in
  ``deleted`` (:func:`soft_delete_values`), so unique keys that end in
  ``deleted`` admit any number of deleted rows but one live row;
* ``deleted`` and ``instances.cleaned`` are nullable with a client-side
  default of 0, as in Nova: every write here sets them, and the tasks' filters
  are Nova's (``deleted = 0`` live, ``deleted = id`` deleted, ``cleaned = 0``),
  so a row whose ``deleted`` is NULL is neither live nor deleted — for Nova
  and for offload alike;
* ``TEXT`` columns that Nova created as ``MEDIUMTEXT`` on MySQL stay so.

``heartbeat`` is not a Nova table: it is pt-heartbeat's documented
``--create-table`` layout, so an existing pt-heartbeat deployment can share
it.  Indexes Nova lacks but offload's tasks profit from are not part of the
tables: :data:`EXTRA_INDEXES` names each with the task it speeds up, and
``offload db sync --extra-indexes`` creates them on request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    literal_column,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.attributes import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "CLEAN_ATTEMPTS_KEY",
    "EXTRA_INDEXES",
    "NOVA_CHARSET",
    "NOVA_TABLES",
    "OFFLOAD_TABLES",
    "SHELVED_AT_KEY",
    "BandwidthUsage",
    "Base",
    "BlockDeviceMapping",
    "ComputeNode",
    "ExtraIndex",
    "Heartbeat",
    "Instance",
    "InstanceInfoCache",
    "InstanceSystemMetadata",
    "Migration",
    "Service",
    "SoftDeleteMixin",
    "TaskLog",
    "TimestampMixin",
    "VolumeUsage",
    "create_all",
    "drop_all",
    "metadata",
    "soft_delete_values",
    "utcnow",
]

#: instance_system_metadata key counting _run_pending_deletes' attempts.
CLEAN_ATTEMPTS_KEY: Final = "clean_attempts"
#: instance_system_metadata key holding when an instance was shelved.
SHELVED_AT_KEY: Final = "shelved_at"

_MYSQL_DIALECTS: Final = ("mysql", "mariadb")
#: Nova's tables: ``mysql_charset='utf8'`` in its migrations, stored by both servers as
#: utf8mb3 (the collation is the server's default for it).  Named utf8mb3 here, so the
#: DDL means the same on a server whose ``utf8`` might one day mean utf8mb4.
NOVA_CHARSET: Final = "utf8mb3"


def _table_options(charset: str) -> dict[str, str]:
    # SQLAlchemy's MariaDB dialect reads only mariadb_* options: each is given under both
    return {
        f"{prefix}_{option}": value
        for prefix in _MYSQL_DIALECTS
        for option, value in (("engine", "InnoDB"), ("charset", charset))
    }


_TABLE_OPTIONS: Final = _table_options(NOVA_CHARSET)


def utcnow() -> datetime:
    """Return the current UTC time, naive and truncated to whole seconds.

    That is what a MySQL ``DATETIME`` column stores, so a value written and
    read back compares equal to the value in hand.
    """
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _medium_text() -> Text:
    """``TEXT`` elsewhere, ``MEDIUMTEXT`` on MySQL/MariaDB (Nova's MediumText)."""
    return Text().with_variant(mysql.MEDIUMTEXT(), *_MYSQL_DIALECTS)


def _ip_address() -> String:
    """Nova's IPAddress type as MySQL stores it: room for a full IPv6 text."""
    return String(39)


class Base(DeclarativeBase):
    """Declarative base of every table in this module."""


metadata = Base.metadata


class TimestampMixin:
    """``created_at`` set on insert, ``updated_at`` on every update.

    Like ``deleted_at``, they lead the column list, as in Nova's tables.
    """

    created_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow, sort_order=-1)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, onupdate=utcnow, sort_order=-1)


class SoftDeleteMixin:
    """``deleted`` is 0 while a row lives and the row's ``id`` once deleted.

    As in Nova (oslo.db's SoftDeleteMixin): nullable, with a client-side
    default of 0 and none on the server.  Every INSERT offload makes sets it;
    a row someone inserts by hand without it has ``deleted`` NULL, which
    Nova's filters (``deleted = 0``, ``deleted = id``) and offload's alike
    treat as neither live nor deleted.
    """

    deleted_at: Mapped[datetime | None] = mapped_column(DateTime, sort_order=-1)
    deleted: Mapped[int | None] = mapped_column(Integer, default=0)


def soft_delete_values(
    id_column: QueryableAttribute[int] | ColumnElement[int],
) -> dict[str, Any]:
    """Return the SET values that soft-delete rows, as oslo.db's soft_delete.

    ``deleted`` takes the row's own id and ``deleted_at`` the current time;
    ``updated_at`` is set to itself, which keeps it unchanged instead of
    letting :class:`TimestampMixin` stamp it::

        update(Instance).where(...).values(**soft_delete_values(Instance.id))
    """
    return {
        "deleted": id_column,
        "deleted_at": utcnow(),
        "updated_at": literal_column("updated_at"),
    }


class Service(TimestampMixin, SoftDeleteMixin, Base):
    """A running nova service (nova-compute, ...) on a host."""

    __tablename__ = "services"
    __table_args__ = (
        UniqueConstraint("host", "topic", "deleted", name="uniq_services0host0topic0deleted"),
        UniqueConstraint("host", "binary", "deleted", name="uniq_services0host0binary0deleted"),
        _TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str | None] = mapped_column(String(255))
    binary: Mapped[str | None] = mapped_column(String(255))
    topic: Mapped[str | None] = mapped_column(String(255))
    report_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    disabled: Mapped[bool | None] = mapped_column(Boolean, default=False)
    disabled_reason: Mapped[str | None] = mapped_column(String(255))


class ComputeNode(TimestampMixin, SoftDeleteMixin, Base):
    """One hypervisor node and its resource usage (Kilo: no FK to services)."""

    __tablename__ = "compute_nodes"
    __table_args__ = (
        UniqueConstraint(
            "host",
            "hypervisor_hostname",
            "deleted",
            name="uniq_compute_nodes0host0hypervisor_hostname0deleted",
        ),
        _TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    hypervisor_hostname: Mapped[str | None] = mapped_column(String(255))
    vcpus: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    local_gb: Mapped[int] = mapped_column(Integer, nullable=False)
    vcpus_used: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_mb_used: Mapped[int] = mapped_column(Integer, nullable=False)
    local_gb_used: Mapped[int] = mapped_column(Integer, nullable=False)
    hypervisor_type: Mapped[str] = mapped_column(_medium_text(), nullable=False)
    hypervisor_version: Mapped[int] = mapped_column(Integer, nullable=False)
    cpu_info: Mapped[str] = mapped_column(_medium_text(), nullable=False)
    free_ram_mb: Mapped[int | None] = mapped_column(Integer)
    free_disk_gb: Mapped[int | None] = mapped_column(Integer)
    current_workload: Mapped[int | None] = mapped_column(Integer)
    running_vms: Mapped[int | None] = mapped_column(Integer)
    disk_available_least: Mapped[int | None] = mapped_column(Integer)
    host_ip: Mapped[str | None] = mapped_column(_ip_address())
    supported_instances: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[str | None] = mapped_column(Text)
    pci_stats: Mapped[str | None] = mapped_column(Text)
    extra_resources: Mapped[str | None] = mapped_column(Text)
    stats: Mapped[str | None] = mapped_column(Text, default="{}")
    numa_topology: Mapped[str | None] = mapped_column(Text)


class Instance(TimestampMixin, SoftDeleteMixin, Base):
    """A guest VM.

    ``uuid`` is unique on its own, not with ``deleted``: it is the target of
    the instance_uuid foreign keys.  Nova's ``compute_id`` (and its index),
    ``hidden``, ``locked_by`` and the other columns the tasks do not use are
    left out; ``scheduled_at``, which Nova dropped, is not here either.
    """

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("uuid", name="uniq_instances0uuid"),
        Index("instances_project_id_deleted_idx", "project_id", "deleted"),
        Index("instances_deleted_created_at_idx", "deleted", "created_at"),
        Index("instances_terminated_at_launched_at_idx", "terminated_at", "launched_at"),
        Index("instances_project_id_idx", "project_id"),
        Index("instances_reservation_id_idx", "reservation_id"),
        Index("instances_task_state_updated_at_idx", "task_state", "updated_at"),
        Index("instances_uuid_deleted_idx", "uuid", "deleted"),
        Index("instances_updated_at_project_id_idx", "updated_at", "project_id"),
        Index("instances_host_node_deleted_idx", "host", "node", "deleted"),
        Index("instances_host_deleted_cleaned_idx", "host", "deleted", "cleaned"),
        _TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), nullable=False)
    user_id: Mapped[str | None] = mapped_column(String(255))
    project_id: Mapped[str | None] = mapped_column(String(255))
    image_ref: Mapped[str | None] = mapped_column(String(255))
    kernel_id: Mapped[str | None] = mapped_column(String(255))
    ramdisk_id: Mapped[str | None] = mapped_column(String(255))
    reservation_id: Mapped[str | None] = mapped_column(String(255))
    launch_index: Mapped[int | None] = mapped_column(Integer)
    key_name: Mapped[str | None] = mapped_column(String(255))
    hostname: Mapped[str | None] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    display_description: Mapped[str | None] = mapped_column(String(255))
    availability_zone: Mapped[str | None] = mapped_column(String(255))
    # host is the nova-compute service's host; node is the hypervisor node
    # (ComputeNode.hypervisor_hostname); launched_on is where it first booted.
    host: Mapped[str | None] = mapped_column(String(255))
    node: Mapped[str | None] = mapped_column(String(255))
    launched_on: Mapped[str | None] = mapped_column(_medium_text())
    power_state: Mapped[int | None] = mapped_column(Integer)
    vm_state: Mapped[str | None] = mapped_column(String(255))
    task_state: Mapped[str | None] = mapped_column(String(255))
    instance_type_id: Mapped[int | None] = mapped_column(Integer)
    memory_mb: Mapped[int | None] = mapped_column(Integer)
    vcpus: Mapped[int | None] = mapped_column(Integer)
    root_gb: Mapped[int | None] = mapped_column(Integer)
    ephemeral_gb: Mapped[int | None] = mapped_column(Integer)
    os_type: Mapped[str | None] = mapped_column(String(255))
    architecture: Mapped[str | None] = mapped_column(String(255))
    vm_mode: Mapped[str | None] = mapped_column(String(255))
    root_device_name: Mapped[str | None] = mapped_column(String(255))
    access_ip_v4: Mapped[str | None] = mapped_column(_ip_address())
    access_ip_v6: Mapped[str | None] = mapped_column(_ip_address())
    progress: Mapped[int | None] = mapped_column(Integer)
    launched_at: Mapped[datetime | None] = mapped_column(DateTime)
    terminated_at: Mapped[datetime | None] = mapped_column(DateTime)
    locked: Mapped[bool | None] = mapped_column(Boolean)
    shutdown_terminate: Mapped[bool | None] = mapped_column(Boolean, default=False)
    disable_terminate: Mapped[bool | None] = mapped_column(Boolean, default=False)
    cell_name: Mapped[str | None] = mapped_column(String(255))
    # 1 once _run_pending_deletes has removed a deleted instance's files.  Nullable
    # with a client default, as ``deleted``; Nova's filter and the task's guard are
    # ``cleaned = 0``, so a NULL is never cleaned (as in Nova).
    cleaned: Mapped[int | None] = mapped_column(Integer, default=0)


class InstanceSystemMetadata(TimestampMixin, SoftDeleteMixin, Base):
    """Nova-owned key/value pairs of an instance (clean_attempts, shelved_at)."""

    __tablename__ = "instance_system_metadata"
    __table_args__ = (
        Index("instance_uuid", "instance_uuid"),
        _TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_uuid: Mapped[str] = mapped_column(
        String(36),
        ForeignKey("instances.uuid", name="instance_system_metadata_ibfk_1"),
        nullable=False,
    )
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    value: Mapped[str | None] = mapped_column(String(255))


class InstanceInfoCache(TimestampMixin, SoftDeleteMixin, Base):
    """The cached network_info JSON of an instance, one row per instance."""

    __tablename__ = "instance_info_caches"
    __table_args__ = (
        UniqueConstraint("instance_uuid", name="uniq_instance_info_caches0instance_uuid"),
        _TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_uuid: Mapped[str] = mapped_column(
        String(36),
        ForeignKey("instances.uuid", name="instance_info_caches_instance_uuid_fkey"),
        nullable=False,
    )
    network_info: Mapped[str | None] = mapped_column(_medium_text())


class BlockDeviceMapping(TimestampMixin, SoftDeleteMixin, Base):
    """A disk of an instance: image, volume, snapshot or blank (new BDM format)."""

    __tablename__ = "block_device_mapping"
    __table_args__ = (
        Index("snapshot_id", "snapshot_id"),
        Index("volume_id", "volume_id"),
        Index("block_device_mapping_instance_uuid_device_name_idx", "instance_uuid", "device_name"),
        Index("block_device_mapping_instance_uuid_volume_id_idx", "instance_uuid", "volume_id"),
        Index("block_device_mapping_instance_uuid_idx", "instance_uuid"),
        _TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_uuid: Mapped[str | None] = mapped_column(
        String(36),
        ForeignKey("instances.uuid", name="block_device_mapping_instance_uuid_fkey"),
    )
    source_type: Mapped[str | None] = mapped_column(String(255))
    destination_type: Mapped[str | None] = mapped_column(String(255))
    guest_format: Mapped[str | None] = mapped_column(String(255))
    device_type: Mapped[str | None] = mapped_column(String(255))
    disk_bus: Mapped[str | None] = mapped_column(String(255))
    boot_index: Mapped[int | None] = mapped_column(Integer)
    device_name: Mapped[str | None] = mapped_column(String(255))
    delete_on_termination: Mapped[bool | None] = mapped_column(Boolean, default=False)
    snapshot_id: Mapped[str | None] = mapped_column(String(36))
    volume_id: Mapped[str | None] = mapped_column(String(36))
    volume_size: Mapped[int | None] = mapped_column(Integer)
    image_id: Mapped[str | None] = mapped_column(String(36))
    no_device: Mapped[bool | None] = mapped_column(Boolean)
    connection_info: Mapped[str | None] = mapped_column(_medium_text())


_HOST_PREFIXES: Final = dict.fromkeys(
    ("source_compute", "dest_compute", "source_node", "dest_node"), 100
)


class Migration(TimestampMixin, SoftDeleteMixin, Base):
    """A resize or migration of an instance between compute hosts/nodes."""

    __tablename__ = "migrations"
    __table_args__ = (
        Index("migrations_instance_uuid_and_status_idx", "deleted", "instance_uuid", "status"),
        # Nova builds this index on MySQL with 100-character prefixes of the
        # host/node columns: in full they exceed InnoDB's key length limit.
        Index(
            "migrations_by_host_nodes_and_status_idx",
            "deleted",
            "source_compute",
            "dest_compute",
            "source_node",
            "dest_node",
            "status",
            mysql_length=_HOST_PREFIXES,
            mariadb_length=_HOST_PREFIXES,
        ),
        # one side's host and node: what the resource tracker and
        # _poll_unconfirmed_resizes look migrations up by (in full: utf8mb3 fits)
        Index(
            "migrations_by_dest_host_nodes_and_status_idx",
            "deleted",
            "dest_compute",
            "dest_node",
            "status",
        ),
        Index(
            "migrations_by_src_host_nodes_and_status_idx",
            "deleted",
            "source_compute",
            "source_node",
            "status",
        ),
        Index("migrations_updated_at_idx", "updated_at"),
        _TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # *_compute are instance.host values, *_node hypervisor hostnames and
    # dest_host the destination's IP address.
    source_compute: Mapped[str | None] = mapped_column(String(255))
    dest_compute: Mapped[str | None] = mapped_column(String(255))
    source_node: Mapped[str | None] = mapped_column(String(255))
    dest_node: Mapped[str | None] = mapped_column(String(255))
    dest_host: Mapped[str | None] = mapped_column(String(255))
    old_instance_type_id: Mapped[int | None] = mapped_column(Integer)
    new_instance_type_id: Mapped[int | None] = mapped_column(Integer)
    instance_uuid: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("instances.uuid", name="fk_migrations_instance_uuid")
    )
    status: Mapped[str | None] = mapped_column(String(255))


class BandwidthUsage(TimestampMixin, SoftDeleteMixin, Base):
    """Per-interface bandwidth totals of an instance for one audit period.

    As in Nova, (uuid, start_period) is indexed but not unique, so an upsert
    is an UPDATE followed, when it matched no row, by an INSERT.
    """

    __tablename__ = "bw_usage_cache"
    __table_args__ = (
        Index("bw_usage_cache_uuid_start_period_idx", "uuid", "start_period"),
        _TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str | None] = mapped_column(String(36))
    mac: Mapped[str | None] = mapped_column(String(255))
    start_period: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    last_refreshed: Mapped[datetime | None] = mapped_column(DateTime)
    bw_in: Mapped[int | None] = mapped_column(BigInteger)
    bw_out: Mapped[int | None] = mapped_column(BigInteger)
    last_ctr_in: Mapped[int | None] = mapped_column(BigInteger)
    last_ctr_out: Mapped[int | None] = mapped_column(BigInteger)


class VolumeUsage(TimestampMixin, SoftDeleteMixin, Base):
    """Volume I/O counters: ``curr_*`` since the last reset, ``tot_*`` before it."""

    __tablename__ = "volume_usage_cache"
    # Nova has no index here but the primary key: see EXTRA_INDEXES
    __table_args__ = (_TABLE_OPTIONS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    volume_id: Mapped[str] = mapped_column(String(36), nullable=False)
    instance_uuid: Mapped[str | None] = mapped_column(String(36))
    project_id: Mapped[str | None] = mapped_column(String(36))
    user_id: Mapped[str | None] = mapped_column(String(64))
    availability_zone: Mapped[str | None] = mapped_column(String(255))
    tot_last_refreshed: Mapped[datetime | None] = mapped_column(DateTime)
    tot_reads: Mapped[int | None] = mapped_column(BigInteger, default=0)
    tot_read_bytes: Mapped[int | None] = mapped_column(BigInteger, default=0)
    tot_writes: Mapped[int | None] = mapped_column(BigInteger, default=0)
    tot_write_bytes: Mapped[int | None] = mapped_column(BigInteger, default=0)
    curr_last_refreshed: Mapped[datetime | None] = mapped_column(DateTime)
    curr_reads: Mapped[int | None] = mapped_column(BigInteger, default=0)
    curr_read_bytes: Mapped[int | None] = mapped_column(BigInteger, default=0)
    curr_writes: Mapped[int | None] = mapped_column(BigInteger, default=0)
    curr_write_bytes: Mapped[int | None] = mapped_column(BigInteger, default=0)


class TaskLog(TimestampMixin, SoftDeleteMixin, Base):
    """One run of a periodic audit task for one host and period.

    Nova's unique key leaves ``deleted`` out: a (task, host, period) is
    audited once, whatever happens to the row afterwards.
    """

    __tablename__ = "task_log"
    __table_args__ = (
        UniqueConstraint(
            "task_name",
            "host",
            "period_beginning",
            "period_ending",
            name="uniq_task_log0task_name0host0period_beginning0period_ending",
        ),
        Index("ix_task_log_period_beginning", "period_beginning"),
        Index("ix_task_log_host", "host"),
        Index("ix_task_log_period_ending", "period_ending"),
        _TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_name: Mapped[str] = mapped_column(String(255), nullable=False)
    state: Mapped[str] = mapped_column(String(255), nullable=False)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    period_beginning: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    period_ending: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    message: Mapped[str] = mapped_column(String(255), nullable=False)
    task_items: Mapped[int | None] = mapped_column(Integer, default=0)
    errors: Mapped[int | None] = mapped_column(Integer, default=0)


class Heartbeat(Base):
    """pt-heartbeat's table: one row per writing server, ``ts`` as text.

    ``ts`` holds an ISO-8601 time with microseconds (26 characters); the
    binlog/relay-log coordinates are optional.  No Nova timestamps and no
    soft delete: the row is overwritten in place.
    """

    __tablename__ = "heartbeat"
    # not Nova's: the database's own character set would do; utf8mb4 as offload's own
    __table_args__ = (_table_options("utf8mb4"),)

    ts: Mapped[str] = mapped_column(String(26), nullable=False)
    server_id: Mapped[int] = mapped_column(
        Integer().with_variant(mysql.INTEGER(unsigned=True), *_MYSQL_DIALECTS),
        primary_key=True,
        autoincrement=False,
    )
    file: Mapped[str | None] = mapped_column(String(255))
    position: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(mysql.BIGINT(unsigned=True), *_MYSQL_DIALECTS)
    )
    relay_master_log_file: Mapped[str | None] = mapped_column(String(255))
    exec_master_log_pos: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(mysql.BIGINT(unsigned=True), *_MYSQL_DIALECTS)
    )


#: Every table of this module, parents before children.
NOVA_TABLES: Final[tuple[str, ...]] = (
    "services",
    "compute_nodes",
    "instances",
    "instance_system_metadata",
    "instance_info_caches",
    "block_device_mapping",
    "migrations",
    "bw_usage_cache",
    "volume_usage_cache",
    "task_log",
    "heartbeat",
)


#: the tables offload adds to a Nova database (Nova has every other one)
OFFLOAD_TABLES: Final[tuple[str, ...]] = ("heartbeat",)


@dataclass(frozen=True, slots=True)
class ExtraIndex:
    """An index Nova does not have, named for what it speeds up; created only on request."""

    name: str
    table: str
    columns: tuple[str, ...]
    #: the reads it serves, for ``offload db sync`` and the operations guide
    speeds_up: str

    def index(self) -> Index:
        """The index on a copy of its table (never part of :data:`metadata`)."""
        table = metadata.tables[self.table].to_metadata(MetaData())
        return Index(self.name, *(table.c[column] for column in self.columns))


#: offload's own indexes over Nova's tables (``offload db sync --extra-indexes``)
EXTRA_INDEXES: Final[tuple[ExtraIndex, ...]] = (
    ExtraIndex(
        name="offload_volume_usage_cache_volume_id_for_poll_volume_usage",
        table="volume_usage_cache",
        columns=("volume_id",),
        speeds_up="_poll_volume_usage: its guarded insert of a volume's first counters "
        "(NOT EXISTS on volume_id, on the primary) scans volume_usage_cache once per new "
        "volume without it; its read of the host's counters (volume_id IN ...) too, while "
        "the host holds a small share of the table",
    ),
)


def create_all(connection: Connection) -> None:
    """Create every table that does not exist yet."""
    metadata.create_all(connection, checkfirst=True)


def drop_all(connection: Connection) -> None:
    """Drop every table that exists, children first."""
    metadata.drop_all(connection, checkfirst=True)
