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
===========================================  ===========  ===============================
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
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

__all__ = ["Figures", "FiguresSource", "ServiceCollector", "exposition", "registry_of"]


@dataclass(frozen=True, slots=True)
class Figures:
    """One consistent look at everything ``/metrics`` shows (taken at each scrape)."""

    statements: Counter[tuple[str, str, str, str]]  # (task, route, target, verb)
    readings: Mapping[str, LagReading]
    routing: RoutingStats
    task_stats: Mapping[str, TaskStats]
    rejected: Mapping[str, int]


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


def registry_of(source: FiguresSource) -> CollectorRegistry:
    """A registry of its own holding only the service's collector (no process metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(source))
    return registry


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """(body, content type): text 0.0.4, or OpenMetrics when ``accept`` asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
