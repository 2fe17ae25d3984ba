"""``offload bench``: measured answers to what replica offload buys and costs.

One module per benchmark — ``offload_ratio`` (1), ``routing_overhead`` (2),
``replication_wait`` (3), ``task_scaling`` (4), ``write_load`` (5) — each a
``run(ctx) -> BenchResult``; ``stats`` (median, p99, ratios), ``env``
(servers, scratch databases, server-side statement counts), ``report``
(tables, JSON, docs) and ``runner`` (the command).  Nothing is imported here:
``offload bench`` loads it on demand.
"""

__all__: list[str] = []
