"""Notifications the compute service emits, in oslo.messaging's envelope.

A :class:`Notification` carries what a Nova notification carries: event_type,
publisher_id (``compute.<host>``), timestamp, payload, message_id and priority.
The periodic tasks emit ``compute.instance.exists`` (``_instance_usage_audit``)
and ``volume.usage`` (``_poll_volume_usage``); they build the payloads, a
:class:`Notifier` only wraps and delivers them:

* :class:`MemoryNotifier` keeps them in a list (tests);
* :class:`JsonLinesNotifier` appends one JSON object per line to a file (the
  testbed; ``load_notifications`` reads it back);
* :class:`NullNotifier` drops them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "EVENT_INSTANCE_EXISTS",
    "EVENT_VOLUME_USAGE",
    "PRIORITY_INFO",
    "Clock",
    "JsonLinesNotifier",
    "MemoryNotifier",
    "Notification",
    "Notifier",
    "NullNotifier",
    "load_notifications",
    "make_notification",
    "publisher_id_for",
]

#: emitted once per instance by _instance_usage_audit
EVENT_INSTANCE_EXISTS = "compute.instance.exists"
#: emitted per (instance, volume) by _poll_volume_usage
EVENT_VOLUME_USAGE = "volume.usage"
PRIORITY_INFO = "INFO"

#: returns the current time; naive results are taken as UTC
Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def publisher_id_for(host: str) -> str:
    """Nova's publisher id for a compute host: ``compute.<host>``."""
    return f"compute.{host}"


@dataclasses.dataclass(frozen=True)
class Notification:
    """One notification, as oslo.messaging puts it on the wire."""

    event_type: str
    publisher_id: str
    timestamp: str  # ISO-8601, UTC
    payload: dict[str, object] = dataclasses.field(hash=False)
    message_id: str  # a uuid4
    priority: str = PRIORITY_INFO

    def to_dict(self) -> dict[str, object]:
        """The envelope as a dict (payload values as given: see ``to_json``)."""
        return {
            "event_type": self.event_type,
            "publisher_id": self.publisher_id,
            "timestamp": self.timestamp,
            "priority": self.priority,
            "message_id": self.message_id,
            "payload": dict(self.payload),
        }

    def to_json(self) -> str:
        """One line of JSON; datetimes, dates, times, UUIDs and Decimals become strings.

        Raises TypeError (or ValueError for NaN/infinity) for a payload JSON
        cannot carry.
        """
        return json.dumps(self.to_dict(), default=_json_default, allow_nan=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Notification:
        """The inverse of ``to_dict`` (and of ``json.loads(to_json())``)."""
        strings = {}
        for name in ("event_type", "publisher_id", "timestamp", "message_id", "priority"):
            value = data.get(name)
            if not isinstance(value, str):
                raise ValueError(f"notification field {name!r} is not a string: {value!r}")
            strings[name] = value
        payload = data.get("payload")
        if not isinstance(payload, dict):
            raise ValueError(f"notification payload is not an object: {payload!r}")
        return cls(
            event_type=strings["event_type"],
            publisher_id=strings["publisher_id"],
            timestamp=strings["timestamp"],
            payload={str(k): v for k, v in payload.items()},
            message_id=strings["message_id"],
            priority=strings["priority"],
        )


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")


def _iso_utc(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat()


def make_notification(
    host: str,
    event_type: str,
    payload: Mapping[str, object],
    *,
    clock: Clock = _utcnow,
) -> Notification:
    """A new INFO notification from ``host``, stamped now; the payload is copied."""
    return Notification(
        event_type=event_type,
        publisher_id=publisher_id_for(host),
        timestamp=_iso_utc(clock()),
        payload=dict(payload),
        message_id=str(uuid.uuid4()),
    )


@runtime_checkable
class Notifier(Protocol):
    """Where the compute service sends notifications."""

    def notify(self, event_type: str, payload: Mapping[str, object]) -> None: ...


class MemoryNotifier:
    """Keeps every notification in ``notifications``, in order."""

    def __init__(self, host: str, *, clock: Clock = _utcnow) -> None:
        self.host = host
        self.notifications: list[Notification] = []
        self._clock = clock
        self._lock = threading.Lock()

    def notify(self, event_type: str, payload: Mapping[str, object]) -> None:
        notification = make_notification(self.host, event_type, payload, clock=self._clock)
        with self._lock:
            self.notifications.append(notification)

    def of_type(self, event_type: str) -> list[Notification]:
        """The notifications of one event type, in the order they were sent."""
        with self._lock:
            return [n for n in self.notifications if n.event_type == event_type]


class JsonLinesNotifier:
    """Appends each notification to ``path`` as one line of JSON, flushed at once.

    The parent directory is created if missing; an existing file is appended
    to, never truncated.  Writes from several threads do not interleave.
    """

    def __init__(self, host: str, path: str | os.PathLike[str], *, clock: Clock = _utcnow) -> None:
        self.host = host
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()

    def notify(self, event_type: str, payload: Mapping[str, object]) -> None:
        notification = make_notification(self.host, event_type, payload, clock=self._clock)
        line = notification.to_json() + "\n"  # serialise first: a bad payload writes nothing
        with self._lock, self.path.open("a", encoding="utf-8") as stream:
            stream.write(line)
            stream.flush()


class NullNotifier:
    """Drops every notification."""

    def __init__(self, host: str = "") -> None:
        self.host = host

    def notify(self, event_type: str, payload: Mapping[str, object]) -> None:
        """Do nothing."""


def load_notifications(path: str | os.PathLike[str]) -> list[Notification]:
    """Read back a file written by :class:`JsonLinesNotifier` (blank lines skipped)."""
    notifications = []
    with Path(path).open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            notifications.append(Notification.from_dict(data))
    return notifications
