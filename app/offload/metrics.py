"""The service's ``/metrics``: a ``prometheus_client`` Collector over what the service counts.

The figures live where they are counted (the statement counter, the routing
stats, the scheduler, the manager's totals, the guard's lag readings); the
collector reads them at each scrape and ``prometheus_client`` writes the
exposition (text 0.0.4, or OpenMetrics when the scraper asks for it).

Metric names and labels:

===========================================  ===========  ===============================
``offload_statements_total``                 counter      task, route, target, verb
``offload_replica_lag_seconds``              gauge        replica (absent while unknown)
``offload_replica_reachable``                gauge        replica
``offload_fallbacks_total``                  counter      task, reason
``offload_skips_total``                      counter      task, reason
``offload_stale_reads_total``                counter      task
``offload_causal_wait_seconds``              histogram    (buckets: CAUSAL_WAIT_BUCKETS)
``offload_task_runs_total``                  counter      task
``offload_task_failures_total``              counter      task
``offload_task_rejected_writes_total``       counter      task
``offload_server_tls_info``                  gauge        server, version, cipher (1)
``offload_server_certificate_days_left``     gauge        server (absent without TLS)
``offload_replication_tls``                  gauge        replica, verified (1: over TLS)
===========================================  ===========  ===============================

The TLS figures come from the service's latest status document (``monitor``: the
sessions of the service's own URLs, the replicas' channels), at most a minute old.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from offload.lag import LagReading
from offload.periodic import TaskStats
from offload.staleness import CAUSAL_WAIT_BUCKETS, RoutingStats
from offload.statusdoc import ReplicationTlsView, TlsView

__all__ = ["Figures", "FiguresSource", "ServiceCollector", "exposition", "registry_of"]


@dataclass(frozen=True, slots=True)
class Figures:
    """One consistent look at everything ``/metrics`` shows (taken at each scrape)."""

    statements: Counter[tuple[str, str, str, str]]  # (task, route, target, verb)
    readings: Mapping[str, LagReading]
    routing: RoutingStats
    task_stats: Mapping[str, TaskStats]
    rejected: Mapping[str, int]
    #: server name → the TLS of the service's session there (absent: not known)
    tls: Mapping[str, TlsView] = field(default_factory=dict)
    #: replica name → its replication channel's TLS
    replication_tls: Mapping[str, ReplicationTlsView] = field(default_factory=dict)


class FiguresSource(Protocol):
    """What the collector reads (the service)."""

    def figures(self) -> Figures: ...


def _counter(
    name: str, documentation: str, labels: list[str], values: Iterable[tuple[list[str], float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


class ServiceCollector(Collector):
    """Reads the service's figures at each scrape (no state of its own)."""

    def __init__(self, source: FiguresSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        figures = self.source.figures()
        yield _counter(
            "offload_statements_total",
            "Statements sent, by task, route and server.",
            ["task", "route", "target", "verb"],
            ((list(key), n) for key, n in sorted(figures.statements.items())),
        )
        lag = GaugeMetricFamily(
            "offload_replica_lag_seconds", "Heartbeat lag of each replica.", labels=["replica"]
        )
        reachable = GaugeMetricFamily(
            "offload_replica_reachable",
            "1 when the replica answered its last probe.",
            labels=["replica"],
        )
        for name, reading in sorted(figures.readings.items()):
            if reading.lag is not None:
                lag.add_metric([name], reading.lag)
            reachable.add_metric([name], int(reading.reachable))
        yield lag
        yield reachable
        routing = figures.routing
        yield _counter(
            "offload_fallbacks_total",
            "Replica reads sent to the primary, by reason.",
            ["task", "reason"],
            ((list(key), n) for key, n in sorted(routing.fallbacks.items())),
        )
        yield _counter(
            "offload_skips_total",
            "Task runs skipped by lag_policy=skip.",
            ["task", "reason"],
            ((list(key), n) for key, n in sorted(routing.skips.items())),
        )
        yield _counter(
            "offload_stale_reads_total",
            "Reads beyond max_lag (lag_policy=stale).",
            ["task"],
            (([task], n) for task, n in sorted(routing.stale_reads.items())),
        )
        yield HistogramMetricFamily(
            "offload_causal_wait_seconds",
            "Waits of replica reads for the task's own writes.",
            buckets=[
                *((str(bound), routing.causal_buckets[bound]) for bound in CAUSAL_WAIT_BUCKETS),
                ("+Inf", routing.causal_buckets[float("inf")]),
            ],
            sum_value=sum(routing.causal_wait_seconds.values()),
        )
        stats = figures.task_stats
        yield _counter(
            "offload_task_runs_total",
            "Runs of each periodic task.",
            ["task"],
            (([name], s.runs) for name, s in stats.items()),
        )
        yield _counter(
            "offload_task_failures_total",
            "Runs that raised.",
            ["task"],
            (([name], s.failures) for name, s in stats.items()),
        )
        yield _counter(
            "offload_task_rejected_writes_total",
            "Guarded writes the primary refused.",
            ["task"],
            (([name], figures.rejected.get(name, 0)) for name in stats),
        )
        yield from _tls_metrics(figures)


def _tls_metrics(figures: Figures) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "offload_server_tls_info",
        "TLS of the service's connections to each server (version none: plain TCP).",
        labels=["server", "version", "cipher"],
    )
    days = GaugeMetricFamily(
        "offload_server_certificate_days_left",
        "Days until each server's TLS certificate expires.",
        labels=["server"],
    )
    for name, view in sorted(figures.tls.items()):
        info.add_metric([name, view["version"] or "none", view["cipher"] or ""], 1)
        if view["cert_days_left"] is not None:
            days.add_metric([name], view["cert_days_left"])
    channel = GaugeMetricFamily(
        "offload_replication_tls",
        "1 when the replica replicates over TLS (verified: the source's certificate is checked).",
        labels=["replica", "verified"],
    )
    for name, tls in sorted(figures.replication_tls.items()):
        channel.add_metric([name, "yes" if tls["verify_server_cert"] else "no"], int(tls["ssl"]))
    yield info
    yield days
    yield channel


def registry_of(source: FiguresSource) -> CollectorRegistry:
    """A registry of its own holding only the service's collector (no process metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(source))
    return registry


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """(body, content type): text 0.0.4, or OpenMetrics when ``accept`` asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
