"""``offload status``: the status document (same JSON as the service's /status) as text."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["render_status"]


def _replica_line(view: dict[str, Any]) -> str:
    lag = f"lag {view['lag_ms']:.1f} ms" if view.get("lag_ms") is not None else "lag unknown"
    reason = view.get("unfit_reason")
    fit = "fit" if view.get("fit") else f"NOT FIT ({reason})" if reason else "NOT FIT"
    parts = [f"{view['name']:<9} {view['url']}", lag, fit]
    if not view.get("reachable"):
        parts.append(f"unreachable: {view.get('error')}")
    if view.get("io_running") is not None:
        parts.append(f"IO={view['io_running']} SQL={view['sql_running']}")
        parts.append(
            f"behind={view['seconds_behind']}s"
            if view.get("seconds_behind") is not None
            else "behind=NULL"
        )
        parts.append(f"gtid_distance={view.get('gtid_distance')}")
    if view.get("last_error"):
        parts.append(f"last error: {view['last_error']}")
    return "  ".join(parts)


def _task_line(task: dict[str, Any]) -> str:
    if not task["enabled"]:
        return f"{task['task']:<36}   off: {task['off_because']}"
    counts: dict[str, int] = task["statements"]
    replica = counts.get("replica:SELECT", 0)
    primary = counts.get("primary:SELECT", 0) + counts.get("write:SELECT", 0)
    writes = sum(n for k, n in counts.items() if k.startswith("write:") and k != "write:SELECT")
    routing = task.get("routing") or {}
    fallbacks = sum((routing.get("fallbacks") or {}).values())
    skips = sum((routing.get("skips") or {}).values())
    last = task["last_started"]
    ago = f"{time.time() - last:>8.0f}s" if last else f"{'never':>9}"
    duration = f"{task['last_duration'] * 1000:7.1f}" if task["last_duration"] else f"{'-':>7}"
    return (
        f"{task['task']:<36} {task['runs']:>5} {task['failures']:>4} {ago} {duration} "
        f"{replica:>8} {primary:>8} {writes:>6} {task['rejected_writes']:>8} "
        f"{fallbacks:>9} {skips:>5} {routing.get('causal_waits', 0):>6}"
    )


def render_status(status: dict[str, Any], *, live: bool) -> str:
    """Text for a terminal; ``live`` says whether it came from the running service."""
    lines = []
    if live:
        lines.append(
            f"compute service for {status['host']}: {status['health']} (up {status['uptime']:.0f}s)"
        )
    else:
        lines.append(
            "compute service: not running (`make up` starts it); replica readings taken now"
        )
    lines.extend(f"  degraded: {reason}" for reason in status.get("degraded_because", []))
    primary = status["primary"]
    lines.append(
        f"{'primary':<9} {primary['url']}  {'reachable' if primary['reachable'] else 'UNREACHABLE'}"
    )
    lines.extend(_replica_line(view) for view in status["replicas"])
    if not status["replicas"]:
        lines.append("no replica configured: every read goes to the primary")
    lines.append(f"max_lag {status['max_lag_ms']:.0f} ms, lag_policy {status['lag_policy']}")
    if live:
        lines.append("")
        lines.append(
            f"{'task':<36} {'runs':>5} {'fail':>4} {'last run':>9} {'ms':>7} "
            f"{'replica':>8} {'primary':>8} {'writes':>6} {'rejected':>8} "
            f"{'fallbacks':>9} {'skips':>5} {'causal':>6}"
        )
        lines.append(f"{'':<36} {'':>5} {'':>4} {'':>9} {'':>7} {'SELECTs':>8} {'SELECTs':>8}")
        lines.extend(_task_line(task) for task in status["tasks"])
    return "\n".join(lines)
