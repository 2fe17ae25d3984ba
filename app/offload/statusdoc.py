"""The ``/status`` document (and ``offload status --json``) as types: docs/status.schema.json.

Plain ``TypedDict``s, so the document is the JSON itself (``json.dumps`` as it is) and
mypy checks every key the service writes and every key a reader takes.  A unit test
holds these keys to the JSON schema's.
"""

# no ``from __future__ import annotations``: Python 3.11 tells NotRequired keys apart only
# from evaluated annotations (``__optional_keys__``)
from typing import Any, Literal, NotRequired, TypedDict

__all__ = ["PrimaryView", "ReplicaView", "RoutingView", "StatusDocument", "TaskView"]


class PrimaryView(TypedDict):
    url: str  # password masked
    reachable: bool


class ReplicaView(TypedDict):
    """One replica: the guard's lag reading, and the thread states a privileged account sees."""

    name: str
    url: str
    reachable: bool
    lag_ms: float | None
    error: str | None
    fit: bool
    #: lag | unreachable | no_heartbeat | replica_is_primary; None when fit
    unfit_reason: str | None
    io_running: str | None
    sql_running: str | None
    last_error: str | None
    seconds_behind: int | None
    gtid_distance: int | None
    received_gtid: NotRequired[str]
    executed_gtid: NotRequired[str]
    status_error: NotRequired[str]


class RoutingView(TypedDict):
    """A task's routing decisions other than "a fit replica"."""

    fallbacks: dict[str, int]  # reason → reads sent to the primary
    skips: dict[str, int]
    stale_reads: int
    causal_waits: int
    causal_wait_seconds: float
    #: reason → its last cause in words, with the fix (no_heartbeat: what to run)
    why: NotRequired[dict[str, str]]


class TaskView(TypedDict):
    task: str
    release: str  # juno | icehouse
    enabled: bool
    off_because: str | None
    spacing: float | None
    runs: int
    failures: int
    last_started: float | None
    last_duration: float | None
    last_error: str | None
    rejected_writes: int
    statements: dict[str, int]  # "route:VERB" → statements sent
    routing: RoutingView
    last_run: dict[str, Any] | None  # the last RunReport, as_dict()


class StatusDocument(TypedDict):
    host: str
    uptime: float
    health: Literal["ok", "degraded", "down"]
    degraded_because: list[str]
    primary: PrimaryView
    max_lag_ms: float
    lag_policy: str  # primary | skip | stale
    replicas: list[ReplicaView]
    tasks: list[TaskView]
