"""The shaped replication link: a user-space TCP proxy between a replica and its primary.

``toxics`` is the pure arithmetic (delay, jitter, rate, stall, cut) on an injected
clock; ``proxy`` the asyncio proxy process and its loopback HTTP/JSON control;
``runner`` starts and stops the proxies of a testbed and talks to them.
"""

from __future__ import annotations

__all__: list[str] = []
