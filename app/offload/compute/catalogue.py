"""The catalogue of nova-compute's periodic tasks: names, releases, spacing options, gates.

The blueprint's five Juno tasks and the eight Icehouse ones, with Nova's option names.
Spacing follows oslo.service: a negative interval disables the task, 0 means
the default interval (``periodic_interval_max``).  Tasks that Nova gates inside the task
body (a timeout of 0, ``instance_usage_audit = false``...) are off while the gate is closed.

Listing the catalogue (``offload tasks``) imports no task body: each body is imported at
its task's first run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from offload.config import ComputeSettings

if TYPE_CHECKING:
    from offload.compute.context import Compute, RunReport

__all__ = ["TASKS", "TaskFunc", "TaskSpec"]

TaskFunc = Callable[["Compute", "RunReport"], None]


def _body(module: str, name: str) -> TaskFunc:
    """The task body ``offload.compute.<module>.<name>``, imported when the task first runs."""

    def run(compute: Compute, report: RunReport) -> None:
        func: TaskFunc = getattr(importlib.import_module(f"offload.compute.{module}"), name)
        func(compute, report)

    run.__name__ = run.__qualname__ = name
    return run


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
        "update_available_resource",
        _body("resource_tracker", "update_available_resource"),
        "juno",
        "update_resources_interval",
    ),
    TaskSpec(
        "_run_pending_deletes",
        _body("cleanup", "run_pending_deletes"),
        "juno",
        "instance_delete_interval",
    ),
    TaskSpec(
        "_instance_usage_audit",
        _body("usage", "instance_usage_audit"),
        "juno",
        None,
        gate=lambda o: None if o.instance_usage_audit else "instance_usage_audit is false",
    ),
    TaskSpec(
        "_poll_bandwidth_usage",
        _body("usage", "poll_bandwidth_usage"),
        "juno",
        "bandwidth_poll_interval",
    ),
    TaskSpec(
        "_poll_volume_usage",
        _body("usage", "poll_volume_usage"),
        "juno",
        "volume_usage_poll_interval",
        gate=_zero("volume_usage_poll_interval"),
    ),
    TaskSpec(
        "_sync_power_states",
        _body("lifecycle", "sync_power_states"),
        "icehouse",
        "sync_power_state_interval",
        run_immediately=True,
    ),
    TaskSpec(
        "_heal_instance_info_cache",
        _body("lifecycle", "heal_instance_info_cache"),
        "icehouse",
        "heal_instance_info_cache_interval",
        gate=_zero("heal_instance_info_cache_interval"),
    ),
    TaskSpec(
        "_poll_rebooting_instances",
        _body("lifecycle", "poll_rebooting_instances"),
        "icehouse",
        None,
        gate=_zero("reboot_timeout"),
    ),
    TaskSpec(
        "_poll_rescued_instances",
        _body("lifecycle", "poll_rescued_instances"),
        "icehouse",
        None,
        gate=_zero("rescue_timeout"),
    ),
    TaskSpec(
        "_poll_unconfirmed_resizes",
        _body("lifecycle", "poll_unconfirmed_resizes"),
        "icehouse",
        None,
        gate=_zero("resize_confirm_window"),
    ),
    TaskSpec(
        "_poll_shelved_instances",
        _body("lifecycle", "poll_shelved_instances"),
        "icehouse",
        "shelved_poll_interval",
        gate=_zero("shelved_offload_time"),
    ),
    TaskSpec(
        "_reclaim_queued_deletes",
        _body("cleanup", "reclaim_queued_deletes"),
        "icehouse",
        None,
        gate=_zero("reclaim_instance_interval"),
    ),
    TaskSpec(
        "_cleanup_running_deleted_instances",
        _body("cleanup", "cleanup_running_deleted_instances"),
        "icehouse",
        "running_deleted_instance_poll_interval",
        gate=lambda o: (
            "running_deleted_instance_action is noop"
            if o.running_deleted_instance_action == "noop"
            else None
        ),
    ),
)
