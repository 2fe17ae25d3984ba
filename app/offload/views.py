"""What a person reads in a terminal: ``offload status``, ``testbed status`` and ``tasks``.

Tables through rich, from the same data the JSON outputs carry (the status document,
the servers' reports, the task catalogue).  Piped output has no colours and is wide
enough not to wrap a URL (``$COLUMNS`` still wins).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any, Final

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from offload.flavor import describe_server, detect_flavor

if TYPE_CHECKING:
    from offload.compute.catalogue import TaskSpec
    from offload.config import ComputeSettings
    from offload.monitor import ServerReport
    from offload.replication import ReplicaStatus

__all__ = ["print_view", "roles_view", "servers_view", "status_view", "tasks_view"]

#: columns of piped output (a terminal's own width is used on a terminal)
PIPE_WIDTH: Final = 200


def print_view(*parts: RenderableType, file: IO[str] | None = None) -> None:
    """Print ``parts`` (text lines, tables) on ``file`` (default stdout)."""
    stream = file if file is not None else sys.stdout
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    console = Console(
        file=stream, width=PIPE_WIDTH if piped else None, highlight=False, emoji=False
    )
    for part in parts:
        # a line that must not wrap (a reason with its fix) is printed whole
        console.print(part, soft_wrap=isinstance(part, Text) and bool(part.no_wrap))


def _table(*columns: str, right: Iterable[str] = ()) -> Table:
    aligned = set(right)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name in columns:
        table.add_column(name, justify="right" if name in aligned else "left", overflow="fold")
    return table


def _url(masked_url: str) -> str:
    """A (masked) URL without its query: the TLS options are a table of their own, and a
    CA's path would fold the column; ``--json`` keeps them."""
    return masked_url.split("?", 1)[0]


def _text(value: object, missing: str = "-") -> str:
    return missing if value is None or value == "" else str(value)


# --- offload tasks -------------------------------------------------------------------


def tasks_view(specs: Sequence[TaskSpec], options: ComputeSettings) -> Table:
    """The catalogue under these options: release, interval, on or why off."""
    table = _table("task", "release", "every", "state", right=("every",))
    for spec in specs:
        spacing = spec.spacing(options)
        off = spec.off_because(options)
        table.add_row(
            spec.name,
            spec.release,
            f"{spacing:.0f}s" if spacing is not None else "-",
            f"off: {off}" if off else "on",
        )
    return table


# --- offload testbed status ----------------------------------------------------------


def _server(report: ServerReport) -> str:
    try:
        return describe_server(detect_flavor(report.version), report.version)
    except ValueError:
        return report.version or "-"


def _channel_tls(ssl: bool, verify: bool) -> str:
    """A replica's channel to its source: verified TLS, TLS without verification, or plain."""
    if ssl:
        return "TLS, verified" if verify else "TLS, NOT verified"
    return "plain"


def _behind(status: ReplicaStatus | None) -> str:
    if status is None:
        return "-"
    return "NULL" if status.seconds_behind is None else f"{status.seconds_behind}s"


def servers_view(reports: Sequence[ServerReport]) -> list[RenderableType]:
    """Every server as it reports itself, then what went wrong or is worth a note.

    A replica's GTID position is what it applied; ``received`` what its IO thread fetched.
    """
    table = _table(
        "server",
        "url",
        "id",
        "version",
        "read_only",
        "IO",
        "SQL",
        "behind",
        "delay",
        "GTID position",
        "received",
        "replication",
        right=("id", "behind", "delay"),
    )
    notes: list[str] = []
    for report in reports:
        if report.error:
            table.add_row(report.role, _url(report.url), *["-"] * 10)
            notes.append(f"{report.role}: UNREACHABLE: {report.error}")
            continue
        status = report.replica
        table.add_row(
            report.role,
            _url(report.url),
            _text(report.server_id),
            _server(report),
            "ON" if report.read_only else "OFF",
            _text(status.io_running if status else None),
            _text(status.sql_running if status else None),
            _behind(status),
            f"{status.sql_delay}s" if status and status.sql_delay else "-",
            _text(report.gtid_position),
            _text(status.received_gtid if status else None),
            (
                _channel_tls(status.ssl_allowed == "Yes", status.ssl_verify_server_cert == "Yes")
                if status
                else "-"
            ),
        )
        if status is not None and (status.last_io_errno or status.last_io_error):
            notes.append(
                f"{report.role}: last IO error {status.last_io_errno}: "
                f"{' '.join(status.last_io_error.split())}"
            )
        if status is not None and (status.last_sql_errno or status.last_sql_error):
            notes.append(
                f"{report.role}: last SQL error {status.last_sql_errno}: "
                f"{' '.join(status.last_sql_error.split())}"
            )
        notes.extend(f"{report.role}: note: {note}" for note in report.notes)
    if len(reports) == 1:
        notes.append(
            "no replica configured ([database] slave_connection is empty): "
            "every read goes to the primary"
        )
    return [table, *(Text(note) for note in notes)]


def roles_view(roles: Sequence[dict[str, Any]]) -> Table:
    """A testbed's servers by role (state.json) and the endpoints that lead to each."""
    table = _table("server", "id", "role", "running", "endpoints", right=("id",))
    for row in roles:
        table.add_row(
            str(row["server"]),
            str(row["server_id"]),
            str(row["role"]),
            "yes" if row["running"] else "no",
            ", ".join(row["endpoints"]) or "-",
        )
    return table


