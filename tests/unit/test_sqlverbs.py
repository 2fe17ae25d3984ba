"""Unit tests for offload.sqlverbs: the verb the reader-session write guard checks."""

from __future__ import annotations

import pytest

from offload.sqlverbs import READ_ONLY_VERBS, is_read_only, statement_verb

TAG = "/* offload task=_poll_bandwidth_usage route=replica run=7f3a */ "


@pytest.mark.parametrize(
    ("sql", "verb"),
    [
        ("SELECT 1", "SELECT"),
        ("  select * from instances", "SELECT"),
        ("\n\tSelect\tuuid FROM instances", "SELECT"),
        ("/* offload task=x route=replica run=1 */ SELECT 1", "SELECT"),
        (TAG + "SELECT uuid FROM instances WHERE host = %(host)s", "SELECT"),
        ("/* a */ /* b */SELECT 1", "SELECT"),
        ("/* multi\nline */\nSELECT 1", "SELECT"),
        ("-- a comment\nSELECT 1", "SELECT"),
        ("--\tcomment\nSELECT 1", "SELECT"),
        ("# a comment\nSELECT 1", "SELECT"),
        ("-- one\n# two\n/* three */ UPDATE t SET a = 1", "UPDATE"),
        ("(SELECT 1) UNION (SELECT 2)", "SELECT"),
        ("((SELECT a FROM t) UNION ALL (SELECT b FROM u)) ORDER BY 1", "SELECT"),
        ("( /* tag */ SELECT 1)", "SELECT"),
        ("WITH cte AS (SELECT 1 AS a) SELECT a FROM cte", "SELECT"),
        (
            "with recursive n(i) as (select 1 union all select i + 1 from n where i < 5) "
            "select * from n",
            "SELECT",
        ),
        ("WITH a AS (SELECT 1), b AS (SELECT 2) SELECT * FROM a, b", "SELECT"),
        ("WITH cte AS (SELECT id FROM t) UPDATE t JOIN cte USING (id) SET a = 1", "UPDATE"),
        ("WITH cte AS (SELECT id FROM t) DELETE t FROM t JOIN cte USING (id)", "DELETE"),
        (TAG + "WITH cte AS (SELECT 1) UPDATE t SET a = 1", "UPDATE"),
        ("WITH cte AS (SELECT 1) TABLE cte", "TABLE"),
        ("INSERT INTO t VALUES (1)", "INSERT"),
        ("update t set a = 1", "UPDATE"),
        ("SHOW REPLICA STATUS", "SHOW"),
        ("", ""),
        ("   ", ""),
        ("/* only a comment */", ""),
        ("-- only a comment", ""),
        ("/* unterminated comment SELECT 1", ""),
    ],
)
def test_statement_verb(sql: str, verb: str) -> None:
    assert statement_verb(sql) == verb


