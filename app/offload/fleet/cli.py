"""``offload fleet``: its options and its command (registered by ``offload.cli``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from offload.argtypes import SECONDS, above_zero, at_least_zero, positive_int
from offload.fleet.params import FleetParams

__all__ = ["add_fleet"]


def _counts(value: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give positive host counts, e.g. 10,50,200")
    return counts


def _directory(value: str) -> str:
    if Path(value).exists() and not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value} is not a directory: name a directory")
    return value


def _command(args: argparse.Namespace, _settings: Any) -> int:
    from rich.console import Console  # noqa: PLC0415

    from offload.fleet.run import run_fleet  # noqa: PLC0415

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
    d = FleetParams()
    hosts = ",".join(map(str, d.hosts))
    add("--hosts", type=_counts, default=d.hosts, help=f"host counts (default {hosts})")
    add(
        "--instances-per-host",
        type=positive_int,
        default=d.instances_per_host,
        help=f"seeded per host (default {d.instances_per_host})",
    )
    add(
        "--time-factor",
        type=above_zero("(a time factor)"),
        default=d.time_factor,
        help=f"Nova's intervals / this (default {d.time_factor:g})",
    )
    add("--window", type=SECONDS, default=d.window, help=f"s per window (default {d.window:g})")
    add(
        "--pairs",
        type=positive_int,
        default=d.pairs,
        help=f"windows per config (default {d.pairs})",
    )
    add("--warmup", type=SECONDS, default=d.warmup, help=f"first window (default {d.warmup:g} s)")
    add(
        "--processes",
        type=positive_int,
        default=d.processes,
        help=f"workers (default {d.processes})",
    )
    add("--threads", type=positive_int, default=d.threads, help=f"per worker (default {d.threads})")
    add(
        "--write-rate",
        type=at_least_zero("writes a second"),
        default=d.write_rate,
        help=f"API boots+deletes per s (default {d.write_rate:g})",
    )
    add("--replicas", type=positive_int, default=d.replicas, help="replicas (native; default 1)")
    add("--max-lag", type=SECONDS, default=d.max_lag, help="[replica] max_lag, the knee's line")
    add("--out", type=_directory, default="fleet-results", help="directory for fleet.csv/.md/.png")
    fleet.set_defaults(handler=_command)
