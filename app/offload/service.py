"""``offload serve``: the compute host's periodic tasks as a long-lived service.

One thread runs the scheduler; an optional HTTP endpoint (loopback by default)
serves ``/healthz``, ``/metrics`` (Prometheus text) and ``/status`` (JSON: per
task, last run, duration, statements by route, guarded writes rejected).
SIGTERM/SIGINT stop the service after the running task finishes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from offload.compute.context import Compute
from offload.compute.driver import FakeDriver
from offload.compute.manager import TASKS, ComputeManager
from offload.compute.notifier import JsonLinesNotifier, MemoryNotifier, Notifier
from offload.config import Settings
from offload.db import Database, make_engine
from offload.errors import OffloadError
from offload.monitor import replica_views
from offload.periodic import Scheduler, install_signal_handlers
from offload.routing import CAUSAL_WAIT_BUCKETS
from offload.tracing import JsonLinesSink, StatementRecord
from offload.urls import masked

__all__ = ["Service", "StatementCounter", "build_manager"]

log = logging.getLogger("offload.service")


class StatementCounter:
    """A tracer sink counting statements by (task, route, target, verb)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str, str]] = Counter()
        self._lock = threading.Lock()

    def __call__(self, record: StatementRecord) -> None:
        key = (record.task or "-", record.route or "none", record.target, record.verb)
        with self._lock:
            self.counts[key] += 1

    def snapshot(self) -> Counter[tuple[str, str, str, str]]:
        with self._lock:
            return Counter(self.counts)


def _notifier(settings: Settings) -> Notifier:
    if settings.service.notifications_file:
        return JsonLinesNotifier(settings.host, Path(settings.service.notifications_file))
    return MemoryNotifier(settings.host)


def build_manager(settings: Settings, db: Database) -> ComputeManager:
    """The compute host of ``settings``: its hypervisor, notifier and tasks."""
    driver = FakeDriver(settings.host, seed=settings.service.driver_seed)
    compute = Compute(
        host=settings.host,
        db=db,
        driver=driver,
        notifier=_notifier(settings),
        options=settings.compute,
    )
    return ComputeManager(compute)


