"""Unit tests of offload.schema: DDL, Nova's conventions, pt-heartbeat's layout.

No server: DDL is compiled with the MySQL and MariaDB dialects, and the
soft-delete helper is run against an in-memory SQLite database.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import (
    URL,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.mysql import pymysql
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from offload import schema

MYSQL = pymysql.dialect()
MARIADB = URL.create("mariadb+pymysql").get_dialect()()
DIALECTS = pytest.mark.parametrize("dialect", [MYSQL, MARIADB], ids=["mysql", "mariadb"])

SOFT_DELETE_TABLES = [name for name in schema.NOVA_TABLES if name != "heartbeat"]

# Nova's unique keys that deliberately leave `deleted` out: the uuid that
# foreign keys reference, one info cache per instance ever, one audit row per
# (task, host, period).
IDENTITY_KEYS = {
    "uniq_instances0uuid",
    "uniq_instance_info_caches0instance_uuid",
    "uniq_task_log0task_name0host0period_beginning0period_ending",
}

# InnoDB's index key limit with the DYNAMIC row format (both servers' default).
MAX_KEY_BYTES = 3072
BYTES_PER_CHAR = {"utf8mb3": 3, "utf8mb4": 4}


def table(name: str) -> Table:
    return schema.metadata.tables[name]


def ddl(name: str, dialect: Dialect) -> str:
    return str(CreateTable(table(name)).compile(dialect=dialect))


def column_lines(create_table_sql: str) -> list[str]:
    body = create_table_sql[create_table_sql.index("(") + 1 : create_table_sql.rindex(")")]
    return [line.strip().rstrip(",") for line in body.strip().splitlines()]


def test_nova_tables_lists_every_table_parents_first() -> None:
    assert schema.NOVA_TABLES == (
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
    assert set(schema.NOVA_TABLES) == set(schema.metadata.tables)
    position = {name: i for i, name in enumerate(schema.NOVA_TABLES)}
    for name in schema.NOVA_TABLES:
        for fk in table(name).foreign_keys:
            assert position[fk.column.table.name] < position[name], fk


@DIALECTS
@pytest.mark.parametrize("name", schema.NOVA_TABLES)
def test_ddl_compiles_as_innodb_in_novas_charset(name: str, dialect: Dialect) -> None:
    sql = ddl(name, dialect)
    assert f"CREATE TABLE {name} (" in sql
    # Nova's tables are utf8 (utf8mb3); the heartbeat is offload's own
    charset = "utf8mb4" if name in schema.OFFLOAD_TABLES else "utf8mb3"
    assert sql.rstrip().endswith(f"ENGINE=InnoDB CHARSET={charset}"), sql
    for index in table(name).indexes:
        assert str(CreateIndex(index).compile(dialect=dialect)).startswith("CREATE ")


@DIALECTS
@pytest.mark.parametrize(
    ("name", "column"),
    [
        ("instance_info_caches", "network_info"),
        ("compute_nodes", "cpu_info"),
        ("compute_nodes", "hypervisor_type"),
        ("block_device_mapping", "connection_info"),
        ("instances", "launched_on"),
    ],
)
def test_nova_mediumtext_columns_are_mediumtext(name: str, column: str, dialect: Dialect) -> None:
    assert re.search(rf"^\s*{column} MEDIUMTEXT\b", ddl(name, dialect), re.MULTILINE)


def _key_bytes(key: Index | UniqueConstraint, dialect: Dialect, charset: str) -> int:
    prefixes = key.dialect_options[dialect.name]["length"] if isinstance(key, Index) else None
    total = 0
    for column in key.columns:
        if isinstance(column.type, String):
            assert column.type.length is not None, column
            chars = (prefixes or {}).get(column.name, column.type.length)
            total += chars * BYTES_PER_CHAR[charset]
        elif isinstance(column.type, BigInteger):
            total += 8
        elif isinstance(column.type, DateTime):
            total += 5
        elif isinstance(column.type, Integer | Boolean):
            total += 4
        else:
            pytest.fail(f"no key size known for {column!r}")
    return total


@DIALECTS
@pytest.mark.parametrize("name", schema.NOVA_TABLES)
def test_every_key_fits_innodb_limit_in_its_charset(name: str, dialect: Dialect) -> None:
    charset = table(name).dialect_options[dialect.name]["charset"]
    keys = [*table(name).indexes, *_unique_constraints(table(name))]
    for key in keys:
        assert _key_bytes(key, dialect, charset) <= MAX_KEY_BYTES, key.name


@DIALECTS
def test_migrations_host_index_uses_nova_prefixes(dialect: Dialect) -> None:
    (index,) = (
        ix
        for ix in table("migrations").indexes
        if ix.name == "migrations_by_host_nodes_and_status_idx"
    )
    assert str(CreateIndex(index).compile(dialect=dialect)) == (
        "CREATE INDEX migrations_by_host_nodes_and_status_idx ON migrations "
        "(deleted, source_compute(100), dest_compute(100), source_node(100), "
        "dest_node(100), status)"
    )


@pytest.mark.parametrize("name", SOFT_DELETE_TABLES)
def test_nova_table_has_timestamps_and_soft_delete(name: str) -> None:
    columns = table(name).c
    for column in ("created_at", "updated_at", "deleted_at"):
        assert isinstance(columns[column].type, DateTime), column
        assert columns[column].nullable, column
    # as Nova (oslo.db): nullable, no server default, 0 set by the client
    assert "deleted INTEGER" in column_lines(ddl(name, MYSQL))
    assert columns["deleted"].nullable
    assert columns["deleted"].server_default is None
    assert getattr(columns["deleted"].default, "arg", None) == 0


def test_no_column_nova_dropped() -> None:
    assert "scheduled_at" not in table("instances").c


def test_cleaned_is_nullable_with_a_client_default_as_in_nova() -> None:
    cleaned = table("instances").c.cleaned
    assert cleaned.nullable and cleaned.server_default is None
    assert getattr(cleaned.default, "arg", None) == 0


def test_no_index_but_novas_in_the_tables() -> None:
    names = {str(ix.name) for t in schema.metadata.tables.values() for ix in t.indexes}
    assert not {n for n in names if n.startswith("offload_")}
    assert "volume_usage_cache_volume_id_idx" not in names
    assert not table("volume_usage_cache").indexes


@DIALECTS
def test_extra_indexes_are_named_for_what_they_speed_up(dialect: Dialect) -> None:
    assert schema.EXTRA_INDEXES
    for extra in schema.EXTRA_INDEXES:
        assert extra.name.startswith("offload_") and "_for_" in extra.name
        assert len(extra.name) <= 64  # MySQL's identifier limit
        assert extra.speeds_up
        index = extra.index()
        sql = str(CreateIndex(index).compile(dialect=dialect))
        assert sql == f"CREATE INDEX {extra.name} ON {extra.table} ({', '.join(extra.columns)})"
        # built on a copy: the tables themselves never get it
        assert extra.name not in {str(ix.name) for ix in table(extra.table).indexes}
        charset = table(extra.table).dialect_options[dialect.name]["charset"]
        assert _key_bytes(index, dialect, charset) <= MAX_KEY_BYTES


def test_heartbeat_has_no_nova_columns() -> None:
    assert not {"created_at", "updated_at", "deleted_at", "deleted", "id"} & set(
        table("heartbeat").c.keys()
    )


def _unique_constraints(t: Table) -> list[Index | UniqueConstraint]:
    constraints = [c for c in t.constraints if isinstance(c, UniqueConstraint)]
    return [*constraints, *(ix for ix in t.indexes if ix.unique)]


@pytest.mark.parametrize("name", SOFT_DELETE_TABLES)
def test_unique_keys_include_deleted(name: str) -> None:
    for key in _unique_constraints(table(name)):
        if key.name in IDENTITY_KEYS:
            continue
        assert "deleted" in key.columns, key.name


def test_identity_keys_exist_and_are_the_only_ones_without_deleted() -> None:
    found = {
        key.name: [c.name for c in key.columns]
        for name in SOFT_DELETE_TABLES
        for key in _unique_constraints(table(name))
        if "deleted" not in key.columns
    }
    assert found == {
        "uniq_instances0uuid": ["uuid"],
        "uniq_instance_info_caches0instance_uuid": ["instance_uuid"],
        "uniq_task_log0task_name0host0period_beginning0period_ending": [
            "task_name",
            "host",
            "period_beginning",
            "period_ending",
        ],
    }


@pytest.mark.parametrize(
    ("name", "key_name", "columns"),
    [
        ("instances", "instances_host_deleted_cleaned_idx", ["host", "deleted", "cleaned"]),
        ("instances", "instances_host_node_deleted_idx", ["host", "node", "deleted"]),
        ("instances", "instances_task_state_updated_at_idx", ["task_state", "updated_at"]),
        ("instances", "instances_uuid_deleted_idx", ["uuid", "deleted"]),
        ("instances", "instances_terminated_at_launched_at_idx", ["terminated_at", "launched_at"]),
        ("instances", "instances_deleted_created_at_idx", ["deleted", "created_at"]),
        ("instances", "instances_project_id_deleted_idx", ["project_id", "deleted"]),
        ("instances", "instances_project_id_idx", ["project_id"]),
        ("instances", "instances_updated_at_project_id_idx", ["updated_at", "project_id"]),
        ("migrations", "migrations_updated_at_idx", ["updated_at"]),
        (
            "migrations",
            "migrations_by_dest_host_nodes_and_status_idx",
            ["deleted", "dest_compute", "dest_node", "status"],
        ),
        (
            "migrations",
            "migrations_by_src_host_nodes_and_status_idx",
            ["deleted", "source_compute", "source_node", "status"],
        ),
        ("instance_system_metadata", "instance_uuid", ["instance_uuid"]),
        ("bw_usage_cache", "bw_usage_cache_uuid_start_period_idx", ["uuid", "start_period"]),
        (
            "migrations",
            "migrations_by_host_nodes_and_status_idx",
            ["deleted", "source_compute", "dest_compute", "source_node", "dest_node", "status"],
        ),
        (
            "migrations",
            "migrations_instance_uuid_and_status_idx",
            ["deleted", "instance_uuid", "status"],
        ),
        ("block_device_mapping", "block_device_mapping_instance_uuid_idx", ["instance_uuid"]),
        ("services", "uniq_services0host0topic0deleted", ["host", "topic", "deleted"]),
        ("services", "uniq_services0host0binary0deleted", ["host", "binary", "deleted"]),
        (
            "compute_nodes",
            "uniq_compute_nodes0host0hypervisor_hostname0deleted",
            ["host", "hypervisor_hostname", "deleted"],
        ),
    ],
)
def test_nova_key_exists_with_nova_name(name: str, key_name: str, columns: list[str]) -> None:
    keys = {
        str(key.name): [c.name for c in key.columns]
        for key in [*table(name).indexes, *_unique_constraints(table(name))]
    }
    assert keys.get(key_name) == columns


@DIALECTS
def test_heartbeat_is_pt_heartbeat_layout(dialect: Dialect) -> None:
    lines = column_lines(ddl("heartbeat", dialect))
    assert [line.replace("`", "") for line in lines] == [
        "ts VARCHAR(26) NOT NULL",
        "server_id INTEGER UNSIGNED NOT NULL",
        "file VARCHAR(255)",
        "position BIGINT UNSIGNED",
        "relay_master_log_file VARCHAR(255)",
        "exec_master_log_pos BIGINT UNSIGNED",
        "PRIMARY KEY (server_id)",
    ]
    assert "AUTO_INCREMENT" not in ddl("heartbeat", dialect)


def test_soft_delete_values_sets_deleted_to_the_row_id() -> None:
    sql = str(
        update(schema.Instance)
        .values(**schema.soft_delete_values(schema.Instance.id))
        .compile(dialect=MYSQL)
    )
    assert "deleted=instances.id" in sql
    assert "updated_at=updated_at" in sql
    values = schema.soft_delete_values(schema.Instance.id)
    assert isinstance(values["deleted_at"], datetime)


def test_soft_delete_round_trip_keeps_updated_at() -> None:
    engine = create_engine("sqlite://")
    touched = datetime(2014, 4, 17, 12, 0, 0)
    with engine.begin() as connection:
        schema.create_all(connection)
        for uuid in ("a", "b"):
            connection.execute(
                insert(schema.Instance).values(uuid=uuid, host="compute-1", updated_at=touched)
            )
        connection.execute(
            update(schema.Instance)
            .where(schema.Instance.uuid == "b")
            .values(**schema.soft_delete_values(schema.Instance.id))
        )
        rows = connection.execute(
            select(
                schema.Instance.uuid,
                schema.Instance.id,
                schema.Instance.deleted,
                schema.Instance.deleted_at,
                schema.Instance.updated_at,
                schema.Instance.cleaned,
            ).order_by(schema.Instance.uuid)
        ).all()
        schema.drop_all(connection)
    (live, gone) = rows
    assert (live.deleted, live.deleted_at, live.cleaned) == (0, None, 0)
    assert gone.deleted == gone.id != 0
    assert gone.deleted_at is not None
    assert gone.updated_at == touched


def test_utcnow_is_naive_whole_seconds() -> None:
    now = schema.utcnow()
    assert now.tzinfo is None
    assert now.microsecond == 0
    assert abs(datetime.now(UTC).replace(tzinfo=None) - now) < timedelta(seconds=5)