# --- offload status ------------------------------------------------------------------


def _replicas(status: dict[str, Any]) -> Table:
    table = _table(
        "server",
        "url",
        "reachable",
        "lag ms",
        "fit",
        "IO",
        "SQL",
        "behind",
        "GTID distance",
        "error",
        right=("lag ms", "behind", "GTID distance"),
    )
    primary = status["primary"]
    table.add_row(
        "primary", _url(primary["url"]), "yes" if primary["reachable"] else "NO", *["-"] * 6, ""
    )
    for view in status["replicas"]:
        reason = view.get("unfit_reason")
        fit = "fit" if view.get("fit") else f"NOT FIT ({reason})" if reason else "NOT FIT"
        lag = view.get("lag_ms")
        behind = view.get("seconds_behind")
        threads_known = view.get("io_running") is not None
        errors = [
            e
            for e in (
                None if view.get("reachable") else view.get("error"),
                view.get("last_error"),
                view.get("status_error"),
            )
            if e
        ]
        table.add_row(
            view["name"],
            _url(view["url"]),
            "yes" if view.get("reachable") else "NO",
            f"{lag:.1f}" if lag is not None else "unknown",
            fit,
            _text(view.get("io_running")),
            _text(view.get("sql_running")),
            f"{behind}s" if behind is not None else ("NULL" if threads_known else "-"),
            _text(view.get("gtid_distance")),
            "; ".join(str(e) for e in errors),
        )
    return table


def _tls(status: dict[str, Any]) -> Table:
    """Per server: the TLS of the service's connections, the certificate, the channel."""
    table = _table(
        "server",
        "TLS",
        "cipher",
        "certificate until",
        "days left",
        "replication",
        right=("days left",),
    )
    rows = [("primary", status["primary"])] + [(v["name"], v) for v in status["replicas"]]
    for name, view in rows:
        tls = view.get("tls")
        channel = view.get("replication_tls")
        days = tls["cert_days_left"] if tls else None
        table.add_row(
            name,
            (tls["version"] or "none (plain TCP)") if tls else "-",
            _text(tls["cipher"] if tls else None),
            _text(tls["cert_not_after"] if tls else None),
            f"{days:.1f}" if days is not None else "-",
            _channel_tls(channel["ssl"], channel["verify_server_cert"]) if channel else "-",
        )
    return table


#: the task table's figures (right-aligned), after its task and state columns
_TASK_FIGURES: Final = (
    "runs",
    "fail",
    "last run",
    "ms",
    "replica SELECTs",
    "primary SELECTs",
    "writes",
    "rejected",
    "fallbacks",
    "skips",
    "causal",
)


def _tasks(tasks: Sequence[dict[str, Any]], now: float) -> Table:
    table = _table("task", "state", *_TASK_FIGURES, right=_TASK_FIGURES)
    for task in tasks:
        if not task["enabled"]:
            table.add_row(task["task"], f"off: {task['off_because']}", *[""] * len(_TASK_FIGURES))
            continue
        counts: dict[str, int] = task["statements"]
        replica = counts.get("replica:SELECT", 0)
        primary = counts.get("primary:SELECT", 0) + counts.get("write:SELECT", 0)
        writes = sum(n for k, n in counts.items() if k.startswith("write:") and k != "write:SELECT")
        routing = task.get("routing") or {}
        last = task["last_started"]
        duration = task["last_duration"]
        table.add_row(
            task["task"],
            "on",
            str(task["runs"]),
            str(task["failures"]),
            f"{now - last:.0f}s ago" if last else "never",
            f"{duration * 1000:.1f}" if duration else "-",
            str(replica),
            str(primary),
            str(writes),
            str(task["rejected_writes"]),
            str(sum((routing.get("fallbacks") or {}).values())),
            str(sum((routing.get("skips") or {}).values())),
            str(routing.get("causal_waits", 0)),
        )
    return table


def status_view(
    status: dict[str, Any], *, live: bool, now: float | None = None
) -> list[RenderableType]:
    """The status document; ``live`` says whether it came from the running service.

    ``now`` (wall clock, default the time) dates the tasks' last runs.
    """
    if live:
        head = (
            f"compute service for {status['host']}: {status['health']} (up {status['uptime']:.0f}s)"
        )
    else:
        head = "compute service: not running (`make up` starts it); replica readings taken now"
    parts: list[RenderableType] = [Text(head)]
    # one line each, however long: a reason carries its fix (no_heartbeat: what to run)
    parts.extend(
        Text(f"  degraded: {reason}", no_wrap=True) for reason in status.get("degraded_because", [])
    )
    parts.append(_replicas(status))
    if not status["replicas"]:
        parts.append(Text("no replica configured: every read goes to the primary"))
    parts.append(Text(f"max_lag {status['max_lag_ms']:.0f} ms, lag_policy {status['lag_policy']}"))
    parts.append(_tls(status))
    if live:
        parts.append(Text(""))
        parts.append(_tasks(status["tasks"], time.time() if now is None else now))
    return parts
