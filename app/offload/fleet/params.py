"""What a sweep runs: host counts, data per host, time factor, windows (the defaults' one home).

Import-light (no SQLAlchemy): ``offload fleet --help`` shows these defaults.

The defaults are the sweep ``make fleet`` runs within 10 minutes on a 2-core machine
(docs/fleet.md says why the time factor is 2: a larger one saturates the simulator
before the servers, and a count whose runs are *missed* says so in the note).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FleetParams"]


@dataclass(frozen=True, slots=True)
class FleetParams:
    hosts: tuple[int, ...] = (10, 50, 200)
    instances_per_host: int = 500
    time_factor: float = 2.0
    window: float = 25.0
    pairs: int = 2
    warmup: float = 8.0
    processes: int = 2
    threads: int = 8
    write_rate: float = 10.0
    replicas: int = 1
    max_lag: float = 1.0
    seed: int = 0
    #: hosts seeded per transaction: the replica applies one while the next is planned
    seed_block: int = 25
