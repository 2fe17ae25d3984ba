"""The ``/status`` document (and ``offload status --json``) as types: docs/status.schema.json.

Plain ``TypedDict``s, so the document is the JSON itself (``json.dumps`` as it is) and
mypy checks every key the service writes and every key a reader takes.  A unit test
holds these keys to the JSON schema's.
"""

# no ``from __future__ import annotations``: Python 3.11 tells NotRequired keys apart only
# from evaluated annotations (``__optional_keys__``)
from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "PrimaryView",
    "ReplicaView",
    "ReplicationTlsView",
    "RoutingView",
    "StatusDocument",
    "TaskView",
    "TlsView",
]


class TlsView(TypedDict):
    """TLS of a connection made with the service's URL, as the server reports the session."""

    version: str | None  # Ssl_version: TLSv1.3 ...; None: plain TCP
    cipher: str | None  # Ssl_cipher
    #: Ssl_server_not_after as ISO 8601 UTC, and days from now (None: no certificate)
    cert_not_after: str | None
    cert_days_left: float | None


class ReplicationTlsView(TypedDict):
    """The replica's channel to its source (SHOW REPLICA STATUS)."""

    ssl: bool  # Master_SSL_Allowed / Source_SSL_Allowed is Yes
    verify_server_cert: bool  # Master_/Source_SSL_Verify_Server_Cert is Yes


class PrimaryView(TypedDict):
    url: str  # password masked
    reachable: bool
    tls: NotRequired[TlsView]  # absent when the primary could not be asked


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
    tls: NotRequired[TlsView]  # absent when the service's account could not connect
    replication_tls: NotRequired[ReplicationTlsView]  # with the thread states


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
    #: a server certificate expiring within this many days makes health degraded
    cert_warning_days: float
    replicas: list[ReplicaView]
    tasks: list[TaskView]
