"""HeartbeatHistory.lag: seconds since the first heartbeat a replica has not applied.

Pure arithmetic over (ts written, monotonic moment written); ``now`` is given, so no
clock and no server are involved.
"""

from __future__ import annotations

from offload.lag import HeartbeatHistory, format_ts

#: heartbeats written at wall times 1024.0, 1024.25, ... and monotonic 64.0, 64.25, ...
#: (binary fractions: every difference below is exact)
WALL, MONO, STEP = 1024.0, 64.0, 0.25


def _history(beats: int, *, keep: int = 10_000) -> tuple[HeartbeatHistory, list[str]]:
    history = HeartbeatHistory(keep=keep)
    stamps = []
    for i in range(beats):
        ts = format_ts(WALL + i * STEP)
        history.add(ts, MONO + i * STEP)
        stamps.append(ts)
    return history, stamps


def test_nothing_written_yet_cannot_tell() -> None:
    assert HeartbeatHistory().lag(format_ts(WALL), now=MONO) is None
    assert HeartbeatHistory().lag(None, now=MONO) is None


def test_the_newest_heartbeat_applied_is_no_lag() -> None:
    history, stamps = _history(5)
    assert history.lag(stamps[-1], now=MONO + 10) == 0.0


def test_behind_by_the_age_of_the_first_heartbeat_not_applied() -> None:
    history, stamps = _history(5)
    # applied beat 1: beat 2 (written at MONO + 0.5) is the first it lacks
    assert history.lag(stamps[1], now=MONO + 0.75) == 0.25
    assert history.lag(stamps[1], now=MONO + 3.5) == 3.0  # grows with now


def test_a_ts_between_two_beats_counts_from_the_next_one() -> None:
    history, stamps = _history(3)
    between = format_ts(WALL + 0.125)  # e.g. written by another writer
    assert stamps[0] < between < stamps[1]
    assert history.lag(between, now=MONO + 1.0) == 0.75  # beat 1, written at + 0.25


def test_no_heartbeat_on_the_replica_counts_from_the_first_ever_written() -> None:
    history, _ = _history(4)
    assert history.lag(None, now=MONO + 2.0) == 2.0
    older = format_ts(WALL - 60)  # a heartbeat from before this writer started
    assert history.lag(older, now=MONO + 2.0) == 2.0


def test_behind_everything_remembered_cannot_tell_once_beats_were_dropped() -> None:
    history, stamps = _history(5, keep=3)  # beats 0 and 1 fell out
    assert history.lag(stamps[0], now=MONO + 1.0) is None
    assert history.lag(None, now=MONO + 1.0) is None
    # still exact where memory reaches: applied beat 2, lacks beat 3 (written at + 0.75)
    assert history.lag(stamps[2], now=MONO + 1.0) == 0.25


def test_never_negative() -> None:
    history, stamps = _history(3)
    assert history.lag(stamps[0], now=MONO) == 0.0  # now before beat 1 was written
