"""The task catalogue: names, releases, and oslo.service's spacing rules over Nova's options."""

from __future__ import annotations

from typing import Any

import pytest

from offload.compute.catalogue import TASKS
from offload.config import ComputeSettings

JUNO = {
    "update_available_resource",
    "_run_pending_deletes",
    "_instance_usage_audit",
    "_poll_bandwidth_usage",
    "_poll_volume_usage",
}
ICEHOUSE = {
    "_sync_power_states",
    "_heal_instance_info_cache",
    "_poll_rebooting_instances",
    "_poll_rescued_instances",
    "_poll_unconfirmed_resizes",
    "_poll_shelved_instances",
    "_reclaim_queued_deletes",
    "_cleanup_running_deleted_instances",
}
SPECS = {spec.name: spec for spec in TASKS}


def test_catalogue_has_the_five_juno_and_eight_icehouse_tasks() -> None:
    assert {s.name for s in TASKS if s.release == "juno"} == JUNO
    assert {s.name for s in TASKS if s.release == "icehouse"} == ICEHOUSE


def test_nova_defaults() -> None:
    options = ComputeSettings()
    spacing = {name: spec.spacing(options) for name, spec in SPECS.items()}
    assert spacing["_run_pending_deletes"] == 300
    assert spacing["_poll_bandwidth_usage"] == 600
    assert spacing["_sync_power_states"] == 600
    assert spacing["_poll_shelved_instances"] == 3600
    assert spacing["_cleanup_running_deleted_instances"] == 1800
    assert spacing["update_available_resource"] == 60  # 0: the default interval
    assert spacing["_poll_rebooting_instances"] == 60  # no spacing option: every tick
    off = {name for name, spec in SPECS.items() if spec.off_because(options)}
    assert off == {
        "_instance_usage_audit",
        "_poll_volume_usage",
        "_poll_rebooting_instances",
        "_poll_rescued_instances",
        "_poll_unconfirmed_resizes",
        "_poll_shelved_instances",
        "_reclaim_queued_deletes",
    }
    assert SPECS["_sync_power_states"].run_immediately


def test_negative_interval_disables_and_zero_means_the_default_tick() -> None:
    options = ComputeSettings(
        instance_delete_interval=-1, bandwidth_poll_interval=0, periodic_interval_max=15
    )
    assert SPECS["_run_pending_deletes"].spacing(options) is None
    assert SPECS["_run_pending_deletes"].off_because(options) == "instance_delete_interval < 0"
    assert SPECS["_poll_bandwidth_usage"].spacing(options) == 15
    assert SPECS["_poll_bandwidth_usage"].off_because(options) is None


@pytest.mark.parametrize(
    ("task", "option", "value"),
    [
        ("_poll_volume_usage", "volume_usage_poll_interval", 30),
        ("_poll_rebooting_instances", "reboot_timeout", 120),
        ("_poll_rescued_instances", "rescue_timeout", 120),
        ("_poll_unconfirmed_resizes", "resize_confirm_window", 120),
        ("_poll_shelved_instances", "shelved_offload_time", 120),
        ("_reclaim_queued_deletes", "reclaim_instance_interval", 120),
        ("_instance_usage_audit", "instance_usage_audit", True),
    ],
)
def test_gates_open_with_their_option(task: str, option: str, value: object) -> None:
    assert SPECS[task].off_because(ComputeSettings()) is not None
    opened: dict[str, Any] = {option: value}
    assert SPECS[task].off_because(ComputeSettings(**opened)) is None


def test_running_deleted_noop_closes_the_gate() -> None:
    spec = SPECS["_cleanup_running_deleted_instances"]
    assert spec.off_because(ComputeSettings()) is None
    assert "noop" in str(spec.off_because(ComputeSettings(running_deleted_instance_action="noop")))
