"""Statement tags: safe, leading, and out of PyMySQL's way for bulk inserts."""

from __future__ import annotations

import re

from offload.sqlverbs import statement_verb
from offload.tracing import TaskContext, current_task, tables_in, tag_for, tagged, task_scope

# PyMySQL's test for a bulk INSERT it can send as one multi-row statement
_PYMYSQL_BULK = re.compile(
    r"\s*((?:INSERT|REPLACE)\b.+\bVALUES?\s*)(\(\s*(?:%s|%\(.+\)s)\s*(?:,\s*(?:%s|%\(.+\)s)\s*)*\))"
    r"(\s*(?:ON DUPLICATE.*)?);?\s*\Z",
    re.IGNORECASE | re.DOTALL,
)


def test_tag_names_task_route_and_run() -> None:
    tag = tag_for("replica", TaskContext("_poll_bandwidth_usage", "7f3a"))
    assert tag == "/* offload task=_poll_bandwidth_usage route=replica run=7f3a */ "


def test_tag_without_a_task_still_names_the_route() -> None:
    assert tag_for("write", None) == "/* offload route=write */ "


def test_tag_cannot_close_its_comment_early() -> None:
    with task_scope("evil */ DROP TABLE x; /*") as scope:
        tag = tag_for("replica */", scope)
    assert tag.count("*/") == 1 and tag.endswith("*/ ")


def test_task_scope_sets_and_restores_the_current_task() -> None:
    assert current_task() is None
    with task_scope("a") as outer:
        with task_scope("b", run="r1") as inner:
            assert current_task() == inner and inner.run == "r1"
        assert current_task() == outer
    assert current_task() is None


def test_single_statement_is_tagged_in_front() -> None:
    sql = "INSERT INTO t (a) VALUES (%s)"
    assert tagged(sql, "/* x */ ") == "/* x */ " + sql


def test_bulk_insert_keeps_pymysqls_multi_row_form() -> None:
    sql = "INSERT INTO bw_usage_cache (uuid, mac) VALUES (%(uuid)s, %(mac)s)"
    assert _PYMYSQL_BULK.match("/* x */ " + sql) is None  # why the tag must move
    out = tagged(sql, "/* offload task=t route=write run=1 */ ", executemany=True)
    assert out.startswith("INSERT /* offload task=t route=write run=1 */ INTO")
    assert _PYMYSQL_BULK.match(out) is not None
    assert statement_verb(out) == "INSERT"


def test_bulk_update_is_tagged_in_front() -> None:
    sql = "UPDATE t SET a = %s WHERE id = %s"
    assert tagged(sql, "/* x */ ", executemany=True) == "/* x */ " + sql


def test_tables_in_statements() -> None:
    assert tables_in(
        "SELECT a FROM instances JOIN migrations ON x WHERE y IN (SELECT 1 FROM dual)"
    ) == ("instances", "migrations")
    assert tables_in("INSERT INTO nova.task_log (a) SELECT 1") == ("task_log",)
    assert tables_in("UPDATE `compute_nodes` SET a = 1") == ("compute_nodes",)
