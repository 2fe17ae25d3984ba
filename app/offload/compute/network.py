"""Instance network identity the simulated hypervisor and the seed data agree on."""

from __future__ import annotations

import hashlib

__all__ = ["macs_for"]


def macs_for(instance_uuid: str) -> tuple[str, ...]:
    """The MAC addresses of an instance's ports: one per instance, stable for its uuid.

    ``fa:16:3e`` is the OUI Neutron uses for the ports it creates.
    """
    digest = hashlib.sha1(instance_uuid.encode("ascii"), usedforsecurity=False).digest()
    return ("fa:16:3e:{:02x}:{:02x}:{:02x}".format(*digest[:3]),)
