"""A deterministic simulated hypervisor for one compute host.

``FakeDriver`` plays Nova's virt driver for the periodic tasks.  Method names and
return shapes follow Nova's ``nova/virt/driver.py`` API where one exists, but
instances are named by uuid rather than passed as objects:

* ``get_available_nodes`` / ``get_available_resource(nodename)`` — the resource
  tracker's view of the host (Nova's keys; usage is 0, the tracker computes it);
* ``get_info(uuid)`` — a :class:`PowerState` (Nova's power_state codes);
* ``list_instance_uuids`` / ``instance_exists`` / ``destroy`` — running VMs, and
  VMs of deleted instances that are still running;
* ``get_all_bw_counters`` / ``get_all_volume_usage`` — monotonic counters that
  occasionally reset (a VM reboot), as the usage polls must handle;
* ``delete_instance_files`` — fails now and then, as ``_run_pending_deletes``
  must handle.

Everything random is drawn from a stream derived with SHA-256 from the seed and
a key (``("bw", uuid, mac, poll number)``, ``("power", uuid)``, ...), never from
the global ``random`` module or ``hash()``.  So the same seed and the same calls
give the same results in any process, and a key's results do not depend on how
calls for other keys interleave with it.  Calls that ask the hypervisor to act
are appended to :attr:`FakeDriver.calls`; nothing sleeps.
"""

from __future__ import annotations

import enum
import hashlib
import json
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypedDict

from offload.compute.network import macs_for

__all__ = [
    "HYPERVISOR_TYPE",
    "HYPERVISOR_VERSION",
    "AvailableResource",
    "BandwidthCounters",
    "FakeDriver",
    "PowerState",
    "VolumeCounters",
]

#: ``hypervisor_type`` reported by Nova's fake driver
HYPERVISOR_TYPE = "fake"
#: ``hypervisor_version`` as Nova encodes "1.0" (major * 1000 + minor)
HYPERVISOR_VERSION = 1000