@pytest.mark.parametrize(
    ("sql", "verb"),
    [
        # parentheses, quotes and keywords inside the CTEs do not count
        ("WITH c AS (SELECT ')' AS x, \"UPDATE\" AS y) SELECT * FROM c", "SELECT"),
        ("WITH c AS (SELECT '(' AS x) DELETE FROM t WHERE a IN (SELECT x FROM c)", "DELETE"),
        ("WITH c AS (SELECT 'it''s (' AS x) INSERT INTO t SELECT x FROM c", "INSERT"),
        ("WITH c AS (SELECT 'a\\' ) ' AS x) UPDATE t SET a = 1", "UPDATE"),
        ("WITH `update` AS (SELECT 1) SELECT * FROM `update`", "SELECT"),
        ("WITH c AS (SELECT (1 + (2)) AS x) SELECT x FROM c", "SELECT"),
        # CTE names that begin with a verb are names, not verbs
        ("WITH table1 AS (SELECT 1) UPDATE t SET a = 1", "UPDATE"),
        ("WITH select1 AS (SELECT 1) DELETE FROM t", "DELETE"),
        ("WITH _select AS (SELECT 1) DELETE FROM t", "DELETE"),
        ("WITH values$x AS (SELECT 1) DELETE FROM t", "DELETE"),
        ("WITH update_log AS (SELECT 1) SELECT * FROM update_log", "SELECT"),
        # comments between the CTEs and the verb do not count
        ("WITH c AS (SELECT 1) /* select */ DELETE FROM t", "DELETE"),
        ("WITH c AS (SELECT 1) -- select\nDELETE FROM t", "DELETE"),
        ("WITH c AS (SELECT 1) # select\nDELETE FROM t", "DELETE"),
        ("WITH c AS (SELECT 1) /* update */ SELECT * FROM c", "SELECT"),
        ("WITH c AS (SELECT 1 /* ) */) DELETE FROM t", "DELETE"),
        ("WITH c AS (SELECT 1 -- it's )\n) UPDATE t SET a = 1", "UPDATE"),
    ],
)
def test_statement_verb_after_ctes(sql: str, verb: str) -> None:
    assert statement_verb(sql) == verb


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        TAG + "SELECT * FROM instances",
        "select now()",
        "(SELECT 1) UNION (SELECT 2)",
        "WITH cte AS (SELECT 1) SELECT * FROM cte",
        "SELECT * FROM instances WHERE uuid = 'INSERT INTO x' FOR UPDATE",
        "SELECT 1 INTO @x",
        "SHOW VARIABLES LIKE 'read_only'",
        "SHOW REPLICA STATUS",
        "EXPLAIN SELECT * FROM instances",
        "DESCRIBE instances",
        "SET SESSION sql_mode = 'TRADITIONAL'",
        "SET NAMES utf8mb4",
        "BEGIN",
        "START TRANSACTION READ ONLY",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT sa_savepoint_1",
        "RELEASE SAVEPOINT sa_savepoint_1",
        "ROLLBACK TO SAVEPOINT sa_savepoint_1",
        "DO SLEEP(0)",
        "TABLE instances",
        "VALUES ROW(1, 2)",
        "/* tag */ -- x\n# y\nSELECT 1",
    ],
)
def test_read_only(sql: str) -> None:
    assert is_read_only(sql) is True


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO instances (uuid) VALUES ('x')",
        TAG + "UPDATE compute_nodes SET vcpus_used = 2 WHERE id = 1",
        "DELETE FROM instances",
        "REPLACE INTO bw_usage_cache VALUES (1)",
        "CREATE TABLE t (a INT)",
        "DROP TABLE instances",
        "ALTER TABLE instances ADD COLUMN x INT",
        "TRUNCATE TABLE instances",
        "GRANT ALL ON *.* TO 'x'@'%'",
        "CALL do_things()",
        "LOAD DATA INFILE '/tmp/x' INTO TABLE t",
        "RENAME TABLE a TO b",
        "LOCK TABLES instances WRITE",
        "HANDLER t OPEN",
        "INSERT INTO t SELECT * FROM u",
        "(SELECT 1) UNION (SELECT 2) INTO OUTFILE '/tmp/x'",
        "SELECT * FROM instances INTO OUTFILE '/tmp/instances.csv'",
        "select * from t into   dumpfile '/tmp/x'",
        "WITH c AS (SELECT 1) SELECT * FROM c INTO OUTFILE '/tmp/x'",
        "TABLE instances INTO OUTFILE '/tmp/x'",
        "WITH cte AS (SELECT 1) UPDATE t SET a = 1",
        "WITH table1 AS (SELECT 1) UPDATE t SET a = 1",
        "WITH c AS (SELECT 1) -- select\nDELETE FROM t",
        "WITH c AS (SELECT 1)",  # no verb after the CTEs: not provably a read
        "/*!50000 DELETE FROM t */",  # executable comment: nothing provably read-only
        "",
        "/* just a tag */",
    ],
)
def test_not_read_only(sql: str) -> None:
    assert is_read_only(sql) is False


def test_read_only_verbs_are_upper_case_and_exclude_writes() -> None:
    assert all(verb == verb.upper() for verb in READ_ONLY_VERBS)
    assert not READ_ONLY_VERBS & {"INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "CALL"}
