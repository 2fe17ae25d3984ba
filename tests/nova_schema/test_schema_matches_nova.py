"""offload's tables against the ones ``nova-manage db sync`` creates, as the server reports them.

Both sit on the same server: Nova's in the database nova-manage made (the session's
template), offload's made by ``offload.schema.create_all`` in a fresh one.  From
information_schema, for each of the ten Nova tables offload models:

* every offload column is a Nova column, with the same type, nullability, default,
  extra (auto_increment) and character set/collation — what every read and write relies on;
* every Nova column offload leaves out can be left out of an INSERT (nullable or defaulted);
* every Nova index over offload's columns is offload's, under the same name, with the
  same columns, prefix lengths and uniqueness, and offload has no index Nova lacks;
* the foreign keys over offload's columns are Nova's; engine and collation are Nova's.

A difference that does not touch offload (a Nova column or index offload does not use) is
not a failure.  The last test makes the differences this suite exists to catch (the old
``deleted NOT NULL DEFAULT 0``, ``scheduled_at``, an extra index) and shows they are caught.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import Connection, Engine, text

from offload import schema
from offload.dberrors import unpooled_engine
from offload.testbed import TestbedInfo
from offload.testbed.nova import NOVA_RELEASE, NovaTemplate

#: the Nova tables offload models (the heartbeat is offload's own)
TABLES = tuple(t for t in schema.NOVA_TABLES if t not in schema.OFFLOAD_TABLES)


@dataclass
class Shape:
    """One table as information_schema describes it."""

    options: tuple[str, str]  # engine, collation
    #: column -> (type, nullable, default, extra, charset, collation)
    columns: dict[str, tuple[object, ...]] = field(default_factory=dict)
    #: index -> (unique, ((column, prefix length), ...))
    indexes: dict[str, tuple[bool, tuple[tuple[str, int | None], ...]]] = field(
        default_factory=dict
    )
    #: foreign key -> ((column, referenced table, referenced column), ...)
    foreign_keys: dict[str, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)


def shapes(conn: Connection, database: str) -> dict[str, Shape]:
    where = {"db": database}
    found: dict[str, Shape] = {}
    for name, engine, collation in conn.execute(
        text(
            "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = :db"
        ),
        where,
    ):
        found[str(name)] = Shape((str(engine), str(collation)))
    for row in conn.execute(
        text(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, "
            "CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = :db"
        ),
        where,
    ):
        found[str(row[0])].columns[str(row[1])] = tuple(row[2:])
    parts: dict[tuple[str, str], list[tuple[int, str, int | None, bool]]] = defaultdict(list)
    for table, index, non_unique, seq, column, sub_part in conn.execute(
        text(
            "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME, SUB_PART "
            "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = :db"
        ),
        where,
    ):
        parts[(str(table), str(index))].append((int(seq), str(column), sub_part, not non_unique))
    for (table, index), columns in parts.items():
        columns.sort()
        found[table].indexes[index] = (columns[0][3], tuple((c, p) for _, c, p, _ in columns))
    keys: dict[tuple[str, str], list[tuple[int, str, str, str]]] = defaultdict(list)
    for table, name, seq, column, ref_table, ref_column in conn.execute(
        text(
            "SELECT TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION, COLUMN_NAME, "
            "REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME "
            "FROM information_schema.KEY_COLUMN_USAGE "
            "WHERE TABLE_SCHEMA = :db AND REFERENCED_TABLE_NAME IS NOT NULL"
        ),
        where,
    ):
        keys[(str(table), str(name))].append(
            (int(seq), str(column), str(ref_table), str(ref_column))
        )
    for (table, name), referring in keys.items():
        found[table].foreign_keys[name] = tuple((c, t, r) for _, c, t, r in sorted(referring))
    return found


def differences(nova: dict[str, Shape], ours: dict[str, Shape]) -> list[str]:
    """What offload's tables do differently from Nova's, where a read or write would notice."""
    problems: list[str] = []
    for table in TABLES:
        if table not in nova:
            problems.append(f"{table}: Nova {NOVA_RELEASE} has no such table")
            continue
        n, o = nova[table], ours[table]
        if n.options != o.options:
            problems.append(f"{table}: engine/collation {o.options}, Nova's {n.options}")
        for column, spec in o.columns.items():
            if column not in n.columns:
                problems.append(f"{table}.{column}: Nova has no such column")
            elif n.columns[column] != spec:
                problems.append(f"{table}.{column}: {spec}, Nova's {n.columns[column]}")
        for column, spec in n.columns.items():
            # (type, nullable, default, extra, ...): an INSERT without it must still work
            required = spec[1] == "NO" and spec[2] is None and "auto_increment" not in str(spec[3])
            if column not in o.columns and required:
                problems.append(f"{table}.{column}: Nova's NOT NULL without a default")
        for index, spec in n.indexes.items():
            if all(c in o.columns for c, _ in spec[1]) and o.indexes.get(index) != spec:
                problems.append(
                    f"{table}: Nova's index {index} {spec}, offload's {o.indexes.get(index)}"
                )
        for index, spec in o.indexes.items():
            if index not in n.indexes:
                problems.append(f"{table}: index {index} {spec} is not Nova's")
        for key, spec in n.foreign_keys.items():
            if all(c in o.columns for c, _, _ in spec) and o.foreign_keys.get(key) != spec:
                problems.append(
                    f"{table}: Nova's foreign key {key} {spec}, offload's {o.foreign_keys.get(key)}"
                )
        for key in o.foreign_keys.keys() - n.foreign_keys.keys():
            problems.append(f"{table}: foreign key {key} is not Nova's")
    return problems


@pytest.fixture
def admin(nova_testbed: TestbedInfo) -> Iterator[Engine]:
    engine = unpooled_engine(nova_testbed.admin_url(), name="primary")
    yield engine
    engine.dispose()


@pytest.fixture
def offload_database(nova_testbed: TestbedInfo, admin: Engine) -> Iterator[str]:
    """offload's schema, made by offload, in a database of its own."""
    name = f"offload_s{secrets.token_hex(5)}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    there = unpooled_engine(nova_testbed.admin_url(name), name="primary")
    try:
        with there.begin() as conn:
            schema.create_all(conn)
    finally:
        there.dispose()
    yield name
    with admin.begin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


