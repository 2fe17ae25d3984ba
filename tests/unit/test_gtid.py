"""GTID distance for both flavors (pure parsing, no server)."""

from __future__ import annotations

import pytest

from offload.gtid import gtid_distance, mariadb_positions, missing_from, mysql_set
from offload.replication import Flavor

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "8c2b7e4a-0f55-11ef-a1b2-0242ac120002"


def test_mariadb_positions_per_domain() -> None:
    assert mariadb_positions("0-1-42,1-2-7") == {0: 42, 1: 7}
    assert mariadb_positions("") == {}


@pytest.mark.parametrize(
    ("received", "executed", "distance"),
    [
        ("0-1-42", "0-1-42", 0),
        ("0-1-50", "0-1-42", 8),
        ("0-1-50,1-3-9", "0-1-42,1-3-4", 13),
        ("0-1-50", "", 50),
        ("0-1-42", "0-1-50", 0),  # applied ahead of received (relay log purged): not negative
    ],
)
def test_mariadb_distance(received: str, executed: str, distance: int) -> None:
    assert gtid_distance(received, executed, Flavor.MARIADB) == distance


def test_mysql_set_parsing_with_newlines_and_case() -> None:
    parsed = mysql_set(f"{UUID_A.upper()}:1-5:7,\n{UUID_B}:3")
    assert parsed == {UUID_A: [(1, 5), (7, 7)], UUID_B: [(3, 3)]}


@pytest.mark.parametrize(
    ("received", "executed", "distance"),
    [
        (f"{UUID_A}:1-10", f"{UUID_A}:1-10", 0),
        (f"{UUID_A}:1-10", f"{UUID_A}:1-7", 3),
        (f"{UUID_A}:1-10", f"{UUID_A}:1-3:5-10", 1),
        (f"{UUID_A}:1-10,{UUID_B}:1-4", f"{UUID_A}:1-10", 4),
        (f"{UUID_A}:5-10", f"{UUID_A}:1-20", 0),
        ("", f"{UUID_A}:1-20", 0),
    ],
)
def test_mysql_distance(received: str, executed: str, distance: int) -> None:
    assert gtid_distance(received, executed, Flavor.MYSQL) == distance


@pytest.mark.parametrize(
    ("own", "other", "missing"),
    [
        ("0-1-42", "0-1-42", 0),  # the same history
        ("0-1-42", "0-2-50", 0),  # the other went on after it: nothing of its own
        ("0-1-45", "0-2-42", 3),  # written past the other's end
        ("0-1-42", "0-2-42", 1),  # the same seq_no by two servers: a fork
        ("0-1-42,1-1-3", "0-2-50", 3),  # a domain the other never saw
        ("", "0-2-50", 0),
    ],
)
def test_mariadb_missing_from(own: str, other: str, missing: int) -> None:
    assert missing_from(own, other, Flavor.MARIADB) == missing


@pytest.mark.parametrize(
    ("own", "other", "missing"),
    [
        (f"{UUID_A}:1-10", f"{UUID_A}:1-10,{UUID_B}:1-4", 0),
        (f"{UUID_A}:1-12", f"{UUID_A}:1-10,{UUID_B}:1-4", 2),  # the old primary's unsent tail
        (f"{UUID_A}:1-10:15", f"{UUID_A}:1-10", 1),
        ("", f"{UUID_A}:1-10", 0),
    ],
)
def test_mysql_missing_from(own: str, other: str, missing: int) -> None:
    assert missing_from(own, other, Flavor.MYSQL) == missing
