"""``offload bench``: start a testbed (or use one), run the benchmarks, print, write JSON.

Without ``--config`` the runner starts its own primary and replica on free
ports in a temporary directory and stops them afterwards; with ``--config`` it
uses that testbed, in scratch databases of its own.  Quick mode (the default)
uses smaller data sets and fewer samples and says so; ``--full`` runs the
sizes of the issue.  Each benchmark prints its tables as it finishes; at the
end the targets, ``--out`` JSON and (``--docs``) the generated block of
docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.console import Console

from offload.bench import (
    link_overhead,
    offload_ratio,
    replication_wait,
    routing_overhead,
    task_scaling,
    tls_cost,
    write_load,
)
from offload.bench.env import BenchContext, Progress, Servers
from offload.bench.report import (
    BenchResult,
    print_checks,
    print_result,
    render_markdown,
    update_docs,
)
from offload.config import Settings
from offload.errors import ConfigError
from offload.replication import describe_server
from offload.testbed.own import OwnTestbed

__all__ = ["BENCHMARKS", "machine", "run"]

Benchmark = Callable[[BenchContext], BenchResult]
BENCHMARKS: dict[str, Benchmark] = {
    "offload": offload_ratio.run,
    "routing": routing_overhead.run,
    "replication": replication_wait.run,
    "scaling": task_scaling.run,
    "write-load": write_load.run,
    "link": link_overhead.run,
    "tls": tls_cost.run,
}
#: the shared data set: instances, hosts (about 500 instances per host)
_SHARED = {False: (2_000, 4), True: (10_000, 20)}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def machine(server_version: str) -> dict[str, Any]:
    """This machine, as it describes itself (nothing typed in by hand)."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    mem_kib = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    os_name = next(
        (
            line.split("=", 1)[1].strip().strip('"')
            for line in _read("/etc/os-release").splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        platform.system(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "server": server_version,
        "sqlalchemy": _version("SQLAlchemy"),
        "pymysql": _version("PyMySQL"),
    }


def _describe(info: dict[str, Any]) -> str:
    return (
        f"{info['cpus']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM, {info['os']} "
        f"(kernel {info['kernel']}), server {info['server']}, Python {info['python']}, "
        f"SQLAlchemy {info['sqlalchemy']}, PyMySQL {info['pymysql']}"
    )


def _select(only: Sequence[str]) -> list[str]:
    unknown = [name for name in only if name not in BENCHMARKS]
    if unknown:
        raise ConfigError(
            f"no benchmark named {', '.join(unknown)}", hint=f"choose from {', '.join(BENCHMARKS)}"
        )
    return [name for name in BENCHMARKS if not only or name in only]


def run(
    *,
    full: bool,
    out: Path,
    settings: Settings | None = None,
    docs: Path | None = None,
    only: Sequence[str] = (),
    console: Console | None = None,
) -> int:
    """Run the benchmarks; ``settings`` names an existing testbed (else one is started)."""
    selected = _select(only)
    if console is None:
        console = Console()
        if not console.is_terminal:  # a log or a pipe: wide enough for every table
            console = Console(width=160)
    progress = Progress()
    mode = "full" if full else "quick"
    started_at = datetime.now(UTC)
    started = time.monotonic()
    progress(
        f"offload bench, {mode} mode: {', '.join(selected)}"
        + (
            ""
            if full
            else " (smaller data sets and fewer samples; BENCH=full / --full for the full sizes)"
        )
    )
    results: list[BenchResult] = []
    with ExitStack() as stack:
        testbed_dir: Path | None = None
        if settings is None:
            stack.callback(progress, "testbed stopped")
            own = stack.enter_context(OwnTestbed(replicas=1, prefix="offload-bench-"))
            servers = Servers.from_testbed(own.info)
            testbed_dir = own.info.dir
            progress(f"testbed up in {own.info.dir} ({own.info.server}, free ports)")
        else:
            servers = Servers.from_settings(settings)
            progress("using the testbed of the given config (scratch databases only)")
        instances, hosts = _SHARED[full]
        ctx = BenchContext(servers, full, progress, instances, hosts, testbed_dir=testbed_dir)
        stack.callback(ctx.close)
        described = machine(describe_server(servers.flavor, servers.version))
        for key in selected:
            began = time.monotonic()
            result = BENCHMARKS[key](ctx)
            result.seconds = time.monotonic() - began
            print_result(console, result)
            results.append(result)
    elapsed = time.monotonic() - started
    checks = [check for result in results for check in result.checks]
    print_checks(console, checks)
    console.print(f"machine: {_describe(described)}", highlight=False)
    console.print(
        f"{mode} mode, {elapsed:.0f} s in all"
        + (
            ", testbed start and seeding included"
            if settings is None
            else ", seeding included (an existing testbed)"
        ),
        highlight=False,
    )
    document = {
        "version": 1,
        "mode": mode,
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": round(elapsed, 1),
        "machine": described,
        "checks": [check.as_dict() for check in checks],
        "benchmarks": {result.key: result.as_dict() for result in results},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    progress(f"results written to {out}")
    if docs is not None:
        header = [
            f"Generated by `offload bench` ({mode} mode) on "
            f"{started_at:%Y-%m-%d %H:%M} UTC in {elapsed:.0f} s"
            + (
                ", testbed start and seeding included."
                if settings is None
                else ", seeding included, on an existing testbed."
            ),
            "",
            f"Machine: {_describe(described)}.",
        ]
        update_docs(docs, render_markdown(header, results, checks))
        progress(f"tables written to {docs}")
    return 0
