"""``offload fleet``: its options and its command (registered by ``offload.cli``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_fleet"]


def _counts(value: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give positive host counts, e.g. 10,50,200")
    return counts


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number above 0")
    return number


def _rate(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: give 0 (no API writes) or more per second")
    return number


def _directory(value: str) -> str:
    if Path(value).exists() and not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value} is not a directory: name a directory")
    return value


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give a whole number of at least 1")
    return int(value)


def _command(args: argparse.Namespace, _settings: Any) -> int:
    from rich.console import Console  # noqa: PLC0415

    from offload.fleet.run import FleetParams, run_fleet  # noqa: PLC0415

    console = Console(stderr=True, highlight=False)
    params = FleetParams(
        hosts=args.hosts,
        instances_per_host=args.instances_per_host,
        time_factor=args.time_factor,
        window=args.window,
        pairs=args.pairs,
        warmup=args.warmup,
        processes=args.processes,
        threads=args.threads,
        write_rate=args.write_rate,
        replicas=args.replicas,
        max_lag=args.max_lag,
    )
    run_fleet(params, Path(args.out), console.print)
    print((Path(args.out) / "fleet.md").read_text(encoding="utf-8"))  # noqa: T201
    return 0


def add_fleet(commands: Any) -> None:
    fleet = commands.add_parser(
        "fleet", help="N simulated compute hosts: the primary's load with and without the replica"
    )
    add = fleet.add_argument
    add("--hosts", type=_counts, default=(10, 50, 200), help="host counts (default 10,50,200)")
    add("--instances-per-host", type=_count, default=500, help="seeded per host (default 500)")
    add("--time-factor", type=_number, default=20.0, help="Nova intervals / this (default 20)")
    add("--window", type=_number, default=15.0, help="seconds per window (default 15)")
    add("--pairs", type=_count, default=2, help="windows per configuration (default 2)")
    add("--warmup", type=_number, default=5.0, help="unmeasured first window (default 5 s)")
    add("--processes", type=_count, default=2, help="worker processes (default 2)")
    add("--threads", type=_count, default=8, help="task threads per process (default 8)")
    add("--write-rate", type=_rate, default=10.0, help="API boots+deletes per s (default 10)")
    add("--replicas", type=_count, default=1, help="replicas (native; default 1)")
    add("--max-lag", type=_number, default=1.0, help="[replica] max_lag, the knee's line")
    add("--out", type=_directory, default="fleet-results", help="directory for fleet.csv/.md/.png")
    fleet.set_defaults(handler=_command)
