"""ComputeManager: nova-compute's periodic tasks for one host, and what each run did.

The catalogue (DESIGN §6) — the blueprint's five Juno tasks and the eight
Icehouse ones — with Nova's option names.  Spacing follows oslo.service: a
negative interval disables the task, 0 means the default interval
(``periodic_interval_max``).  Tasks that Nova gates inside the task body
(a timeout of 0, ``instance_usage_audit = false``...) are not scheduled while
the gate is closed; ``run()`` still runs them and reports why they did nothing.

Every run is tagged with its task and a run id, and its statements are
collected, so a run's report says which route and which server each statement
used.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import select
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from offload.compute.cleanup import (
    cleanup_running_deleted_instances,
    reclaim_queued_deletes,
    run_pending_deletes,
)
from offload.compute.context import Compute, RunReport
from offload.compute.lifecycle import (
    heal_instance_info_cache,
    poll_rebooting_instances,
    poll_rescued_instances,
    poll_shelved_instances,
    poll_unconfirmed_resizes,
    sync_power_states,
)
from offload.compute.resource_tracker import update_available_resource
from offload.compute.usage import instance_usage_audit, poll_bandwidth_usage, poll_volume_usage
from offload.config import ComputeSettings
from offload.errors import ConnectionLost, Deadlock
from offload.periodic import PeriodicTask, UnknownTask
from offload.routing import SkipRun
from offload.schema import Instance
from offload.tracing import QueryTrace, StatementRecord, current_task, task_scope

__all__ = ["TASKS", "ComputeManager", "TaskSpec", "summarize"]

log = logging.getLogger("offload.compute")
TaskFunc = Callable[[Compute, RunReport], None]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One periodic task of the catalogue."""

    name: str
    func: TaskFunc
    release: str  # "juno" (the blueprint's five) or "icehouse"
    #: the option holding its spacing (None: the default interval)
    spacing_option: str | None
    run_immediately: bool = False
    #: the reason the task is off under these options, or None when it is on
    gate: Callable[[ComputeSettings], str | None] = lambda _: None

    def spacing(self, options: ComputeSettings) -> float | None:
        """Seconds between runs; None when the spacing option disables the task."""
        value = int(getattr(options, self.spacing_option)) if self.spacing_option else 0
        if value < 0:
            return None
        return float(value or options.periodic_interval_max)

    def off_because(self, options: ComputeSettings) -> str | None:
        if self.spacing(options) is None:
            return f"{self.spacing_option} < 0"
        return self.gate(options)


def _zero(option: str) -> Callable[[ComputeSettings], str | None]:
    return lambda o: f"{option} is {getattr(o, option)}" if getattr(o, option) <= 0 else None


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        "update_available_resource", update_available_resource, "juno", "update_resources_interval"
    ),
    TaskSpec("_run_pending_deletes", run_pending_deletes, "juno", "instance_delete_interval"),
    TaskSpec(
        "_instance_usage_audit",
        instance_usage_audit,
        "juno",
        None,
        gate=lambda o: None if o.instance_usage_audit else "instance_usage_audit is false",
    ),
    TaskSpec("_poll_bandwidth_usage", poll_bandwidth_usage, "juno", "bandwidth_poll_interval"),
    TaskSpec(
        "_poll_volume_usage",
        poll_volume_usage,
        "juno",
        "volume_usage_poll_interval",
        gate=_zero("volume_usage_poll_interval"),
    ),
    TaskSpec(
        "_sync_power_states",
        sync_power_states,
        "icehouse",
        "sync_power_state_interval",
        run_immediately=True,
    ),
    TaskSpec(
        "_heal_instance_info_cache",
        heal_instance_info_cache,
        "icehouse",
        "heal_instance_info_cache_interval",
        gate=_zero("heal_instance_info_cache_interval"),
    ),
    TaskSpec(
        "_poll_rebooting_instances",
        poll_rebooting_instances,
        "icehouse",
        None,
        gate=_zero("reboot_timeout"),
    ),
    TaskSpec(
        "_poll_rescued_instances",
        poll_rescued_instances,
        "icehouse",
        None,
        gate=_zero("rescue_timeout"),
    ),
    TaskSpec(
        "_poll_unconfirmed_resizes",
        poll_unconfirmed_resizes,
        "icehouse",
        None,
        gate=_zero("resize_confirm_window"),
    ),
    TaskSpec(
        "_poll_shelved_instances",
        poll_shelved_instances,
        "icehouse",
        "shelved_poll_interval",
        gate=_zero("shelved_offload_time"),
    ),
    TaskSpec(
        "_reclaim_queued_deletes",
        reclaim_queued_deletes,
        "icehouse",
        None,
        gate=_zero("reclaim_instance_interval"),
    ),
    TaskSpec(
        "_cleanup_running_deleted_instances",
        cleanup_running_deleted_instances,
        "icehouse",
        "running_deleted_instance_poll_interval",
        gate=lambda o: (
            "running_deleted_instance_action is noop"
            if o.running_deleted_instance_action == "noop"
            else None
        ),
    ),
)