def test_nova_manage_made_novas_main_database(nova_template: NovaTemplate) -> None:
    assert nova_template.sync.tables == 111
    assert nova_template.database is not None
    assert set(TABLES) <= set(nova_template.ddl)
    assert "heartbeat" not in nova_template.ddl


def test_offloads_tables_are_novas_where_offload_reads_or_writes(
    admin: Engine, nova_template: NovaTemplate, offload_database: str
) -> None:
    assert nova_template.database is not None
    with admin.connect() as conn:
        nova = shapes(conn, nova_template.database)
        ours = shapes(conn, offload_database)
    assert set(ours) == set(schema.NOVA_TABLES)
    assert differences(nova, ours) == []
    # and the comparison looked at something: every column and index offload has
    assert sum(len(ours[t].columns) for t in TABLES) > 150
    assert sum(len(ours[t].indexes) for t in TABLES) > 25


def test_the_comparison_catches_what_matters(
    admin: Engine, nova_template: NovaTemplate, offload_database: str
) -> None:
    assert nova_template.database is not None
    with admin.begin() as conn:
        conn.exec_driver_sql(f"USE `{offload_database}`")
        conn.exec_driver_sql("ALTER TABLE instances MODIFY deleted INT NOT NULL DEFAULT 0")
        conn.exec_driver_sql("ALTER TABLE instances ADD COLUMN scheduled_at DATETIME")
        conn.exec_driver_sql(
            "CREATE INDEX volume_usage_cache_volume_id_idx ON volume_usage_cache (volume_id)"
        )
        conn.exec_driver_sql("DROP INDEX instances_updated_at_project_id_idx ON instances")
        conn.exec_driver_sql("ALTER TABLE task_log CONVERT TO CHARACTER SET utf8mb4")
    with admin.connect() as conn:
        found = differences(shapes(conn, nova_template.database), shapes(conn, offload_database))
    text_ = "\n".join(found)
    assert "instances.deleted:" in text_
    assert "instances.scheduled_at: Nova has no such column" in text_
    assert "index volume_usage_cache_volume_id_idx" in text_
    assert "Nova's index instances_updated_at_project_id_idx" in text_
    assert "task_log: engine/collation" in text_
