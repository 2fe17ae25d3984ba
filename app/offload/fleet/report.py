"""fleet.csv, fleet.md and fleet.png from the sweep's rows (matplotlib: the ``lab`` extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.fleet.stats import knee

if TYPE_CHECKING:
    from offload.fleet.run import FleetParams, Sweep

__all__ = ["write_outputs"]


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _pairs(rows: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    by = {(r["hosts"], r["config"]): r for r in rows}
    return [(h, by[(h, "replica")], by[(h, "primary")]) for h in sorted({r["hosts"] for r in rows})]


def write_outputs(
    out: Path,
    result: Sweep,
    params: FleetParams,
    *,
    server: str,
    seconds: float,
) -> None:
    """fleet.csv, fleet.md, fleet.png and fleet.json (rows, knee, per-task times) in ``out``."""
    from offload.fleet.run import write_csv  # noqa: PLC0415

    rows, tasks, rss_end, seeded = result.rows, result.tasks, result.rss_end, result.seeded
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "fleet.csv", rows)
    pairs = _pairs(rows)
    max_lag_ms = params.max_lag * 1000
    the_knee = knee([(h, r["replica_lag_p99_ms"]) for h, r, _ in pairs], max_lag_ms)
    _plot(out / "fleet.png", pairs, max_lag_ms, the_knee, params.replicas)
    lines = [
        "# offload fleet: what replica offload does for the primary",
        "",
        f"Measured by `offload fleet` in {seconds:.0f} s on {server}, {params.replicas} "
        f"replica(s); {seeded[0]:,} instances seeded ({params.instances_per_host} per host) "
        f"in {seeded[1]:.0f} s.  Nova's default intervals divided by {params.time_factor:g}; "
        f"{params.pairs} windows of {params.window:g} s per configuration, alternating, after "
        f"a {params.warmup:g} s warm-up; API writes at {params.write_rate:g}/s; "
        f"{params.processes} processes.  The machine is shared and loaded: absolute figures "
        "are upper bounds.",
        "",
        "| hosts | primary SELECTs/s (replica / primary only) | task data SELECTs/s on "
        "primary | primary CPU s/s | replica CPU s/s | lag p99 ms | overruns | "
        "fallbacks | run p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for hosts, rep, pri in pairs:
        lines.append(
            f"| {hosts} | {_f(rep['primary_selects_per_s'])} / "
            f"{_f(pri['primary_selects_per_s'])} | {_f(rep['primary_data_selects_per_s'])} / "
            f"{_f(pri['primary_data_selects_per_s'])} | {_f(rep['primary_cpu_s_per_s'])} / "
            f"{_f(pri['primary_cpu_s_per_s'])} | {_f(rep['replica_cpu_s_per_s'])} / "
            f"{_f(pri['replica_cpu_s_per_s'])} | {_f(rep['replica_lag_p99_ms'])} | "
            f"{rep['task_overruns']} / {pri['task_overruns']} | {rep['fallbacks']} | "
            f"{_f(rep['task_run_p99_ms'])} / {_f(pri['task_run_p99_ms'])} |"
        )
    lines += [
        "",
        "Pairs are *with replica / primary only*.  SELECTs/s: the primary's `Com_select`; task "
        "data SELECTs: the primary's own statement history (performance_schema), statements "
        "tagged by a task on a data-read route; CPU: the server process's utime+stime from "
        "/proc per second of window.",
        "",
        (
            f"**Knee**: the replica's lag p99 first exceeds max_lag ({max_lag_ms:g} ms) at "
            f"{the_knee} hosts."
            if the_knee is not None
            else f"**Knee**: not reached: the replica's lag p99 stays within max_lag "
            f"({max_lag_ms:g} ms) up to {max(params.hosts)} hosts."
        ),
        "",
        "Memory per simulated host (RSS growth of the worker processes / hosts): "
        + ", ".join(
            f"{h} hosts: {r['rss_per_host_kib']:g} KiB built, {rss_end[h]:.0f} KiB after the run"
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
    axes[2].set_title("replica lag p99 ms (with replica)")
    axes[2].set_xlabel("compute hosts")
    axes[2].legend()
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
