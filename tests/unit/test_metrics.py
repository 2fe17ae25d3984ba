"""``/metrics`` as prometheus_client writes it from the service's figures (no servers)."""

from __future__ import annotations

import dataclasses
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from offload.lag import LagReading
from offload.metrics import Figures, exposition, registry_of
from offload.periodic import TaskStats
from offload.staleness import CAUSAL_WAIT_BUCKETS, RoutingStats
from offload.tracing import task_scope


class Source:
    def __init__(self, figures: Figures) -> None:
        self.figures_now = figures
        self.reads = 0

    def figures(self) -> Figures:
        self.reads += 1
        return self.figures_now


def _figures() -> Figures:
    routing = RoutingStats()
    with task_scope("_sync_power_states"):
        routing.fallback("lag")
        routing.fallback("lag")
        routing.skip("unreachable")
        routing.stale()
        routing.causal_wait(0.004)
        routing.causal_wait(0.2)
    routing.causal_wait(7.0)  # outside any task: counted for "-"
    return Figures(
        statements=Counter(
            {
                ("_sync_power_states", "replica", "replica0", "SELECT"): 5,
                ("_sync_power_states", "write", "primary", "UPDATE"): 2,
            }
        ),
        readings={
            "replica0": LagReading("replica0", 0.125, reachable=True),
            "replica1": LagReading("replica1", None, reachable=False, error="refused"),
        },
        routing=routing,
        task_stats={
            "_sync_power_states": TaskStats("_sync_power_states", runs=3, failures=1),
            "_poll_volume_usage": TaskStats("_poll_volume_usage"),
        },
        rejected={"_sync_power_states": 4},
    )


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_every_figure_under_its_name_and_labels() -> None:
    source = Source(_figures())
    body, content_type = exposition(registry_of(source))
    assert content_type.startswith("text/plain; version=0.0.4")
    assert source.reads == 1  # read at the scrape, not when registered
    samples = _samples(body)
    sync = ("task", "_sync_power_states")
    assert (
        samples[
            (
                "offload_statements_total",
                (("route", "replica"), ("target", "replica0"), sync, ("verb", "SELECT")),
            )
        ]
        == 5
    )
    assert samples[("offload_replica_lag_seconds", (("replica", "replica0"),))] == 0.125
    # unknown lag: no sample rather than a made-up number; reachability still shown
    assert ("offload_replica_lag_seconds", (("replica", "replica1"),)) not in samples
    assert samples[("offload_replica_reachable", (("replica", "replica1"),))] == 0
    assert samples[("offload_replica_reachable", (("replica", "replica0"),))] == 1
    assert samples[("offload_fallbacks_total", (("reason", "lag"), sync))] == 2
    assert samples[("offload_skips_total", (("reason", "unreachable"), sync))] == 1
    assert samples[("offload_stale_reads_total", (sync,))] == 1
    assert samples[("offload_task_runs_total", (sync,))] == 3
    assert samples[("offload_task_failures_total", (sync,))] == 1
    assert samples[("offload_task_rejected_writes_total", (sync,))] == 4
    assert samples[("offload_task_rejected_writes_total", (("task", "_poll_volume_usage"),))] == 0


def test_the_causal_wait_histogram_is_cumulative_with_sum_and_count() -> None:
    samples = _samples(exposition(registry_of(Source(_figures())))[0])
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in samples.items()
        if name == "offload_causal_wait_seconds_bucket"
    }
    assert list(buckets) == [*(str(b) for b in CAUSAL_WAIT_BUCKETS), "+Inf"]
    assert buckets["0.001"] == 0
    assert buckets["0.005"] == 1  # 0.004
    assert buckets["0.25"] == 2  # 0.004, 0.2
    assert buckets["2.5"] == 2
    assert buckets["+Inf"] == 3  # 7.0 too
    assert samples[("offload_causal_wait_seconds_count", ())] == 3
    assert abs(samples[("offload_causal_wait_seconds_sum", ())] - 7.204) < 1e-9


def test_help_and_type_of_each_family() -> None:
    text = exposition(registry_of(Source(_figures())))[0].decode()
    assert "# TYPE offload_statements_total counter" in text
    assert "# HELP offload_statements_total Statements sent, by task, route and server." in text
    assert "# TYPE offload_replica_lag_seconds gauge" in text
    assert "# TYPE offload_causal_wait_seconds histogram" in text


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    body, content_type = exposition(
        registry_of(Source(_figures())), "application/openmetrics-text; version=1.0.0"
    )
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_the_tls_of_each_server_and_channel() -> None:
    figures = dataclasses.replace(
        _figures(),
        tls={
            "primary": {
                "version": "TLSv1.3",
                "cipher": "TLS_AES_256_GCM_SHA384",
                "cert_not_after": "2028-03-04T05:06:07+00:00",
                "cert_days_left": 824.46,
            },
            "replica0": {
                "version": None,
                "cipher": None,
                "cert_not_after": None,
                "cert_days_left": None,
            },
        },
        replication_tls={"replica0": {"ssl": True, "verify_server_cert": False}},
    )
    samples = _samples(exposition(registry_of(Source(figures)))[0])

    tls13 = (("cipher", "TLS_AES_256_GCM_SHA384"), ("server", "primary"), ("version", "TLSv1.3"))
    assert samples[("offload_server_tls_info", tls13)] == 1
    plain = (("cipher", ""), ("server", "replica0"), ("version", "none"))
    assert samples[("offload_server_tls_info", plain)] == 1
    days = {k: v for k, v in samples.items() if k[0] == "offload_server_certificate_days_left"}
    assert days == {("offload_server_certificate_days_left", (("server", "primary"),)): 824.46}
    channel = (("replica", "replica0"), ("verified", "no"))
    assert samples[("offload_replication_tls", channel)] == 1