def summarize(records: list[StatementRecord]) -> dict[str, Any]:
    """Statements by route and by server, as a run report shows them."""
    by_route: dict[str, Counter[str]] = defaultdict(Counter)
    by_target: dict[str, Counter[str]] = defaultdict(Counter)
    servers: dict[str, set[str]] = defaultdict(set)
    for record in records:
        route = record.route or "none"
        by_route[route][record.verb] += 1
        by_target[record.target][record.verb] += 1
        servers[route].add(str(record.server or "?"))
    return {
        "by_route": {k: dict(v) for k, v in sorted(by_route.items())},
        "by_target": {k: dict(v) for k, v in sorted(by_target.items())},
        "servers": {k: sorted(v) for k, v in sorted(servers.items())},
        "selects_on_primary": by_target.get("primary", Counter())["SELECT"],
        "selects_on_replicas": sum(c["SELECT"] for t, c in by_target.items() if t != "primary"),
    }


def current_task_name() -> str:
    context = current_task()
    return context.task if context else "-"


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What changed between two RoutingStats.for_task() snapshots."""
    result: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            changed = {k: v - before.get(key, {}).get(k, 0) for k, v in value.items()}
            result[key] = {k: v for k, v in changed.items() if v}
        else:
            result[key] = round(value - before.get(key, 0), 6)
    return result


class ComputeManager:
    """The periodic tasks of one compute host and the reports of their runs."""

    def __init__(
        self,
        compute: Compute,
        *,
        retry_attempts: int = 8,
        retry_budget: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.compute = compute
        # a run that lost its connection (primary restarting) or was chosen as a
        # deadlock victim is run again: safe, because every write is guarded
        self._retry = Retrying(
            retry=retry_if_exception_type((ConnectionLost, Deadlock)),
            stop=stop_after_attempt(retry_attempts) | stop_after_delay(retry_budget),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            sleep=sleep,
            reraise=True,
            before_sleep=self._log_retry,
        )
        self.last_reports: dict[str, RunReport] = {}
        self.totals: dict[str, Counter[str]] = defaultdict(Counter)
        self._specs = {spec.name: spec for spec in TASKS}

    def spec(self, name: str) -> TaskSpec:
        """A task by name, with or without its leading underscore."""
        for candidate in (name, f"_{name}", name.lstrip("_")):
            if candidate in self._specs:
                return self._specs[candidate]
        raise UnknownTask(
            f"no periodic task named {name!r}", hint=f"known tasks: {', '.join(self._specs)}"
        )

    def init_host(self) -> None:
        """Tell the hypervisor which VMs run here (Nova's init_host reads the primary)."""
        c = self.compute
        with task_scope("init_host"), c.db.reader() as session:
            for uuid, deleted in session.execute(
                select(Instance.uuid, Instance.deleted).where(
                    Instance.host == c.host, Instance.vm_state.is_distinct_from("shelved_offloaded")
                )
            ):
                # a deleted instance's VM may still run: that is what
                # _cleanup_running_deleted_instances is for (deleted NULL: not live, as
                # for Nova, whose init_host lists deleted = 0 only)
                if deleted == 0 or c.driver.instance_exists(uuid):
                    c.driver.plug(uuid)

    @contextmanager
    def _recorded(self, name: str) -> Iterator[tuple[RunReport, QueryTrace]]:
        with task_scope(name) as scope, self.compute.db.tracer.recording() as trace:
            yield (
                RunReport(task=name, host=self.compute.host, run=scope.run, started_at=time.time()),
                trace,
            )

    def run(self, name: str) -> RunReport:
        """Run one task now; its report includes where its statements went."""
        spec = self.spec(name)
        with self._recorded(spec.name) as (report, trace):
            started = time.perf_counter()
            routing_before = self.compute.db.routing.for_task(spec.name)
            try:
                for attempt in self._retry.copy():
                    with attempt:
                        report.details["attempts"] = attempt.retry_state.attempt_number
                        spec.func(self.compute, report)
            except SkipRun as skip:  # lag_policy = skip: a decision, not a failure
                report.skipped = skip.message
            except Exception as exc:
                report.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                raise
            finally:
                report.duration = time.perf_counter() - started
                routing = self.compute.db.routing
                delta = _delta(routing_before, routing.for_task(spec.name))
                reasons = {*delta.get("fallbacks", {}), *delta.get("skips", {})}
                if reasons:  # the cause in words, with the fix (no_heartbeat: what to run)
                    delta["why"] = routing.why(reasons)
                report.details["routing"] = delta
                records = [r for r in trace.records if r.run == report.run]
                report.details["statements"] = summarize(records)
                self._account(report, records)
        return report

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s: attempt %d failed (%s); trying again",
            current_task_name(),
            state.attempt_number,
            str(error).splitlines()[0] if error else "?",
        )

    def _account(self, report: RunReport, records: list[StatementRecord]) -> None:
        self.last_reports[report.task] = report
        totals = self.totals[report.task]
        totals["runs"] += 1
        totals["rejected"] += report.rejected
        totals["written"] += report.written
        totals["failures"] += report.error is not None
        for record in records:
            totals[f"statements.{record.route}.{record.verb}"] += 1

    def periodic_tasks(self) -> list[PeriodicTask]:
        """The scheduler's task list: every task, disabled ones marked so."""
        options = self.compute.options
        tasks = []
        for spec in TASKS:
            off = spec.off_because(options)
            spacing = spec.spacing(options) or 0.0
            tasks.append(
                PeriodicTask(
                    spec.name,
                    partial(self.run, spec.name),
                    spacing,
                    run_immediately=spec.run_immediately,
                    enabled=off is None,
                    description=f"{spec.release}; " + (f"off: {off}" if off else "on"),
                )
            )
        return tasks
