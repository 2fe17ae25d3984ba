"""A compute host assembled from its settings: hypervisor, notifier, task manager."""

from __future__ import annotations

from pathlib import Path

from offload.compute.context import Compute
from offload.compute.driver import FakeDriver
from offload.compute.manager import ComputeManager
from offload.compute.notifier import JsonLinesNotifier, MemoryNotifier, Notifier
from offload.config import Settings
from offload.db import Database

__all__ = ["build_manager"]


def _notifier(settings: Settings) -> Notifier:
    if settings.service.notifications_file:
        return JsonLinesNotifier(settings.host, Path(settings.service.notifications_file))
    return MemoryNotifier(settings.host)


def build_manager(settings: Settings, db: Database) -> ComputeManager:
    """The compute host of ``settings``: its hypervisor, notifier and tasks."""
    driver = FakeDriver(settings.host, seed=settings.service.driver_seed)
    compute = Compute(
        host=settings.host,
        db=db,
        driver=driver,
        notifier=_notifier(settings),
        options=settings.compute,
    )
    return ComputeManager(compute)
