"""Unit tests for offload.compute.notifier: the notification envelope and its sinks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import sys
import threading
import uuid
from pathlib import Path

import pytest

from offload.compute.notifier import (
    EVENT_INSTANCE_EXISTS,
    EVENT_VOLUME_USAGE,
    JsonLinesNotifier,
    MemoryNotifier,
    Notification,
    Notifier,
    NullNotifier,
    load_notifications,
    make_notification,
)

HOST = "compute-3"
INSTANT = dt.datetime(2014, 10, 16, 12, 30, 5, 123456, tzinfo=dt.UTC)


def fixed_clock() -> dt.datetime:
    return INSTANT


def exists_payload() -> dict[str, object]:
    return {
        "instance_id": "5f1c2bde-8a63-4d5e-9d0e-2f7ab8a1b0c1",
        "audit_period_beginning": dt.datetime(2014, 9, 1),
        "audit_period_ending": dt.datetime(2014, 10, 1),
        "bandwidth": {"net0": {"bw_in": 10, "bw_out": 20}},
        "launched_at": dt.datetime(2014, 8, 3, 4, 5, 6, tzinfo=dt.UTC),
    }


# -- the envelope -------------------------------------------------------------------


def test_notification_envelope() -> None:
    n = make_notification(HOST, EVENT_INSTANCE_EXISTS, {"a": 1})
    assert n.event_type == "compute.instance.exists"
    assert n.publisher_id == "compute.compute-3"
    assert n.priority == "INFO"
    assert uuid.UUID(n.message_id).version == 4
    stamp = dt.datetime.fromisoformat(n.timestamp)
    assert stamp.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.UTC) - stamp) < dt.timedelta(minutes=5)
    assert n.payload == {"a": 1}


def test_message_ids_are_unique() -> None:
    ids = {make_notification(HOST, EVENT_VOLUME_USAGE, {}).message_id for _ in range(100)}
    assert len(ids) == 100


def test_timestamps_are_utc_whatever_the_clock_zone() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    n = make_notification(
        HOST, EVENT_VOLUME_USAGE, {}, clock=lambda: dt.datetime(2014, 1, 1, 2, 0, tzinfo=plus_two)
    )
    assert n.timestamp == "2014-01-01T00:00:00+00:00"
    naive = make_notification(HOST, EVENT_VOLUME_USAGE, {}, clock=lambda: dt.datetime(2014, 1, 1))
    assert naive.timestamp == "2014-01-01T00:00:00+00:00"


def test_notifications_are_frozen_and_copy_their_payload() -> None:
    payload: dict[str, object] = {"volume_id": "v1"}
    n = make_notification(HOST, EVENT_VOLUME_USAGE, payload)
    payload["volume_id"] = "changed"
    assert n.payload == {"volume_id": "v1"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.event_type = "other"  # type: ignore[misc]
    hash(n)  # hashable although the payload is a dict


def test_to_json_serialises_datetimes_uuids_and_decimals() -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    n = make_notification(
        HOST,
        EVENT_INSTANCE_EXISTS,
        {
            "when": dt.datetime(2014, 9, 1, 0, 0),
            "day": dt.date(2014, 9, 1),
            "id": ident,
            "size": decimal.Decimal("1.50"),
        },
        clock=fixed_clock,
    )
    data = json.loads(n.to_json())
    assert data["payload"] == {
        "when": "2014-09-01T00:00:00",
        "day": "2014-09-01",
        "id": str(ident),
        "size": "1.50",
    }
    assert data["timestamp"] == "2014-10-16T12:30:05.123456+00:00"
    assert "\n" not in n.to_json()


@pytest.mark.parametrize("bad", [object(), float("nan"), {1, 2}])
def test_to_json_rejects_what_json_cannot_carry(bad: object) -> None:
    n = make_notification(HOST, EVENT_VOLUME_USAGE, {"bad": bad})
    with pytest.raises((TypeError, ValueError)):
        n.to_json()


def test_from_dict_round_trips_and_validates() -> None:
    n = make_notification(HOST, EVENT_VOLUME_USAGE, {"rd_req": 3, "nested": [1, "x"]})
    assert Notification.from_dict(json.loads(n.to_json())) == n
    broken = n.to_dict()
    broken["payload"] = [1]
    with pytest.raises(ValueError, match="payload"):
        Notification.from_dict(broken)
    del broken["event_type"]
    with pytest.raises(ValueError, match="event_type"):
        Notification.from_dict(broken)


# -- the sinks ----------------------------------------------------------------------


def test_every_sink_is_a_notifier() -> None:
    sinks: list[object] = [
        MemoryNotifier(HOST),
        JsonLinesNotifier(HOST, "/dev/null"),
        NullNotifier(),
    ]
    assert all(isinstance(s, Notifier) for s in sinks)
    assert not isinstance(object(), Notifier)


def test_memory_notifier_keeps_order_and_filters_by_type() -> None:
    notifier = MemoryNotifier(HOST, clock=fixed_clock)
    notifier.notify(EVENT_INSTANCE_EXISTS, {"instance_id": "a"})
    notifier.notify(EVENT_VOLUME_USAGE, {"volume_id": "v"})
    notifier.notify(EVENT_INSTANCE_EXISTS, {"instance_id": "b"})
    assert [n.event_type for n in notifier.notifications] == [
        EVENT_INSTANCE_EXISTS,
        EVENT_VOLUME_USAGE,
        EVENT_INSTANCE_EXISTS,
    ]
    exists = notifier.of_type(EVENT_INSTANCE_EXISTS)
    assert [n.payload["instance_id"] for n in exists] == ["a", "b"]
    assert [n.payload for n in notifier.of_type(EVENT_VOLUME_USAGE)] == [{"volume_id": "v"}]
    assert notifier.of_type("compute.instance.delete.end") == []
    assert all(n.timestamp == INSTANT.isoformat() for n in notifier.notifications)
    assert {n.publisher_id for n in notifier.notifications} == {"compute.compute-3"}


def test_memory_notifier_keeps_payload_values_as_given() -> None:
    notifier = MemoryNotifier(HOST)
    payload = exists_payload()
    notifier.notify(EVENT_INSTANCE_EXISTS, payload)
    assert notifier.notifications[0].payload == payload


def test_json_lines_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "notifications.jsonl"  # parents do not exist yet
    notifier = JsonLinesNotifier(HOST, path, clock=fixed_clock)
    notifier.notify(EVENT_INSTANCE_EXISTS, exists_payload())
    notifier.notify(EVENT_VOLUME_USAGE, {"volume_id": "v1", "rd_bytes": 4096, "wr_req": 0})

    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert set(first) == {
        "event_type",
        "publisher_id",
        "timestamp",
        "payload",
        "message_id",
        "priority",
    }
    assert first["payload"]["audit_period_beginning"] == "2014-09-01T00:00:00"
    assert first["payload"]["launched_at"] == "2014-08-03T04:05:06+00:00"

    loaded = load_notifications(path)
    assert [n.event_type for n in loaded] == [EVENT_INSTANCE_EXISTS, EVENT_VOLUME_USAGE]
    assert loaded[0].payload == {
        "instance_id": "5f1c2bde-8a63-4d5e-9d0e-2f7ab8a1b0c1",
        "audit_period_beginning": "2014-09-01T00:00:00",
        "audit_period_ending": "2014-10-01T00:00:00",
        "bandwidth": {"net0": {"bw_in": 10, "bw_out": 20}},
        "launched_at": "2014-08-03T04:05:06+00:00",
    }
    assert loaded[1].payload == {"volume_id": "v1", "rd_bytes": 4096, "wr_req": 0}
    assert all(n.publisher_id == "compute.compute-3" for n in loaded)
    assert all(n.timestamp == "2014-10-16T12:30:05.123456+00:00" for n in loaded)
    assert len({n.message_id for n in loaded}) == 2


def test_json_lines_appends_and_is_visible_at_once(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    JsonLinesNotifier(HOST, path).notify(EVENT_VOLUME_USAGE, {"i": 1})
    assert len(load_notifications(path)) == 1  # flushed: readable before anything closes
    JsonLinesNotifier("compute-4", path).notify(EVENT_VOLUME_USAGE, {"i": 2})
    loaded = load_notifications(path)
    assert [n.payload["i"] for n in loaded] == [1, 2]
    assert [n.publisher_id for n in loaded] == ["compute.compute-3", "compute.compute-4"]


def test_json_lines_writes_nothing_for_a_bad_payload(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    notifier = JsonLinesNotifier(HOST, path)
    notifier.notify(EVENT_VOLUME_USAGE, {"ok": True})
    with pytest.raises(TypeError):
        notifier.notify(EVENT_VOLUME_USAGE, {"bad": object()})
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1


def test_json_lines_threads_do_not_interleave(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    notifier = JsonLinesNotifier(HOST, path)
    threads_n, each = 8, 50
    barrier = threading.Barrier(threads_n)
    filler = "x" * 20000  # longer than a write buffer: an unguarded line goes out in pieces

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(each):
            notifier.notify(EVENT_VOLUME_USAGE, {"t": t, "i": i, "filler": filler})

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    loaded = load_notifications(path)
    assert len(loaded) == threads_n * each
    assert {(n.payload["t"], n.payload["i"]) for n in loaded} == {
        (t, i) for t in range(threads_n) for i in range(each)
    }


def test_load_notifications_rejects_non_objects(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON object"):
        load_notifications(path)


def test_null_notifier_accepts_and_drops() -> None:
    notifier = NullNotifier()
    notifier.notify(EVENT_INSTANCE_EXISTS, exists_payload())
    assert NullNotifier(HOST).host == HOST
