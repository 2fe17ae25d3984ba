"""What a SQL statement does, from its text: the verb the write guard checks.

Reader sessions may run statements that cannot change data.  The verb is the
first keyword after leading comments (the tracing tag is one); for a
``WITH`` statement it is the keyword that follows the common table
expressions, because MySQL 8 allows ``WITH ... UPDATE``/``DELETE``.
"""

from __future__ import annotations

import functools
import re

__all__ = ["READ_ONLY_VERBS", "classify", "is_read_only", "statement_verb"]

#: verbs a reader session may send: reads, session settings, transaction control
READ_ONLY_VERBS = frozenset(
    {
        "SELECT",
        "SHOW",
        "EXPLAIN",
        "DESCRIBE",
        "DESC",
        "SET",
        "DO",
        "VALUES",
        "TABLE",
        "BEGIN",
        "START",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
    }
)

#: a whole word or identifier: "table1", "_select" and "select$x" are names, not verbs
_WORD = re.compile(r"[\w$]+")


def _is_comment(sql: str, pos: int) -> bool:
    """A comment starts at ``pos``: ``/* */``, ``#``, or ``--`` followed by blank/end."""
    if sql.startswith("/*", pos) or sql.startswith("#", pos):
        return True
    return sql.startswith("--", pos) and (pos + 2 == len(sql) or sql[pos + 2].isspace())


def _skip_blank(sql: str, pos: int) -> int:
    """Index of the first character after whitespace and comments from ``pos``."""
    length = len(sql)
    while pos < length:
        if sql[pos].isspace():
            pos += 1
        elif sql.startswith("/*", pos):
            end = sql.find("*/", pos + 2)
            pos = length if end < 0 else end + 2
        elif _is_comment(sql, pos):
            end = sql.find("\n", pos)
            pos = length if end < 0 else end + 1
        else:
            break
    return pos


_CTE_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "TABLE", "VALUES"})


def _after_ctes(sql: str, pos: int) -> str:
    """The verb after ``WITH [RECURSIVE] name AS (...), ...``: first word at depth 0."""
    depth = 0
    quote: str | None = None
    index = pos
    while index < len(sql):
        char = sql[index]
        if quote:
            if char == "\\":
                index += 2
                continue
            if char == quote:
                quote = None
        elif _is_comment(sql, index):  # a comment's words and brackets do not count
            index = _skip_blank(sql, index)
            continue
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif word := _WORD.match(sql, index):
            upper = word.group().upper()
            if depth == 0 and upper in _CTE_VERBS:
                return upper
            index = word.end()
            continue
        index += 1
    return "WITH"


def statement_verb(sql: str) -> str:
    """The statement's verb in upper case (``''`` for an empty statement)."""
    pos = _skip_blank(sql, 0)
    while pos < len(sql) and sql[pos] == "(":  # (SELECT ...) UNION (SELECT ...)
        pos = _skip_blank(sql, pos + 1)
    word = _WORD.match(sql, pos)
    if word is None:
        return ""
    verb = word.group().upper()
    return _after_ctes(sql, word.end()) if verb == "WITH" else verb


def is_read_only(sql: str) -> bool:
    """True when ``sql`` cannot change data (see READ_ONLY_VERBS)."""
    verb = statement_verb(sql)
    if verb not in READ_ONLY_VERBS:
        return False
    # SELECT/TABLE/VALUES ... INTO OUTFILE/DUMPFILE writes a file on the server
    return not (
        verb in {"SELECT", "TABLE", "VALUES"}
        and re.search(r"\bINTO\s+(OUTFILE|DUMPFILE)\b", sql, re.I)
    )


@functools.lru_cache(maxsize=4096)
def classify(sql: str) -> tuple[str, bool]:
    """(verb, read-only) of ``sql``, computed once per distinct text.

    SQLAlchemy reuses the compiled string of a statement, so the hooks see the
    same few texts again and again: the cache makes their classification a lookup.
    """
    return statement_verb(sql), is_read_only(sql)
