"""Testbeds: a primary and GTID replicas, natively or with Docker Compose.

The names below load with their module on first use (PEP 562), so that importing a light
module of this package (``offload.testbed.servers``, ``.backend``) does not load SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offload.testbed.topology import Credentials, TestbedInfo, Topology, write_config

__all__ = ["Credentials", "TestbedInfo", "Topology", "write_config"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("offload.testbed.topology"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
