"""The /status types and docs/status.schema.json name the same keys, required and optional."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from offload.staleness import RoutingStats
from offload.statusdoc import (
    PrimaryView,
    ReplicationTlsView,
    ReplicaView,
    RoutingView,
    StatusDocument,
    TaskView,
    TlsView,
)

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "status.schema.json").read_text()
)


def _keys(schema: dict[str, Any]) -> tuple[set[str], set[str]]:
    required = set(schema["required"])
    return required, set(schema["properties"]) - required


@pytest.mark.parametrize(
    ("typed", "schema"),
    [
        (StatusDocument, SCHEMA),
        (PrimaryView, SCHEMA["properties"]["primary"]),
        (ReplicaView, SCHEMA["properties"]["replicas"]["items"]),
        (TaskView, SCHEMA["properties"]["tasks"]["items"]),
        (RoutingView, SCHEMA["properties"]["tasks"]["items"]["properties"]["routing"]),
        (TlsView, SCHEMA["$defs"]["tls"]),
        (
            ReplicationTlsView,
            SCHEMA["properties"]["replicas"]["items"]["properties"]["replication_tls"],
        ),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_the_typed_document_is_the_schema(typed: Any, schema: dict[str, Any]) -> None:
    required, optional = _keys(schema)
    assert set(typed.__required_keys__) == required
    assert set(typed.__optional_keys__) == optional


def test_routing_stats_write_the_routing_view() -> None:
    assert set(RoutingStats().for_task("any")) == set(RoutingView.__required_keys__)