class PowerState(enum.IntEnum):
    """Nova's power states (``nova/compute/power_state.py``, libvirt's codes)."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


class AvailableResource(TypedDict):
    """``get_available_resource``'s answer, Nova's keys; cpu_info, supported_instances are JSON."""

    vcpus: int
    memory_mb: int
    local_gb: int
    vcpus_used: int
    memory_mb_used: int
    local_gb_used: int
    hypervisor_type: str
    hypervisor_version: int
    hypervisor_hostname: str
    cpu_info: str
    disk_available_least: int
    supported_instances: str


class BandwidthCounters(TypedDict):
    """One row of ``get_all_bw_counters``: one interface of one instance (Nova's keys)."""

    uuid: str
    mac_address: str
    bw_in: int
    bw_out: int


class VolumeCounters(TypedDict):
    """One row of ``get_all_volume_usage`` (Nova's keys; ``instance`` is the uuid here)."""

    volume: str
    instance: str
    rd_req: int
    rd_bytes: int
    wr_req: int
    wr_bytes: int


#: a VM's power state before anything sets it: cumulative thresholds of a draw in [0, 1)
_DEFAULT_POWER_STATES: tuple[tuple[float, PowerState], ...] = (
    (0.90, PowerState.RUNNING),
    (0.95, PowerState.SHUTDOWN),
    (0.98, PowerState.PAUSED),
    (1.00, PowerState.CRASHED),
)


@dataclass(frozen=True)
class _Scale:
    """How one counter moves: its first value, its growth per poll, its value after a reset."""

    start: tuple[int, int]  # the first poll's value lies in [start[0], start[1]]
    step: int  # each later poll adds 1..step
    after_reset: int  # a reset restarts the counter at 0..after_reset (below its old value)


_BYTES = _Scale(start=(1 << 20, 1 << 34), step=1 << 26, after_reset=1 << 16)
_REQUESTS = _Scale(start=(1_000, 10_000_000), step=10_000, after_reset=100)
_BW_SCALES = (_BYTES, _BYTES)  # bw_in, bw_out
_VOLUME_SCALES = (_REQUESTS, _BYTES, _REQUESTS, _BYTES)  # rd_req, rd_bytes, wr_req, wr_bytes


@dataclass
class _Counter:
    polls: int = 0
    values: tuple[int, ...] = ()


def _stream(seed: int, *key: object) -> random.Random:
    """A random stream that depends only on ``seed`` and ``key``, in any process."""
    material = "\x1f".join([str(seed), *(str(part) for part in key)]).encode("utf-8")
    digest = hashlib.sha256(material).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:  # also NaN
        raise ValueError(f"{name} must be in [0, 1], not {value!r}")
    return value


class FakeDriver:
    """A simulated hypervisor for ``host``; see the module docstring.

    ``calls`` logs what the hypervisor was asked to do, one tuple of strings per
    call: ``("plug", uuid)``, ``("set_power_state", uuid, "SHUTDOWN")``,
    ``("power_off", uuid)``, ``("power_on", uuid)``, ``("destroy", uuid)``,
    ``("delete_instance_files", uuid)``, ``("poll_rebooting_instances", timeout,
    *uuids)``, ``("unrescue", uuid)``, ``("confirm_migration", migration_id,
    uuid)``, ``("shelve_offload", uuid)``.  Queries (``get_info``,
    ``instance_exists``, the counters) are not logged.

    ``counter_resets`` logs each counter reset as ``(kind, instance_uuid, mac or
    volume_id, poll index)``, kind "bw" or "volume", so tests can tell a reset
    from a bug.
    """

    def __init__(
        self,
        host: str,
        *,
        seed: int = 0,
        nodes: int = 1,
        vcpus: int = 32,
        memory_mb: int = 131072,
        local_gb: int = 2000,
        counter_reset_rate: float = 0.02,
        delete_failure_rate: float = 0.1,
        still_running_rate: float = 0.05,
    ) -> None:
        if not host:
            raise ValueError("a driver needs a host name")
        if nodes < 1:
            raise ValueError(f"a host has at least one node, not {nodes}")
        if min(vcpus, memory_mb, local_gb) < 0:
            raise ValueError("vcpus, memory_mb and local_gb cannot be negative")
        self.host = host
        self.seed = seed
        self.nodes = nodes
        self.vcpus = vcpus
        self.memory_mb = memory_mb
        self.local_gb = local_gb
        self.counter_reset_rate = _check_rate("counter_reset_rate", counter_reset_rate)
        self.delete_failure_rate = _check_rate("delete_failure_rate", delete_failure_rate)
        self.still_running_rate = _check_rate("still_running_rate", still_running_rate)
        self.calls: list[tuple[str, ...]] = []
        self.counter_resets: list[tuple[str, str, str, int]] = []
        self._lock = threading.Lock()
        # dicts, not sets: their order is insertion order, a set's depends on hash()
        self._running: dict[str, None] = {}
        self._destroyed: dict[str, None] = {}
        self._power: dict[str, PowerState] = {}
        self._counters: dict[tuple[str, str, str], _Counter] = {}
        self._delete_attempts: dict[str, int] = {}

    # -- host resources -------------------------------------------------------

    def get_available_nodes(self) -> list[str]:
        """The node names this host manages (Nova: hypervisor_hostname of each)."""
        if self.nodes == 1:
            return [f"{self.host}.node"]
        return [f"{self.host}.node{i}" for i in range(self.nodes)]

    def get_available_resource(self, nodename: str) -> AvailableResource:
        """One node's resources, with Nova's keys.

        Every node reports the constructor's capacities.  Usage is 0: the
        resource tracker computes it from the instances it finds in the database.
        A node not on this host is a ValueError (Nova's fake driver returns ``{}``).
        """
        if nodename not in self.get_available_nodes():
            raise ValueError(f"{nodename!r} is not a node of host {self.host!r}")
        sockets = 2 if self.vcpus % 2 == 0 and self.vcpus > 1 else 1
        cpu_info = {
            "arch": "x86_64",
            "model": "Nehalem",
            "vendor": "Intel",
            "features": ["pge", "clflush"],
            "topology": {"cores": max(self.vcpus // sockets, 1), "threads": 1, "sockets": sockets},
        }
        return {
            "vcpus": self.vcpus,
            "memory_mb": self.memory_mb,
            "local_gb": self.local_gb,
            "vcpus_used": 0,
            "memory_mb_used": 0,
            "local_gb_used": 0,
            "hypervisor_type": HYPERVISOR_TYPE,
            "hypervisor_version": HYPERVISOR_VERSION,
            "hypervisor_hostname": nodename,
            "cpu_info": json.dumps(cpu_info),
            "disk_available_least": self.local_gb,
            "supported_instances": json.dumps([["x86_64", HYPERVISOR_TYPE, "hvm"]]),
        }

    # -- power state ----------------------------------------------------------

    def _default_power_state(self, instance_uuid: str) -> PowerState:
        draw = _stream(self.seed, "power", instance_uuid).random()
        for threshold, state in _DEFAULT_POWER_STATES:
            if draw < threshold:
                return state
        return PowerState.CRASHED  # pragma: no cover - draw < 1.0 always

    def get_info(self, instance_uuid: str) -> PowerState:
        """The VM's power state: what was last set, else a deterministic default.

        The default, per uuid, is RUNNING 90%, SHUTDOWN 5%, PAUSED 3%, CRASHED 2%.
        A destroyed VM is NOSTATE (Nova's driver raises InstanceNotFound there,
        which ``_sync_power_states`` maps to NOSTATE).
        """
        with self._lock:
            state = self._power.get(instance_uuid)
        return state if state is not None else self._default_power_state(instance_uuid)

    def set_power_state(self, instance_uuid: str, state: PowerState) -> None:
        """Force the VM's power state (tests, seeding); it sticks until changed."""
        state = PowerState(state)
        with self._lock:
            self.calls.append(("set_power_state", instance_uuid, state.name))
            self._power[instance_uuid] = state

    def power_off(self, instance_uuid: str) -> None:
        """Stop the VM: SHUTDOWN, as Nova's fake driver."""
        with self._lock:
            self.calls.append(("power_off", instance_uuid))
            self._power[instance_uuid] = PowerState.SHUTDOWN

    def power_on(self, instance_uuid: str) -> None:
        """Start the VM: RUNNING."""
        with self._lock:
            self.calls.append(("power_on", instance_uuid))
            self._power[instance_uuid] = PowerState.RUNNING

    # -- running instances ----------------------------------------------------

    def plug(self, instance_uuid: str, state: PowerState | None = None) -> None:
        """Register a VM as running on this host.

        Its power state is ``state`` if given; else it stays what it was (the
        deterministic default for a new uuid), except that a VM plugged again
        after ``destroy`` is a new VM and RUNNING.
        """
        with self._lock:
            self.calls.append(("plug", instance_uuid))
            self._running[instance_uuid] = None
            if instance_uuid in self._destroyed:
                del self._destroyed[instance_uuid]
                self._power[instance_uuid] = PowerState.RUNNING
            if state is not None:
                self._power[instance_uuid] = PowerState(state)

    def list_instance_uuids(self) -> list[str]:
        """The uuids of the VMs registered as running, in the order they were plugged."""
        with self._lock:
            return list(self._running)

    def instance_exists(self, instance_uuid: str) -> bool:
        """Whether a VM for the uuid runs here.

        True if plugged, False once destroyed; for a uuid never plugged nor
        destroyed, True with probability ``still_running_rate``, the same answer
        every time (a deleted instance whose VM is still running, which
        ``_cleanup_running_deleted_instances`` reaps).
        """
        with self._lock:
            if instance_uuid in self._running:
                return True
            if instance_uuid in self._destroyed:
                return False
        return _stream(self.seed, "exists", instance_uuid).random() < self.still_running_rate

    def _destroy_locked(self, instance_uuid: str) -> None:
        self._running.pop(instance_uuid, None)
        self._destroyed[instance_uuid] = None
        self._power[instance_uuid] = PowerState.NOSTATE

    def destroy(self, instance_uuid: str) -> None:
        """Shut down and remove the VM: NOSTATE, ``instance_exists`` False, no counters."""
        with self._lock:
            self.calls.append(("destroy", instance_uuid))
            self._destroy_locked(instance_uuid)

    # -- counters -------------------------------------------------------------

    def _poll_locked(
        self, kind: str, instance_uuid: str, item: str, scales: Sequence[_Scale]
    ) -> tuple[int, ...]:
        """Advance one counter by a poll; the caller holds the lock."""
        key = (kind, instance_uuid, item)
        counter = self._counters.setdefault(key, _Counter())
        rng = _stream(self.seed, kind, instance_uuid, item, counter.polls)
        if counter.polls == 0:
            values = tuple(rng.randint(*scale.start) for scale in scales)
        elif rng.random() < self.counter_reset_rate:
            values = tuple(
                rng.randint(0, min(scale.after_reset, old - 1)) if old > 0 else 0
                for scale, old in zip(scales, counter.values, strict=True)
            )
            self.counter_resets.append((kind, instance_uuid, item, counter.polls))
        else:
            values = tuple(
                old + rng.randint(1, scale.step)
                for scale, old in zip(scales, counter.values, strict=True)
            )
        counter.polls += 1
        counter.values = values
        return values

    def get_all_bw_counters(self, instance_uuids: Iterable[str]) -> list[BandwidthCounters]:
        """Bandwidth counters, one dict per (instance, mac): uuid, mac_address, bw_in, bw_out.

        Each call is a poll: a counter grows by a random amount, or with
        probability ``counter_reset_rate`` restarts near 0 (below its last
        value, unless that was 0).  A key's first poll starts at a random value.
        Destroyed VMs report nothing.
        """
        result: list[BandwidthCounters] = []
        with self._lock:
            for instance_uuid in instance_uuids:
                if instance_uuid in self._destroyed:
                    continue
                for mac in macs_for(instance_uuid):
                    bw_in, bw_out = self._poll_locked("bw", instance_uuid, mac, _BW_SCALES)
                    result.append(
                        {
                            "uuid": instance_uuid,
                            "mac_address": mac,
                            "bw_in": bw_in,
                            "bw_out": bw_out,
                        }
                    )
        return result

    def get_all_volume_usage(self, mappings: Iterable[tuple[str, str]]) -> list[VolumeCounters]:
        """Volume I/O counters, one dict per (instance_uuid, volume_id) pair.

        Keys as Nova's: volume, instance (the uuid here), rd_req, rd_bytes,
        wr_req, wr_bytes; they move as the bandwidth counters do, all four
        resetting together.  Destroyed VMs report nothing.
        """
        result: list[VolumeCounters] = []
        with self._lock:
            for instance_uuid, volume_id in mappings:
                if instance_uuid in self._destroyed:
                    continue
                rd_req, rd_bytes, wr_req, wr_bytes = self._poll_locked(
                    "volume", instance_uuid, volume_id, _VOLUME_SCALES
                )
                result.append(
                    {
                        "volume": volume_id,
                        "instance": instance_uuid,
                        "rd_req": rd_req,
                        "rd_bytes": rd_bytes,
                        "wr_req": wr_req,
                        "wr_bytes": wr_bytes,
                    }
                )
        return result

    # -- actions the periodic tasks take ---------------------------------------

    def delete_instance_files(self, instance_uuid: str) -> bool:
        """Delete the instance's files: True on success, False (prob. ``delete_failure_rate``).

        The outcome depends only on the seed, the uuid and the attempt number.
        """
        with self._lock:
            self.calls.append(("delete_instance_files", instance_uuid))
            attempt = self._delete_attempts.get(instance_uuid, 0) + 1
            self._delete_attempts[instance_uuid] = attempt
        draw = _stream(self.seed, "delete", instance_uuid, attempt).random()
        return draw >= self.delete_failure_rate

    def delete_attempts(self, instance_uuid: str) -> int:
        """How many times ``delete_instance_files`` was called for the uuid."""
        with self._lock:
            return self._delete_attempts.get(instance_uuid, 0)

    def poll_rebooting_instances(self, timeout: int, instance_uuids: Sequence[str]) -> None:
        """Nova's hook for instances stuck rebooting longer than ``timeout``: each ends RUNNING."""
        with self._lock:
            self.calls.append(("poll_rebooting_instances", str(timeout), *instance_uuids))
            for instance_uuid in instance_uuids:
                self._power[instance_uuid] = PowerState.RUNNING

    def unrescue(self, instance_uuid: str) -> None:
        """Leave rescue mode: RUNNING, as Nova's fake driver."""
        with self._lock:
            self.calls.append(("unrescue", instance_uuid))
            self._power[instance_uuid] = PowerState.RUNNING

    def confirm_migration(self, migration_id: int | str, instance_uuid: str) -> None:
        """Confirm a finished resize/migration (recorded only)."""
        with self._lock:
            self.calls.append(("confirm_migration", str(migration_id), instance_uuid))

    def shelve_offload(self, instance_uuid: str) -> None:
        """Offload a shelved instance: its VM is destroyed (logged as shelve_offload only)."""
        with self._lock:
            self.calls.append(("shelve_offload", instance_uuid))
            self._destroy_locked(instance_uuid)
