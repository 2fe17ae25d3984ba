"""``offload serve``: the compute host's periodic tasks as a long-lived service.

One thread runs the scheduler; an optional HTTP endpoint (loopback by default)
serves ``/healthz``, ``/metrics`` (Prometheus text, written by ``prometheus_client``
through :mod:`offload.metrics`) and ``/status`` (JSON: per
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

from offload import monitor
from offload.compute.catalogue import TASKS
from offload.compute.host import build_manager
from offload.config import Settings
from offload.db import Database, make_engine
from offload.metrics import Figures, exposition, registry_of
from offload.periodic import Scheduler, install_signal_handlers
from offload.statusdoc import StatusDocument, TaskView
from offload.tracing import JsonLinesSink, StatementCounter
from offload.urls import masked

__all__ = ["Service", "StatementCounter"]

log = logging.getLogger("offload.service")
#: seconds a status document's TLS figures serve /metrics before they are read again
TLS_FIGURES_AGE = 60.0


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
        self._registry = registry_of(self)
        #: (monotonic time, document) of the latest /status: /metrics' TLS figures
        self._last_status: tuple[float, StatusDocument | None] = (0.0, None)
        self._status_lock = threading.Lock()

    # --- views --------------------------------------------------------------

    def health(self) -> tuple[bool, list[str]]:
        """(primary answers, reasons the service is degraded)."""
        return monitor.health(self.settings, self.db, self._health_engine)

    def status(self) -> StatusDocument:
        """The ``/status`` document (docs/status.schema.json)."""
        counts = self.counter.snapshot()
        tasks: list[TaskView] = []
        for spec in TASKS:
            by_route: Counter[str] = Counter()
            for (task, route, _target, verb), n in counts.items():
                if task == spec.name:
                    by_route[f"{route}:{verb}"] += n
            last = self.manager.last_reports.get(spec.name)
            tasks.append(
                monitor.task_view(
                    spec,
                    self.settings,
                    self.db,
                    stats=self.scheduler.stats[spec.name],
                    rejected=self.manager.totals[spec.name]["rejected"],
                    statements=by_route,
                    last_run=last.as_dict() if last else None,
                )
            )
        document = monitor.status_document(
            self.settings, self.db, self._health_engine, tasks=tasks, started=self.started
        )
        with self._status_lock:
            self._last_status = (time.monotonic(), document)
        return document

    def _tls_figures(self) -> StatusDocument:
        """The latest status document, made again when older than ``TLS_FIGURES_AGE``."""
        with self._status_lock:
            taken, document = self._last_status
        if document is None or time.monotonic() - taken > TLS_FIGURES_AGE:
            document = self.status()
        return document

    def figures(self) -> Figures:
        """What ``/metrics`` shows, read now (the collector calls this at each scrape);
        the TLS figures from a status document at most ``TLS_FIGURES_AGE`` old."""
        document = self._tls_figures()
        servers = [
            ("primary", document["primary"]),
            *((v["name"], v) for v in document["replicas"]),
        ]
        return Figures(
            tls={name: view["tls"] for name, view in servers if "tls" in view},
            replication_tls={
                view["name"]: view["replication_tls"]
                for view in document["replicas"]
                if "replication_tls" in view
            },
            statements=self.counter.snapshot(),
            readings=self.db.guard.readings() if self.db.replicas else {},
            routing=self.db.routing,
            task_stats=self.scheduler.stats,
            rejected={name: self.manager.totals[name]["rejected"] for name in self.scheduler.stats},
        )

    def metrics(self, accept: str | None = None) -> bytes:
        """The exposition of ``/metrics`` (text 0.0.4 unless ``accept`` asks for OpenMetrics)."""
        return self.exposition(accept)[0]

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) of ``/metrics``, written by prometheus_client."""
        return exposition(self._registry, accept)

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
                    body, kind = service.exposition(self.headers.get("Accept"))
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
