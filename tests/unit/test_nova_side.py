"""Unit tests of offload.testbed.nova and offload.attach's report: no server, no Nova.

The side environment's stamp, the nova.conf it writes, the schema option, the order in
which a NovaTemplate makes tables, and what `offload db sync` prints.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL

from offload import schema
from offload.attach import SyncReport
from offload.errors import TestbedError
from offload.testbed import nova


def test_schema_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert nova.parse_schema(" Nova ") == "nova"
    assert nova.parse_schema("offload") == "offload"
    with pytest.raises(TestbedError) as raised:
        nova.parse_schema("keystone")
    assert raised.value.hint == "use one of: offload, nova"
    monkeypatch.delenv(nova.SCHEMA_VARIABLE, raising=False)
    assert nova.default_schema() is None
    monkeypatch.setenv(nova.SCHEMA_VARIABLE, "nova")
    assert nova.default_schema() == "nova"


def test_side_environment_lives_in_the_cache_per_release_and_python(tmp_path: Path) -> None:
    env = nova.nova_env(tmp_path)
    assert env.home.parent == tmp_path / "nova"
    assert env.home.name.startswith(f"nova-{nova.NOVA_RELEASE}-py3.")
    assert env.nova_manage == env.home / "bin" / "nova-manage"
    assert nova.REQUIREMENTS[0] == f"nova=={nova.NOVA_RELEASE}"


def test_side_environment_counts_as_built_only_with_its_recipe(tmp_path: Path) -> None:
    env = nova.nova_env(tmp_path)
    assert not env.is_built()
    env.nova_manage.parent.mkdir(parents=True)
    env.nova_manage.write_text("#!/bin/sh\n")
    assert not env.is_built()  # a build that did not finish writes no stamp
    (env.home / "recipe").write_text("another-recipe\n")
    assert not env.is_built()  # requirements changed: built again
    (env.home / "recipe").write_text(env.recipe() + "\n")
    assert env.is_built()
    assert env.ensure() is env  # nothing to do: no pip, no network


def test_nova_conf_is_private_and_names_both_servers(tmp_path: Path) -> None:
    primary = URL.create(
        "mysql+pymysql", username="nova", password="pw1", host="127.0.0.1", port=1, database="n"
    )
    replica = primary.set(username="nova_ro", password="pw2", port=2)
    path = nova.write_nova_conf(
        tmp_path / "nova.conf", connection=primary, slave_connection=replica
    )

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "[database]\nconnection = mysql+pymysql://nova:pw1@127.0.0.1:1/n\n" in text
    assert "slave_connection = mysql+pymysql://nova_ro:pw2@127.0.0.1:2/n" in text
    assert "[api_database]" not in text


class RecordingConnection:
    """Stands in for a Connection: remembers what was executed."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.params: list[Any] = []

    def exec_driver_sql(self, sql: str) -> None:
        self.sql.append(sql)

    def execute(self, statement: Any, params: Any = None) -> None:
        self.sql.append(str(statement))
        self.params.append(params)


def _template() -> nova.NovaTemplate:
    synced = nova.NovaSync("t", 1.0, 3, "ab450ba04102")
    ddl = {
        "alembic_version": "CREATE TABLE alembic_version (...)",
        "instances": "CREATE TABLE instances (...)",
        "instance_extra": "CREATE TABLE instance_extra (... REFERENCES instances ...)",
    }
    return nova.NovaTemplate(synced, ddl)


def test_template_makes_tables_parents_first_and_keeps_the_revision() -> None:
    conn = RecordingConnection()
    made = _template().create(conn, ["instance_extra", "instances"])  # type: ignore[arg-type]

    assert made == ["instances", "instance_extra"]
    assert conn.sql == [
        "CREATE TABLE instances (...)",
        "CREATE TABLE instance_extra (... REFERENCES instances ...)",
    ]
    assert not conn.params  # no alembic_version asked for: no revision row

    everything = RecordingConnection()
    _template().create(everything)  # type: ignore[arg-type]
    assert everything.sql[-1].startswith("INSERT INTO alembic_version")
    assert everything.params[-1] == {"revision": "ab450ba04102"}


def test_template_refuses_a_table_nova_has_not() -> None:
    with pytest.raises(TestbedError, match="has no table heartbeat"):
        _template().create(RecordingConnection(), ["heartbeat"])  # type: ignore[arg-type]


def test_db_sync_report_on_novas_schema() -> None:
    (extra,) = schema.EXTRA_INDEXES
    report = SyncReport(
        database="nova",
        found="nova",
        tables_before=111,
        nova_revision="ab450ba04102",
        created_tables=("heartbeat",),
        skipped_indexes=(extra,),
        unused_columns={"instances": ("hidden", "compute_id"), "services": ("uuid",)},
    )
    lines = report.lines()
    assert lines[0] == (
        "found Nova's schema in `nova` (111 tables, alembic revision ab450ba04102): the 10 "
        "tables offload's tasks use are there with every column they read and write "
        "(3 more of Nova's columns left alone)"
    )
    assert lines[1] == "added 1 table(s): heartbeat"
    assert lines[2].startswith(
        f"not added (`offload db sync --extra-indexes` adds it): index {extra.name} on "
        "volume_usage_cache(volume_id), which would speed up _poll_volume_usage"
    )
    assert len(lines) == 3


def test_db_sync_report_on_an_empty_database_and_a_second_run() -> None:
    (extra,) = schema.EXTRA_INDEXES
    first = SyncReport("nova", "empty", 0, None, created_tables=schema.NOVA_TABLES)
    assert first.lines()[:2] == [
        "`nova` was empty",
        f"added 11 table(s): {', '.join(schema.NOVA_TABLES)}",
    ]
    again = SyncReport("nova", "offload", 11, None, present_indexes=(extra,))
    assert again.lines() == [
        "found offload's schema in `nova` (11 tables)",
        "added no table: offload's tables were all there",
        f"index {extra.name} was there already: speeds up {extra.speeds_up}",
    ]
