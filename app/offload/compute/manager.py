"""ComputeManager: nova-compute's periodic tasks for one host, and what each run did.

The tasks are the catalogue's (``offload.compute.catalogue``).  Tasks whose gate is
closed are not scheduled; ``run()`` still runs them and reports why they did nothing.

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

from offload.compute.catalogue import TASKS, TaskSpec
from offload.compute.context import Compute, RunReport
from offload.errors import ConnectionLost, Deadlock, ReadOnlyRefused
from offload.periodic import PeriodicTask, UnknownTask
from offload.schema import Instance
from offload.staleness import SkipRun
from offload.tracing import QueryTrace, StatementRecord, current_task, task_scope

__all__ = ["ComputeManager", "summarize"]

log = logging.getLogger("offload.compute")


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
        # a run that lost its connection (primary restarting, an endpoint moved), was
        # chosen as a deadlock victim or had a write refused by a primary gone read-only
        # (a switchover) is run again: safe, because every write is guarded
        self._retry = Retrying(
            retry=retry_if_exception_type((ConnectionLost, Deadlock, ReadOnlyRefused)),
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
