"""``offload lag matrix``: one write load and task schedule across a grid of link RTT,
write rate and the servers' applier knobs (docs/experiments.md)."""
