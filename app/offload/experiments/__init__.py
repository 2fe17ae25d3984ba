"""Replication-lag experiments: inject lag, run the tasks under write load, measure, plot.

scenarios  the spec language and TOML scenario files (pure)
workload   the writer that mutates instance state on the primary at a rate
recorder   samples every 100 ms and one row per task run (route, staleness...)
records    the rows and their CSV files
summary    percentiles, shares, counts (pure) → summary.json / summary.md
plot       lag.png (matplotlib, Agg)
injector   pause / delay / burst / kill-replica on real servers
provision  an own testbed, and a database of the experiment's own
runner     one experiment, start to finish
compare    experiments side by side
commands   the ``offload lag`` commands (progress bar, final table)

See docs/experiments.md.
"""

from __future__ import annotations

__all__: list[str] = []
