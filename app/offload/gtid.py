"""GTID arithmetic: how many transactions a replica has received but not applied.

MariaDB positions are lists of ``domain-server-seq`` (one per domain); the
distance is the sum, per domain, of received seq minus applied seq.  MySQL
GTID sets are ``uuid:interval[:interval...]`` lists; the distance is the number
of transaction ids in the received set that the executed set lacks.
"""

from __future__ import annotations

from offload.flavor import Flavor

__all__ = ["gtid_distance", "mariadb_positions", "mysql_set"]


def mariadb_positions(position: str) -> dict[int, int]:
    """``'0-1-42,1-2-7'`` → {domain: seq}."""
    result: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in position.split(","))):
        domain, _server, seq = part.split("-")
        result[int(domain)] = max(result.get(int(domain), 0), int(seq))
    return result


def mysql_set(gtid_set: str) -> dict[str, list[tuple[int, int]]]:
    """``'uuid:1-5:7,uuid2:3'`` → {uuid: [(1, 5), (7, 7)], uuid2: [(3, 3)]}."""
    result: dict[str, list[tuple[int, int]]] = {}
    for part in filter(None, (p.strip() for p in gtid_set.replace("\n", "").split(","))):
        source, *intervals = part.split(":")
        ranges = result.setdefault(source.lower(), [])
        for interval in intervals:
            low, _, high = interval.partition("-")
            ranges.append((int(low), int(high or low)))
    return result


def _count_missing(received: list[tuple[int, int]], executed: list[tuple[int, int]]) -> int:
    missing = 0
    for low, high in received:
        covered = sum(max(0, min(high, e_high) - max(low, e_low) + 1) for e_low, e_high in executed)
        missing += (high - low + 1) - covered
    return missing


def gtid_distance(received: str, executed: str, flavor: Flavor) -> int:
    """Transactions received but not yet applied (never negative)."""
    if flavor is Flavor.MARIADB:
        got, done = mariadb_positions(received), mariadb_positions(executed)
        return sum(max(0, seq - done.get(domain, 0)) for domain, seq in got.items())
    got_set, done_set = mysql_set(received), mysql_set(executed)
    return sum(
        _count_missing(ranges, done_set.get(source, [])) for source, ranges in got_set.items()
    )
