"""`offload link set|cut|clear|show|remove`: the replicas' shaped links, on either backend.

Native: a proxy process per link, started by ``set``/``cut`` and put in the replica's
path.  Compose: the stack's ``link`` service, always in the replica's path, its control
port published on 127.0.0.1 (``remove`` is refused there).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from offload.errors import ConfigError, TestbedError
from offload.link.runner import Links
from offload.link.toxics import Toxics, format_duration, parse_duration, parse_rate

__all__ = ["link_command"]


def _topology(directory: Path) -> Any:
    """The testbed in ``directory``: a NativeTopology or a ComposeTopology."""
    from offload.testbed.backend import recorded_backend  # noqa: PLC0415

    backend = recorded_backend(directory)
    if backend is None:
        raise TestbedError(f"no testbed in {directory}", hint="start one with `make up`")
    if backend == "compose":
        from offload.testbed.compose import ComposeTopology  # noqa: PLC0415

        return ComposeTopology(directory)
    from offload.testbed.native import NativeTopology  # noqa: PLC0415

    return NativeTopology(directory, flavor=None)


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.delay is not None:
        changes["delay"] = parse_duration(args.delay, option="--delay")
    if args.jitter is not None:
        changes["jitter"] = parse_duration(args.jitter, option="--jitter")
    if args.rate is not None:
        changes["rate"] = None if args.rate == "off" else parse_rate(args.rate, option="--rate")
    if args.stall is not None:
        changes["stall"] = args.stall
    if not changes:
        raise ConfigError(
            "link set: nothing to set", hint="give --delay, --jitter, --rate or --stall/--flow"
        )
    Toxics().merged(changes)  # validated here: a bad value is refused before the link starts
    return changes


def _line(name: str, state: dict[str, Any]) -> str:
    toxics = Toxics(**state["toxics"]).describe()
    cut = f", cut for {state['cut_remaining']:.1f}s more" if state["cut_remaining"] else ""
    return (
        f"{name}: {toxics}{cut}; {state['bytes_down']} bytes down, {state['bytes_up']} up; "
        f"{state['connections']} connection(s) open, {state['connections_total']} made, "
        f"{state['refused']} refused, {state['resets']} reset"
    )


def link_command(args: argparse.Namespace, directory: Path) -> list[str]:
    """Run one `offload link` command; the lines to print."""
    command = args.link_command
    # what was asked is checked before the testbed is touched
    changes = _changes(args) if command == "set" else {}
    seconds = parse_duration(args.seconds, option="--for") if command == "cut" else 0.0
    topology = _topology(directory)
    runner: Links = topology.links()
    if command == "show":
        names = [args.name] if args.name else runner.names()
        if not names:
            return ["no link: `offload link set replicaN --delay 40ms` puts one in place"]
        lines = []
        for name in names:
            if not runner.answering(name):
                lines.append(f"{name}: link not running (`make up` starts it again)")
                continue
            lines.append(_line(name, runner.control(name, "GET", "/link")))
        return lines
    if command == "clear":
        return [_line(args.name, runner.control(args.name, "POST", "/clear"))]
    if command == "remove":
        topology.detach_link(args.name)
        return [f"{args.name}: replicates from the primary directly again"]
    if command == "set":
        topology.attach_link(args.name)
        return [_line(args.name, runner.control(args.name, "POST", "/toxics", changes))]
    if command == "cut":
        topology.attach_link(args.name)
        runner.control(args.name, "POST", "/cut", {"seconds": seconds})
        return [
            f"{args.name}: link cut for {format_duration(seconds)} (connections reset, "
            "new ones refused); it heals by itself"
        ]
    raise AssertionError(f"unknown link command {command}")  # argparse allows no other