class Service:
    """The scheduler, its statement counters and its HTTP endpoint."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings)
        self.counter = StatementCounter()
        self.db.tracer.add_sink(self.counter)
        self.manager = build_manager(settings, self.db)
        self.scheduler = Scheduler(
            self.manager.periodic_tasks(), jitter=settings.service.jitter, logger=log
        )
        self.stop_event = threading.Event()
        self.started = time.time()
        self._health_engine = make_engine(
            settings.require_connection(),
            dataclasses.replace(settings.database, max_pool_size=1),
            name="primary",
        )

    # --- views --------------------------------------------------------------

    def health(self) -> tuple[bool, list[str]]:
        """(primary answers, reasons the service is degraded)."""
        try:
            with self._health_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except (OffloadError, SQLAlchemyError) as exc:
            return False, [f"primary: {str(exc).splitlines()[0]}"]
        reasons = []
        if self.db.replicas:
            for name, reading in self.db.guard.readings().items():
                if not reading.reachable:
                    reasons.append(f"{name} unreachable")
                elif reading.lag is None:
                    reasons.append(f"{name}: {reading.error or 'lag unknown'}")
                elif reading.lag > self.settings.replica.max_lag:
                    reasons.append(
                        f"{name} {reading.lag * 1000:.0f} ms behind "
                        f"(max_lag {self.settings.replica.max_lag * 1000:.0f} ms)"
                    )
        return True, reasons

    def status(self) -> dict[str, Any]:
        healthy, reasons = self.health()
        counts = self.counter.snapshot()
        tasks = []
        for spec in TASKS:
            stats = self.scheduler.stats[spec.name]
            last = self.manager.last_reports.get(spec.name)
            by_route: Counter[str] = Counter()
            for (task, route, _target, verb), n in counts.items():
                if task == spec.name:
                    by_route[f"{route}:{verb}"] += n
            tasks.append(
                {
                    "task": spec.name,
                    "release": spec.release,
                    "enabled": stats.enabled,
                    "off_because": spec.off_because(self.settings.compute),
                    "spacing": spec.spacing(self.settings.compute),
                    "runs": stats.runs,
                    "failures": stats.failures,
                    "last_started": stats.last_started,
                    "last_duration": stats.last_duration,
                    "last_error": stats.last_error,
                    "rejected_writes": self.manager.totals[spec.name]["rejected"],
                    "statements": dict(sorted(by_route.items())),
                    "routing": self._routing(spec.name),
                    "last_run": last.as_dict() if last else None,
                }
            )
        return {
            "host": self.settings.host,
            "uptime": round(time.time() - self.started, 3),
            "health": "down" if not healthy else ("degraded" if reasons else "ok"),
            "degraded_because": reasons,
            "primary": {"url": masked(self.settings.require_connection()), "reachable": healthy},
            "max_lag_ms": self.settings.replica.max_lag * 1000,
            "lag_policy": self.settings.replica.lag_policy.value,
            "replicas": replica_views(self.db, self.settings.testbed.replica_admin_connections),
            "tasks": tasks,
        }

    def _routing(self, task: str) -> dict[str, Any]:
        """The task's routing counters and, for each reason it met, the cause in words."""
        routing = self.db.routing.for_task(task)
        fallbacks: dict[str, int] = routing["fallbacks"]  # type: ignore[assignment]
        skips: dict[str, int] = routing["skips"]  # type: ignore[assignment]
        return {**routing, "why": self.db.routing.why({*fallbacks, *skips})}

    def metrics(self) -> str:
        lines = [
            "# HELP offload_statements_total Statements sent, by task, route and server.",
            "# TYPE offload_statements_total counter",
        ]
        for (task, route, target, verb), n in sorted(self.counter.snapshot().items()):
            lines.append(
                f'offload_statements_total{{task="{task}",route="{route}",'
                f'target="{target}",verb="{verb}"}} {n}'
            )
        lines += [
            "# HELP offload_replica_lag_seconds Heartbeat lag of each replica.",
            "# TYPE offload_replica_lag_seconds gauge",
            "# HELP offload_replica_reachable 1 when the replica answered its last probe.",
            "# TYPE offload_replica_reachable gauge",
        ]
        readings = self.db.guard.readings() if self.db.replicas else {}
        for name, reading in sorted(readings.items()):
            if reading.lag is not None:
                lines.append(f'offload_replica_lag_seconds{{replica="{name}"}} {reading.lag:.6f}')
            lines.append(f'offload_replica_reachable{{replica="{name}"}} {int(reading.reachable)}')
        routing = self.db.routing
        lines += [
            "# HELP offload_fallbacks_total Replica reads sent to the primary, by reason.",
            "# TYPE offload_fallbacks_total counter",
        ]
        for (task, reason), n in sorted(routing.fallbacks.items()):
            lines.append(f'offload_fallbacks_total{{task="{task}",reason="{reason}"}} {n}')
        lines += [
            "# HELP offload_skips_total Task runs skipped by lag_policy=skip.",
            "# TYPE offload_skips_total counter",
        ]
        for (task, reason), n in sorted(routing.skips.items()):
            lines.append(f'offload_skips_total{{task="{task}",reason="{reason}"}} {n}')
        lines += [
            "# HELP offload_stale_reads_total Reads beyond max_lag (lag_policy=stale).",
            "# TYPE offload_stale_reads_total counter",
        ]
        for task, n in sorted(routing.stale_reads.items()):
            lines.append(f'offload_stale_reads_total{{task="{task}"}} {n}')
        lines += [
            "# HELP offload_causal_wait_seconds Waits of replica reads for the task's own writes.",
            "# TYPE offload_causal_wait_seconds histogram",
        ]
        for bound in (*CAUSAL_WAIT_BUCKETS, float("inf")):
            label = "+Inf" if bound == float("inf") else f"{bound}"
            lines.append(
                f'offload_causal_wait_seconds_bucket{{le="{label}"}} '
                f"{routing.causal_buckets[bound]}"
            )
        lines.append(
            f"offload_causal_wait_seconds_sum {sum(routing.causal_wait_seconds.values()):.6f}"
        )
        lines.append(f"offload_causal_wait_seconds_count {sum(routing.causal_waits.values())}")
        lines += [
            "# HELP offload_task_runs_total Runs of each periodic task.",
            "# TYPE offload_task_runs_total counter",
        ]
        stats = self.scheduler.stats
        lines += [f'offload_task_runs_total{{task="{n}"}} {s.runs}' for n, s in stats.items()]
        lines += [
            "# HELP offload_task_failures_total Runs that raised.",
            "# TYPE offload_task_failures_total counter",
        ]
        lines += [
            f'offload_task_failures_total{{task="{n}"}} {s.failures}' for n, s in stats.items()
        ]
        lines += [
            "# HELP offload_task_rejected_writes_total Guarded writes the primary refused.",
            "# TYPE offload_task_rejected_writes_total counter",
        ]
        lines += [
            f'offload_task_rejected_writes_total{{task="{n}"}} {self.manager.totals[n]["rejected"]}'
            for n in stats
        ]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        """Release connections and stop the heartbeat (``run`` does this itself)."""
        self.db.dispose()
        self._health_engine.dispose()

    # --- running ------------------------------------------------------------

    @contextmanager
    def _http(self) -> Iterator[ThreadingHTTPServer | None]:
        port = self.settings.service.http_port
        if not port:
            yield None
            return
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    healthy, reasons = service.health()
                    if not healthy:
                        self.send_error(503, "; ".join(reasons))
                        return
                    text_ = "degraded: " + "; ".join(reasons) if reasons else "ok"
                    body, kind = (text_ + "\n").encode(), "text/plain"
                elif self.path == "/metrics":
                    body, kind = service.metrics().encode(), "text/plain; version=0.0.4"
                elif self.path == "/status":
                    body, kind = json.dumps(service.status(), indent=2).encode(), "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        server = ThreadingHTTPServer((self.settings.service.http_host, port), Handler)
        thread = threading.Thread(target=server.serve_forever, name="offload-http", daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()

    def run(self, *, handle_signals: bool = True) -> None:
        """Run until ``stop_event`` is set (SIGTERM/SIGINT set it when handled)."""
        with ExitStack() as stack:
            if handle_signals:
                stack.callback(install_signal_handlers(self.stop_event))
            if self.settings.service.trace_file:
                sink = JsonLinesSink(Path(self.settings.service.trace_file))
                self.db.tracer.add_sink(sink)
                stack.callback(sink.close)
            stack.callback(self.db.dispose)
            stack.callback(self._health_engine.dispose)
            stack.enter_context(self._http())
            self.manager.init_host()
            if self.db.replicas:
                self.db.guard  # noqa: B018 - start the heartbeat before the first task
            log.info(
                "offload serve: host %s, %d tasks enabled, primary %s, %d replica(s)",
                self.settings.host,
                len(self.scheduler.enabled_tasks),
                masked(self.settings.require_connection()),
                len(self.settings.database.slave_connections),
            )
            self.scheduler.run_forever(self.stop_event)
            log.info("offload serve: stopped")
