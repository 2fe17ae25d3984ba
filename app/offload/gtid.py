"""GTID arithmetic: how many transactions a replica has received but not applied.

MariaDB positions are lists of ``domain-server-seq`` (one per domain); the
distance is the sum, per domain, of received seq minus applied seq.  MySQL
GTID sets are ``uuid:interval[:interval...]`` lists; the distance is the number
of transaction ids in the received set that the executed set lacks.
"""

from __future__ import annotations

from offload.flavor import Flavor

__all__ = ["gtid_distance", "mariadb_positions", "missing_from", "mysql_set"]


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


def _mariadb_last(position: str) -> dict[int, tuple[int, int]]:
    """``'0-1-42'`` → {domain: (seq, server)}: the last GTID of each domain."""
    result: dict[int, tuple[int, int]] = {}
    for part in filter(None, (p.strip() for p in position.split(","))):
        domain, server, seq = (int(x) for x in part.split("-"))
        result[domain] = max(result.get(domain, (0, 0)), (seq, server))
    return result


def missing_from(own: str, other: str, flavor: Flavor) -> int:
    """Transactions of ``own`` that ``other`` lacks, as far as the positions tell.

    MySQL: exact (GTID sets).  MariaDB positions keep only each domain's last GTID:
    a higher seq_no than ``other``'s counts its excess, the same seq_no written by
    another server counts 1 (two servers wrote that number: the histories forked).  A
    fork under a lower seq_no cannot be seen here: the source's binlog refuses the
    start position then (error 1236 under gtid_strict_mode), which rejoin watches for.
    """
    if flavor is Flavor.MYSQL:
        return gtid_distance(own, other, flavor)
    theirs = _mariadb_last(other)
    missing = 0
    for domain, (seq, server) in _mariadb_last(own).items():
        their_seq, their_server = theirs.get(domain, (0, 0))
        if seq > their_seq:
            missing += seq - their_seq
        elif seq == their_seq and server != their_server:
            missing += 1
    return missing
