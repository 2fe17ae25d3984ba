"""fleet.csv, fleet.md and fleet.png from the sweep's rows (matplotlib: the ``lab`` extra)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.fleet.stats import knee

if TYPE_CHECKING:
    from offload.fleet.params import FleetParams
    from offload.fleet.run import Sweep

__all__ = ["pairs_of", "write_outputs"]


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def pairs_of(rows: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(hosts, the replica row, the primary-only row) per host count, in order."""
    by = {(r["hosts"], r["config"]): r for r in rows}
    return [(h, by[(h, "replica")], by[(h, "primary")]) for h in sorted({r["hosts"] for r in rows})]


def write_outputs(
    out: Path,
    result: Sweep,
    params: FleetParams,
    *,
    server: str,
    seconds: float,
    load: tuple[float, float] | None = None,
) -> None:
    """fleet.csv, fleet.md, fleet.png and fleet.json (rows, knee, per-task times) in ``out``.

    ``load``: the machine's 1-minute load average when the run began and when it ended.
    """
    from offload.fleet.run import write_csv  # noqa: PLC0415

    rows, tasks = result.rows, result.tasks
    seeded_instances = sum(n for n, _ in result.seeded.values())
    seeded_seconds = sum(t for _, t in result.seeded.values())
    cores = os.cpu_count() or 0
    machine = (
        f"{cores} cores, load average {load[0]:.1f} at the start and {load[1]:.1f} at the end"
        if load is not None
        else f"{cores} cores"
    )
    saturated = [
        (h, r["task_missed"] + p["task_missed"], r["task_runs"] + p["task_runs"])
        for h, r, p in pairs_of(rows)
        if r["task_missed"] + p["task_missed"]
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "fleet.csv", rows)
    pairs = pairs_of(rows)
    max_lag_ms = params.max_lag * 1000
    the_knee = knee([(h, r["replica_lag_p99_ms"]) for h, r, _ in pairs], max_lag_ms)
    largest = max(h for h, _, _ in pairs)
    _plot(out / "fleet.png", pairs, max_lag_ms, the_knee, params.replicas)
    lines = [
        "# offload fleet: what replica offload does for the primary",
        "",
        f"Measured by `offload fleet` in {seconds:.0f} s on {server}, {params.replicas} "
        f"replica(s), on a machine of {machine}; {seeded_instances:,} instances seeded "
        f"({params.instances_per_host} per host, as the fleet grew) in {seeded_seconds:.0f} s, "
        "replication included.  Nova's default intervals divided by "
        f"{params.time_factor:g} (H hosts send the statements of {params.time_factor:g} x H "
        f"hosts on Nova's own intervals); {params.pairs} windows of {params.window:g} s per "
        f"configuration, alternating, after a {params.warmup:g} s warm-up; API writes at "
        f"{params.write_rate:g}/s; {params.processes} processes.  Other work shared the "
        "machine: absolute figures are upper bounds.",
        "",
        "| hosts | primary SELECTs/s (replica / primary only) | task data SELECTs/s on "
        "primary | primary CPU s/s | replica CPU s/s | lag p99 ms | overruns | missed | "
        "fallbacks | run p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for hosts, rep, pri in pairs:
        lines.append(
            f"| {hosts} | {_f(rep['primary_selects_per_s'])} / "
            f"{_f(pri['primary_selects_per_s'])} | {_f(rep['primary_data_selects_per_s'])} / "
            f"{_f(pri['primary_data_selects_per_s'])} | {_f(rep['primary_cpu_s_per_s'])} / "
            f"{_f(pri['primary_cpu_s_per_s'])} | {_f(rep['replica_cpu_s_per_s'])} / "
            f"{_f(pri['replica_cpu_s_per_s'])} | {_f(rep['replica_lag_p99_ms'])} | "
            f"{rep['task_overruns']} / {pri['task_overruns']} | "
            f"{rep['task_missed']} / {pri['task_missed']} | {rep['fallbacks']} | "
            f"{_f(rep['task_run_p99_ms'])} / {_f(pri['task_run_p99_ms'])} |"
        )
    lines += [
        "",
        "Pairs are *with replica / primary only*.  SELECTs/s: the primary's `Com_select`; task "
        "data SELECTs: the primary's own statement history (performance_schema), statements "
        "tagged by a task on a data-read route; CPU: the server process's utime+stime from "
        "/proc per second of window.",
        "",
        _knee_line(the_knee, max_lag_ms, largest, params.replicas),
        "",
        (
            "**Saturation**: runs missed (due, but still queued for a thread of the "
            "simulator when their window ended) at "
            + ", ".join(f"{h} hosts ({m} missed, {n} run)" for h, m, n in saturated)
            + ".  Where that is more than a few, the simulator on this machine could not "
            "keep up: the figures there are what it could send, less than the fleet's load."
            if saturated
            else "**Saturation**: none: every run due in a window started in it."
        ),
        "",
        "**Errors** (runs that raised, by exception; with replica | primary only): "
        + (
            ", ".join(
                f"{h} hosts: {r['task_error_kinds'] or '-'} | {p['task_error_kinds'] or '-'}"
                for h, r, p in pairs
                if r["task_errors"] or p["task_errors"]
            )
            or "none"
        )
        + ".",
        "",
        "Memory per simulated host (RSS growth of the worker processes / hosts; the workers' "
        "whole RSS at the end): "
        + ", ".join(
            f"{h} hosts: {r['rss_per_host_kib']:g} KiB built, {r['rss_end_per_host_kib']:g} KiB "
            f"after the run ({r['workers_rss_mib']:g} MiB)"
            for h, r, _ in pairs
        )
        + ".",
        "",
        "## Task run time per task (ms, p50 / p99; with replica | primary only)",
        "",
    ]
    for hosts in sorted(tasks):
        lines.append(
            f"**{hosts} hosts**: "
            + "; ".join(
                f"{name} {_f(_r(rep[0]))}/{_f(_r(rep[1]))} | "
                f"{_f(_r(tasks[hosts]['primary'].get(name, (None, None))[0]))}/"
                f"{_f(_r(tasks[hosts]['primary'].get(name, (None, None))[1]))}"
                for name, rep in tasks[hosts]["replica"].items()
            )
        )
        lines.append("")
    (out / "fleet.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "fleet.json").write_text(
        json.dumps({"rows": rows, "knee": the_knee, "tasks": tasks}, indent=2) + "\n",
        encoding="utf-8",
    )


def _knee_line(the_knee: int | None, max_lag_ms: float, largest: int, replicas: int) -> str:
    with_what = "one replica" if replicas == 1 else f"{replicas} replicas"
    if the_knee is not None:
        return (
            f"**Knee**: with {with_what}, the lag p99 first exceeds max_lag ({max_lag_ms:g} ms) "
            f"at {the_knee} hosts."
        )
    return (
        f"**Knee**: not reached up to {largest} hosts: with {with_what}, the lag p99 stays "
        f"within max_lag ({max_lag_ms:g} ms) at every count (`--hosts` with larger counts "
        "looks further)."
    )


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _plot(
    path: Path,
    pairs: list[tuple[int, dict[str, Any], dict[str, Any]]],
    max_lag_ms: float,
    the_knee: int | None,
    replicas: int,
) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    hosts = [h for h, _, _ in pairs]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, key, title in (
        (axes[0], "primary_selects_per_s", "primary SELECTs/s (Com_select)"),
        (axes[1], "primary_cpu_s_per_s", "primary CPU s/s (/proc)"),
    ):
        for rows, label in (
            ([r for _, r, _ in pairs], f"with {replicas} replica(s)"),
            ([p for _, _, p in pairs], "primary only"),
        ):
            values = [row[key] for row in rows]
            ax.plot(
                hosts, [v if v is not None else float("nan") for v in values], "o-", label=label
            )
        ax.set_title(title)
        ax.set_xlabel("compute hosts")
        ax.legend()
    lag = [r["replica_lag_p99_ms"] for _, r, _ in pairs]
    axes[2].plot(hosts, [v if v is not None else float("nan") for v in lag], "o-", label="lag p99")
    axes[2].axhline(max_lag_ms, color="red", linestyle="--", label="max_lag")
    if the_knee is not None:
        axes[2].axvline(the_knee, color="black", linestyle=":", label=f"knee: {the_knee} hosts")
    else:
        axes[2].text(
            0.03,
            0.6,
            f"knee not reached up to {hosts[-1]} hosts",
            transform=axes[2].transAxes,
        )
    axes[2].set_title("replica lag p99 ms (with replica)")
    axes[2].set_xlabel("compute hosts")
    axes[2].legend()
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
