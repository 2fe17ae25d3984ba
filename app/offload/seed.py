"""A realistic, deterministic nova-compute data set for the testbed.

:func:`plan` is a pure function: from ``(instances, hosts, seed, now)`` it
builds every row, as dicts keyed by column name, per table (parents first).
:func:`seed` inserts that plan on the primary through ``db.writer()`` in one
transaction, one multi-row ``INSERT`` per ``batch`` rows of a table,
and returns a :class:`SeedSummary`.  The same arguments always give the same
rows: every random choice, uuids included, comes from ``random.Random(seed)``.
The schema should hold no rows for these hosts and uuids yet (unique keys).

Hosts are ``compute-1`` .. ``compute-H`` (:func:`host_names`), each with one
``nova-compute`` service and one compute node ``<host>.node`` (the FakeDriver's
node name, :func:`node_name`) whose usage columns are zero: the resource
tracker fills them.  Instances are dealt round robin over the hosts, and each
host gets the mix below exactly, up to rounding (largest remainder per host):

========================  =====  ================================================
kind (:class:`Kind`)      share  rows
========================  =====  ================================================
``active``                 72 %  vm_state active, power_state 1 (running)
``stopped``                 5 %  vm_state stopped, power_state 4 (shutdown)
``deleted``                 6 %  vm_state deleted, deleted = id, cleaned 0,
                                 terminated_at = deleted_at minutes to days
                                 ago; half carry ``clean_attempts`` 1..4 in
                                 system metadata and one in ten already 5
                                 (``maximum_instance_delete_attempts``)
``deleted-cleaned``         3 %  as deleted, cleaned 1, clean_attempts 1 or 2
``soft-deleted``            3 %  vm_state soft-delete, task_state NULL,
                                 deleted 0, deleted_at minutes to days ago
``shelved``                 3 %  vm_state shelved, power_state 4; system metadata
                                 ``shelved_at`` (ISO time with microseconds),
                                 ``shelved_image_id``, ``shelved_host``
``rescued``                 2 %  vm_state rescued, launched_at minutes to days ago
``rebooting``               2 %  task_state rebooting, updated_at seconds to
                                 days ago
``resized``                 3 %  vm_state resized; a migration ``finished`` from
                                 another host (the same one when H = 1) to this
                                 one, updated_at minutes to days ago
``migrating``               1 %  a resize in progress from this host: migration
                                 ``migrating`` (task_state resize_migrating) or
                                 ``post-migrating`` (resize_migrated, power 4)
========================  =====  ================================================

Flavors are m1.tiny/small/medium/large (instance_type_id 1..4); users and
projects come from small pools.  Other rows:

* ``instance_info_caches``: one per instance that is not deleted, a
  ``network_info`` list with one VIF per MAC of
  :func:`offload.compute.network.macs_for`;
* ``block_device_mapping``: a local root disk from the image (``/dev/vda``,
  boot_index 0) for every instance, and for ~25 % of the live ones one or two
  volumes (``/dev/vdb``, ``/dev/vdc``);
* ``bw_usage_cache``: for ~60 % of the live instances, one row per MAC for the
  previous monthly audit period (when launched before the current one) and,
  for about half of those, one for the current period;
* ``volume_usage_cache``: for ~half of the volumes, ``tot_*`` and ``curr_*``
  counters, ``curr_last_refreshed`` minutes ago;
* ``task_log``: an ``instance_usage_audit`` DONE row for the previous period
  on about half the hosts.

``deleted`` holds the row's own id, which is unknown before the insert: deleted
instances are inserted live and soft-deleted by one ``UPDATE`` per batch, which
keeps their planned ``updated_at``.  Their block device mappings and system
metadata stay live, as Nova's instance_destroy leaves them.
"""

from __future__ import annotations

import ipaddress
import json
import math
import operator
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import pymysql
from sqlalchemy import Connection, Table, select
from sqlalchemy.exc import DBAPIError

from offload import schema
from offload.compute.network import macs_for
from offload.db import Database
from offload.dberrors import translate
from offload.errors import ConnectionLost

__all__ = [
    "AUDIT_TASK_NAME",
    "MIX",
    "Kind",
    "Plan",
    "Render",
    "Row",
    "SeedSummary",
    "audit_periods",
    "host_names",
    "insert_statements",
    "instance_kind",
    "node_name",
    "plan",
    "renderer",
    "seed",
]

Row = dict[str, Any]
#: Rows per table name, parents before children (every table of the plan present).
Plan = dict[str, list[Row]]

#: task_log.task_name of nova's _instance_usage_audit.
AUDIT_TASK_NAME: Final = "instance_usage_audit"

# nova.compute.power_state
_NOSTATE: Final = 0
_RUNNING: Final = 1
_SHUTDOWN: Final = 4

_MINUTE: Final = 60.0
_HOUR: Final = 3600.0
_DAY: Final = 86400.0


class Kind(StrEnum):
    """What an instance is doing, as the periodic tasks see it."""

    ACTIVE = "active"
    STOPPED = "stopped"
    DELETED = "deleted"
    CLEANED = "deleted-cleaned"
    SOFT_DELETED = "soft-deleted"
    SHELVED = "shelved"
    RESCUED = "rescued"
    REBOOTING = "rebooting"
    RESIZED = "resized"
    MIGRATING = "migrating"

    @property
    def deleted(self) -> bool:
        """Soft-deleted in the database (``deleted = id``)."""
        return self in (Kind.DELETED, Kind.CLEANED)


# Whole percents, so that per-host quotas are exact integer arithmetic.
_PERCENT: Final[Mapping[Kind, int]] = MappingProxyType(
    {
        Kind.ACTIVE: 72,
        Kind.STOPPED: 5,
        Kind.DELETED: 6,
        Kind.CLEANED: 3,
        Kind.SOFT_DELETED: 3,
        Kind.SHELVED: 3,
        Kind.RESCUED: 2,
        Kind.REBOOTING: 2,
        Kind.RESIZED: 3,
        Kind.MIGRATING: 1,
    }
)
assert sum(_PERCENT.values()) == 100

#: The share of each kind of instance on every host.
MIX: Final[Mapping[Kind, float]] = MappingProxyType(
    {kind: percent / 100 for kind, percent in _PERCENT.items()}
)


@dataclass(frozen=True, slots=True)
class _Flavor:
    id: int
    name: str
    memory_mb: int
    vcpus: int
    root_gb: int
    ephemeral_gb: int
    weight: int


_FLAVORS: Final = (
    _Flavor(1, "m1.tiny", 512, 1, 1, 0, 2),
    _Flavor(2, "m1.small", 2048, 1, 20, 0, 4),
    _Flavor(3, "m1.medium", 4096, 2, 40, 0, 3),
    _Flavor(4, "m1.large", 8192, 4, 80, 0, 1),
)
_FLAVOR_WEIGHTS: Final = tuple(f.weight for f in _FLAVORS)

# (vcpus, memory_mb, local_gb) of the hypervisor models in the fleet.
_NODE_MODELS: Final = ((48, 393216, 3600), (64, 524288, 4800), (96, 786432, 7200))

_ROLES: Final = ("web", "api", "db", "cache", "worker", "batch", "ci", "proxy")
_PROJECTS: Final = 8
_USERS_PER_PROJECT: Final = 3
_IMAGES: Final = 5
_MAX_CLEAN_ATTEMPTS: Final = 5  # nova's maximum_instance_delete_attempts default
_FIRST_IP: Final = ipaddress.IPv4Address("10.0.0.2")
_TABLES: Final = tuple(name for name in schema.NOVA_TABLES if name != "heartbeat")
_CHILD_TABLES: Final = _TABLES[3:]  # after services, compute_nodes, instances
_INSTANCES_KEY: Final = "instances"


def host_names(hosts: int, *, first: int = 0) -> list[str]:
    """``compute-<first + 1>`` .. ``compute-<first + hosts>``."""
    return [f"compute-{i}" for i in range(first + 1, first + hosts + 1)]


def node_name(host: str) -> str:
    """The hypervisor node (compute_nodes.hypervisor_hostname) of a host."""
    return f"{host}.node"


def audit_periods(now: datetime) -> tuple[datetime, datetime]:
    """Starts of the previous and of the current monthly audit period at ``now``.

    Nova's default ``instance_usage_audit_period`` is ``month``: the last
    completed period runs from the first of the previous month to the first
    of this one, both at 00:00.
    """
    current = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous = (current - timedelta(days=1)).replace(day=1)
    return previous, current


def instance_kind(row: Mapping[str, Any]) -> Kind:
    """The :class:`Kind` of an instance row (a planned dict or a row read back)."""
    vm_state = row["vm_state"]
    task_state = row["task_state"]
    if vm_state == "deleted":
        return Kind.CLEANED if row["cleaned"] else Kind.DELETED
    by_vm_state = {
        "soft-delete": Kind.SOFT_DELETED,
        "shelved": Kind.SHELVED,
        "rescued": Kind.RESCUED,
        "resized": Kind.RESIZED,
        "stopped": Kind.STOPPED,
    }
    if vm_state in by_vm_state:
        return by_vm_state[vm_state]
    if task_state == "rebooting":
        return Kind.REBOOTING
    if task_state in ("resize_migrating", "resize_migrated"):
        return Kind.MIGRATING
    return Kind.ACTIVE


def _normalize(now: datetime) -> datetime:
    """Naive UTC in whole seconds, what a DATETIME column stores."""
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)
    return now.replace(microsecond=0)


def _quotas(count: int) -> list[Kind]:
    """``count`` kinds in the MIX's proportions, by largest remainder."""
    counts = {kind: count * percent // 100 for kind, percent in _PERCENT.items()}
    short = count - sum(counts.values())
    by_remainder = sorted(_PERCENT, key=lambda kind: -(count * _PERCENT[kind] % 100))
    for kind in by_remainder[:short]:
        counts[kind] += 1
    return [kind for kind, n in counts.items() for _ in range(n)]


class _Planner:
    """Builds a :data:`Plan`; every random draw goes through ``self.rng`` in order."""

    def __init__(self, hosts: int, seed: int, now: datetime, *, first_host: int = 0) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.hosts = host_names(hosts, first=first_host)
        self.host_index = {host: i for i, host in enumerate(self.hosts)}
        self.previous, self.current = audit_periods(now)
        self.rows: Plan = {name: [] for name in _TABLES}
        self.host_ips = {
            host: str(ipaddress.IPv4Address("192.168.0.10") + first_host + i)
            for i, host in enumerate(self.hosts)
        }
        self.projects = [self.uuid().replace("-", "") for _ in range(_PROJECTS)]
        self.users = {
            project: [self.uuid().replace("-", "") for _ in range(_USERS_PER_PROJECT)]
            for project in self.projects
        }
        self.images = [self.uuid() for _ in range(_IMAGES)]
        self.network = self.uuid()

    # --- random helpers ---------------------------------------------------

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def seconds(self, low: float, high: float) -> timedelta:
        """Log-uniform between ``low`` and ``high`` seconds, whole seconds."""
        value = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return timedelta(seconds=int(value))

    def ago(self, low: float, high: float) -> datetime:
        return self.now - self.seconds(low, high)

    def between(self, start: datetime, end: datetime) -> datetime:
        span = max(0, int((end - start).total_seconds()))
        return start + timedelta(seconds=self.rng.randint(0, span))

    def flavor(self, *, other_than: _Flavor | None = None) -> _Flavor:
        while True:
            flavor = self.rng.choices(_FLAVORS, weights=_FLAVOR_WEIGHTS)[0]
            if flavor != other_than:
                return flavor

    def other_host(self, host: str) -> str:
        """Another host, uniformly (``rng.choice`` of the others, without building them)."""
        if len(self.hosts) < 2:
            return host
        pick = self.rng.randrange(len(self.hosts) - 1)
        return self.hosts[pick if pick < self.host_index[host] else pick + 1]

    # --- the plan ---------------------------------------------------------

    def build(self, instances: int) -> Plan:
        for host in self.hosts:
            self.add_host(host)
        kinds = {
            host: _quotas(len(range(i, instances, len(self.hosts))))
            for i, host in enumerate(self.hosts)
        }
        for kinds_of_host in kinds.values():
            self.rng.shuffle(kinds_of_host)
        for index in range(instances):
            host = self.hosts[index % len(self.hosts)]
            self.add_instance(index, host, kinds[host][index // len(self.hosts)])
        self.add_task_logs()
        return self.rows

    def add_host(self, host: str) -> None:
        created = self.now - timedelta(days=400) - self.seconds(_HOUR, 30 * _DAY)
        self.rows["services"].append(
            {
                "created_at": created,
                "updated_at": None,
                "deleted_at": None,
                "deleted": 0,
                "host": host,
                "binary": "nova-compute",
                "topic": "compute",
                "report_count": 0,
                "disabled": False,
                "disabled_reason": None,
            }
        )
        vcpus, memory_mb, local_gb = self.rng.choice(_NODE_MODELS)
        self.rows["compute_nodes"].append(
            {
                "created_at": created,
                "updated_at": None,
                "deleted_at": None,
                "deleted": 0,
                "service_id": None,
                "host": host,
                "hypervisor_hostname": node_name(host),
                "vcpus": vcpus,
                "memory_mb": memory_mb,
                "local_gb": local_gb,
                "vcpus_used": 0,
                "memory_mb_used": 0,
                "local_gb_used": 0,
                "hypervisor_type": "fake",
                "hypervisor_version": 1000,
                "cpu_info": "{}",
                "free_ram_mb": memory_mb,
                "free_disk_gb": local_gb,
                "current_workload": 0,
                "running_vms": 0,
                "disk_available_least": local_gb,
                "host_ip": self.host_ips[host],
                "supported_instances": json.dumps([["x86_64", "fake", "hvm"]]),
                "metrics": "[]",
                "pci_stats": None,
                "extra_resources": None,
                "stats": "{}",
                "numa_topology": None,
            }
        )

    def instance_row(self, index: int, host: str, flavor: _Flavor, anchor: datetime) -> Row:
        """A running instance launched hours to a year before ``anchor``."""
        uid = self.uuid()
        project = self.rng.choice(self.projects)
        launched = anchor - self.seconds(_HOUR, 400 * _DAY)
        created = launched - self.seconds(20, 600)
        name = f"{self.rng.choice(_ROLES)}-{index + 1:05d}"
        reservation = "r-" + "".join(self.rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=8))
        return {
            "created_at": created,
            "updated_at": self.between(launched, anchor),
            "deleted_at": None,
            "deleted": 0,
            "uuid": uid,
            "user_id": self.rng.choice(self.users[project]),
            "project_id": project,
            "image_ref": self.rng.choice(self.images),
            "kernel_id": "",
            "ramdisk_id": "",
            "reservation_id": reservation,
            "launch_index": 0,
            "key_name": self.rng.choice(("default", "ops", None)),
            "hostname": name,
            "display_name": name,
            "display_description": name,
            "availability_zone": "nova",
            "host": host,
            "node": node_name(host),
            "launched_on": host,
            "power_state": _RUNNING,
            "vm_state": "active",
            "task_state": None,
            "instance_type_id": flavor.id,
            "memory_mb": flavor.memory_mb,
            "vcpus": flavor.vcpus,
            "root_gb": flavor.root_gb,
            "ephemeral_gb": flavor.ephemeral_gb,
            "os_type": "linux",
            "architecture": "x86_64",
            "vm_mode": "hvm",
            "root_device_name": "/dev/vda",
            "access_ip_v4": None,
            "access_ip_v6": None,
            "progress": 0,
            "launched_at": launched,
            "terminated_at": None,
            "locked": False,
            "shutdown_terminate": False,
            "disable_terminate": False,
            "cell_name": None,
            "cleaned": 0,
        }

    def add_instance(self, index: int, host: str, kind: Kind) -> None:
        flavor = self.flavor()
        if kind is Kind.ACTIVE:
            row = self.instance_row(index, host, flavor, self.now)
        elif kind is Kind.STOPPED:
            row = self.instance_row(index, host, flavor, self.now)
            row.update(vm_state="stopped", power_state=_SHUTDOWN)
        elif kind.deleted:
            row = self.deleted(index, host, flavor, cleaned=kind is Kind.CLEANED)
        elif kind is Kind.SOFT_DELETED:
            when = self.ago(_MINUTE, 7 * _DAY)
            row = self.instance_row(index, host, flavor, when)
            row.update(
                vm_state="soft-delete", power_state=_SHUTDOWN, deleted_at=when, updated_at=when
            )
        elif kind is Kind.SHELVED:
            row = self.shelved(index, host, flavor)
        elif kind is Kind.RESCUED:
            when = self.ago(_MINUTE, 3 * _DAY)
            row = self.instance_row(index, host, flavor, when)
            row.update(vm_state="rescued", launched_at=when, updated_at=when)
        elif kind is Kind.REBOOTING:
            when = self.ago(10, 2 * _DAY)
            row = self.instance_row(index, host, flavor, when)
            row.update(task_state="rebooting", updated_at=when)
        elif kind is Kind.RESIZED:
            row = self.resized(index, host, flavor)
        else:
            row = self.migrating(index, host, flavor)
        self.rows[_INSTANCES_KEY].append(row)
        self.add_disks(row, live=not kind.deleted)
        if not kind.deleted:
            self.add_info_cache(row, index)
            if self.rng.random() < 0.6:
                self.add_bandwidth(row)

    def deleted(self, index: int, host: str, flavor: _Flavor, *, cleaned: bool) -> Row:
        when = self.ago(_HOUR, 90 * _DAY) if cleaned else self.ago(_MINUTE, 3 * _DAY)
        row = self.instance_row(index, host, flavor, when)
        row.update(
            vm_state="deleted",
            power_state=_NOSTATE,
            terminated_at=when,
            deleted_at=when,
            updated_at=when,
            cleaned=int(cleaned),
        )
        draw = self.rng.random()
        if cleaned:
            attempts = 1 if draw < 0.8 else 2
        elif draw < 0.5:
            return row
        else:
            attempts = self.rng.randint(1, 4) if draw < 0.9 else _MAX_CLEAN_ATTEMPTS
        first = min(self.now, when + timedelta(seconds=self.rng.randint(1, 300)))
        last = min(self.now, first + timedelta(seconds=300 * (attempts - 1)))
        self.add_system_metadata(row["uuid"], schema.CLEAN_ATTEMPTS_KEY, str(attempts), first, last)
        return row

    def shelved(self, index: int, host: str, flavor: _Flavor) -> Row:
        when = self.ago(_MINUTE, 10 * _DAY)
        row = self.instance_row(index, host, flavor, when)
        row.update(vm_state="shelved", power_state=_SHUTDOWN, updated_at=when)
        # nova: timeutils.utcnow().isoformat(), which carries microseconds
        shelved_at = when.replace(microsecond=self.rng.randint(0, 999_999))
        for key, value in (
            (schema.SHELVED_AT_KEY, shelved_at.isoformat(timespec="microseconds")),
            ("shelved_image_id", self.uuid()),
            ("shelved_host", host),
        ):
            self.add_system_metadata(row["uuid"], key, value, when, None)
        return row

    def resized(self, index: int, host: str, flavor: _Flavor) -> Row:
        when = self.ago(_MINUTE, 5 * _DAY)
        source = self.other_host(host)
        old = self.flavor(other_than=flavor)
        row = self.instance_row(index, host, flavor, when)
        row.update(vm_state="resized", launched_on=source, updated_at=when)
        self.add_migration(row["uuid"], source, host, old, flavor, "finished", when)
        return row

    def migrating(self, index: int, host: str, flavor: _Flavor) -> Row:
        when = self.ago(5, 30 * _MINUTE)
        status = self.rng.choice(("migrating", "post-migrating"))
        row = self.instance_row(index, host, flavor, when)
        if status == "migrating":
            row.update(task_state="resize_migrating", updated_at=when)
        else:
            row.update(task_state="resize_migrated", power_state=_SHUTDOWN, updated_at=when)
        new = self.flavor(other_than=flavor)
        self.add_migration(row["uuid"], host, self.other_host(host), flavor, new, status, when)
        return row

    # --- children ---------------------------------------------------------

    def add_system_metadata(
        self, instance_uuid: str, key: str, value: str, created: datetime, updated: datetime | None
    ) -> None:
        self.rows["instance_system_metadata"].append(
            {
                "created_at": created,
                "updated_at": updated,
                "deleted_at": None,
                "deleted": 0,
                "instance_uuid": instance_uuid,
                "key": key,
                "value": value,
            }
        )

    def add_migration(
        self,
        instance_uuid: str,
        source: str,
        dest: str,
        old: _Flavor,
        new: _Flavor,
        status: str,
        when: datetime,
    ) -> None:
        self.rows["migrations"].append(
            {
                "created_at": when - self.seconds(30, 900),
                "updated_at": when,
                "deleted_at": None,
                "deleted": 0,
                "source_compute": source,
                "dest_compute": dest,
                "source_node": node_name(source),
                "dest_node": node_name(dest),
                "dest_host": self.host_ips[dest],
                "old_instance_type_id": old.id,
                "new_instance_type_id": new.id,
                "instance_uuid": instance_uuid,
                "status": status,
            }
        )

    def add_info_cache(self, instance: Row, index: int) -> None:
        vifs = []
        for slot, mac in enumerate(macs_for(instance["uuid"])):
            port = self.uuid()
            address = str(_FIRST_IP + index * 4 + slot)
            vifs.append(
                {
                    "id": port,
                    "address": mac,
                    "type": "ovs",
                    "devname": f"tap{port[:11]}",
                    "ovs_interfaceid": port,
                    "vnic_type": "normal",
                    "active": True,
                    "details": {"port_filter": True},
                    "meta": {},
                    "network": {
                        "id": self.network,
                        "label": "private",
                        "bridge": "br-int",
                        "meta": {"injected": False, "tenant_id": instance["project_id"]},
                        "subnets": [
                            {
                                "cidr": "10.0.0.0/8",
                                "version": 4,
                                "dns": [],
                                "routes": [],
                                "gateway": {"address": "10.0.0.1", "type": "gateway", "version": 4},
                                "ips": [
                                    {
                                        "address": address,
                                        "type": "fixed",
                                        "version": 4,
                                        "floating_ips": [],
                                    }
                                ],
                            }
                        ],
                    },
                }
            )
        created = instance["created_at"] + timedelta(seconds=self.rng.randint(5, 60))
        self.rows["instance_info_caches"].append(
            {
                "created_at": created,
                "updated_at": max(created, self.ago(1, _HOUR)),
                "deleted_at": None,
                "deleted": 0,
                "instance_uuid": instance["uuid"],
                "network_info": json.dumps(vifs, separators=(",", ":")),
            }
        )

    def bdm_row(self, instance: Row, **fields: Any) -> Row:
        row: Row = {
            "created_at": instance["created_at"],
            "updated_at": instance["launched_at"],
            "deleted_at": None,
            "deleted": 0,
            "instance_uuid": instance["uuid"],
            "source_type": "image",
            "destination_type": "local",
            "guest_format": None,
            "device_type": "disk",
            "disk_bus": "virtio",
            "boot_index": 0,
            "device_name": "/dev/vda",
            "delete_on_termination": True,
            "snapshot_id": None,
            "volume_id": None,
            "volume_size": None,
            "image_id": instance["image_ref"],
            "no_device": False,
            "connection_info": None,
        }
        row.update(fields)
        return row

    def add_disks(self, instance: Row, *, live: bool) -> None:
        bdms = self.rows["block_device_mapping"]
        bdms.append(self.bdm_row(instance))
        if not live or self.rng.random() >= 0.25:
            return
        for device in ("/dev/vdb", "/dev/vdc")[: 1 if self.rng.random() < 0.7 else 2]:
            volume = self.uuid()
            attached = self.between(instance["launched_at"], self.now)
            connection = {
                "driver_volume_type": "iscsi",
                "serial": volume,
                "data": {
                    "volume_id": volume,
                    "target_lun": 1,
                    "target_iqn": f"iqn.2010-10.org.openstack:volume-{volume}",
                    "target_portal": "192.168.1.5:3260",
                },
            }
            bdms.append(
                self.bdm_row(
                    instance,
                    created_at=attached,
                    updated_at=attached,
                    source_type="volume",
                    destination_type="volume",
                    boot_index=None,
                    device_name=device,
                    delete_on_termination=False,
                    volume_id=volume,
                    volume_size=self.rng.choice((1, 10, 20, 50, 100, 500)),
                    image_id=None,
                    connection_info=json.dumps(connection, separators=(",", ":")),
                )
            )
            if self.rng.random() < 0.5:
                self.add_volume_usage(instance, volume, attached)

    def add_volume_usage(self, instance: Row, volume: str, attached: datetime) -> None:
        reset = self.rng.random() < 0.4  # the counters wrapped or the VM rebooted
        tot = [int(self.seconds(1, 10**n).total_seconds()) if reset else 0 for n in (6, 11, 6, 11)]
        curr = [int(self.seconds(1, 10**n).total_seconds()) for n in (6, 11, 6, 11)]
        self.rows["volume_usage_cache"].append(
            {
                "created_at": attached,
                "updated_at": None,
                "deleted_at": None,
                "deleted": 0,
                "volume_id": volume,
                "instance_uuid": instance["uuid"],
                "project_id": instance["project_id"],
                "user_id": instance["user_id"],
                "availability_zone": "nova",
                "tot_last_refreshed": self.between(attached, self.now) if reset else None,
                "tot_reads": tot[0],
                "tot_read_bytes": tot[1],
                "tot_writes": tot[2],
                "tot_write_bytes": tot[3],
                "curr_last_refreshed": max(attached, self.ago(1, 10 * _MINUTE)),
                "curr_reads": curr[0],
                "curr_read_bytes": curr[1],
                "curr_writes": curr[2],
                "curr_write_bytes": curr[3],
            }
        )

    def add_bandwidth(self, instance: Row) -> None:
        has_previous = instance["launched_at"] < self.current
        has_current = not has_previous or self.rng.random() < 0.5
        for mac in macs_for(instance["uuid"]):
            counter_in = counter_out = 0
            if has_previous:
                bw_in = int(self.seconds(10**6, 5 * 10**10).total_seconds())
                bw_out = int(bw_in * self.rng.uniform(0.1, 2.0))
                counter_in = bw_in + self.rng.randint(0, bw_in)
                counter_out = bw_out + self.rng.randint(0, bw_out)
                refreshed = self.current - self.seconds(1, 10 * _MINUTE)
                self.add_bw_row(
                    instance,
                    mac,
                    self.previous,
                    refreshed,
                    (bw_in, bw_out, counter_in, counter_out),
                )
            if has_current:
                delta_in = int(self.seconds(10**5, 5 * 10**9).total_seconds())
                delta_out = int(delta_in * self.rng.uniform(0.1, 2.0))
                refreshed = max(self.current, self.ago(1, 10 * _MINUTE))
                self.add_bw_row(
                    instance,
                    mac,
                    self.current,
                    refreshed,
                    (delta_in, delta_out, counter_in + delta_in, counter_out + delta_out),
                )

    def add_bw_row(
        self,
        instance: Row,
        mac: str,
        start: datetime,
        refreshed: datetime,
        counters: tuple[int, int, int, int],
    ) -> None:
        bw_in, bw_out, last_ctr_in, last_ctr_out = counters
        self.rows["bw_usage_cache"].append(
            {
                "created_at": max(start, instance["launched_at"]),
                "updated_at": refreshed,
                "deleted_at": None,
                "deleted": 0,
                "uuid": instance["uuid"],
                "mac": mac,
                "start_period": start,
                "last_refreshed": refreshed,
                "bw_in": bw_in,
                "bw_out": bw_out,
                "last_ctr_in": last_ctr_in,
                "last_ctr_out": last_ctr_out,
            }
        )

    def add_task_logs(self) -> None:
        audited = set(self.rng.sample(self.hosts, (len(self.hosts) + 1) // 2))
        audited_items = Counter(
            row["host"]
            for row in self.rows[_INSTANCES_KEY]
            if row["launched_at"] < self.current
            and (row["terminated_at"] is None or row["terminated_at"] > self.previous)
        )
        for host in self.hosts:
            if host not in audited:
                continue
            items = audited_items[host]
            took = self.rng.uniform(0.5, 30.0)
            created = min(self.now, self.current + self.seconds(1, 10 * _MINUTE))
            self.rows["task_log"].append(
                {
                    "created_at": created,
                    "updated_at": min(self.now, created + timedelta(seconds=math.ceil(took))),
                    "deleted_at": None,
                    "deleted": 0,
                    "task_name": AUDIT_TASK_NAME,
                    "state": "DONE",
                    "host": host,
                    "period_beginning": self.previous,
                    "period_ending": self.current,
                    "message": f"Instance usage audit ran for host {host}, {items} instances "
                    f"in {took:.2f} seconds.",
                    "task_items": items,
                    "errors": 0,
                }
            )


def plan(instances: int, hosts: int, seed: int, now: datetime, *, first_host: int = 0) -> Plan:
    """Every row of the data set, per table name, parents first; no I/O.

    Instance rows of the deleted kinds carry ``deleted = 0``: :func:`seed`
    sets ``deleted`` to their id once the server has assigned it.
    """
    if instances < 0:
        raise ValueError(f"instances must be >= 0, not {instances}")
    if hosts < 1:
        raise ValueError(f"hosts must be >= 1, not {hosts}")
    if first_host < 0:
        raise ValueError(f"first_host must be >= 0, not {first_host}")
    return _Planner(hosts, seed, _normalize(now), first_host=first_host).build(instances)


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """What :func:`seed` wrote: rows per table, instances per kind and per host."""

    seed: int
    now: datetime
    hosts: tuple[str, ...]
    rows: Mapping[str, int]
    kinds: Mapping[str, int]
    per_host: Mapping[str, Mapping[str, int]]
    elapsed: float

    @property
    def instances(self) -> int:
        return self.rows[_INSTANCES_KEY]

    @classmethod
    def from_plan(
        cls, rows: Plan, *, seed: int, now: datetime, elapsed: float = 0.0
    ) -> SeedSummary:
        kinds = dict.fromkeys((str(kind) for kind in Kind), 0)
        hosts = tuple(row["host"] for row in rows["services"])
        per_host = {host: dict(kinds) for host in hosts}
        for row in rows[_INSTANCES_KEY]:
            kind = str(instance_kind(row))
            kinds[kind] += 1
            per_host[row["host"]][kind] += 1
        return cls(
            seed=seed,
            now=_normalize(now),
            hosts=hosts,
            rows=MappingProxyType({name: len(table) for name, table in rows.items()}),
            kinds=MappingProxyType(kinds),
            per_host=MappingProxyType({h: MappingProxyType(c) for h, c in per_host.items()}),
            elapsed=elapsed,
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            "seed": self.seed,
            "now": self.now.isoformat(),
            "hosts": list(self.hosts),
            "instances": self.instances,
            "rows": dict(self.rows),
            "kinds": dict(self.kinds),
            "per_host": {host: dict(counts) for host, counts in self.per_host.items()},
            "elapsed_seconds": round(self.elapsed, 3),
        }


def _chunks(rows: Sequence[Row], size: int) -> Iterator[Sequence[Row]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


#: how a value the plan holds becomes an SQL literal: what PyMySQL's ``escape`` gives, by
#: one lookup of the value's type (the driver's own ``literal`` for any other type)
Render = Callable[[Any], str]


def renderer(quote: Callable[[str], str], literal: Render) -> Render:
    """SQL literals as the driver renders them, for the plan's types at a dict lookup each.

    ``quote`` is the connection's string literal (it honours ``NO_BACKSLASH_ESCAPES``),
    ``literal`` its rendering of anything else; the plan's datetimes are naive UTC,
    rendered as PyMySQL does (microseconds only when present).
    """

    def time_literal(value: datetime) -> str:
        return "'" + value.isoformat(" ") + "'"

    by_type: dict[type, Render] = {
        str: quote,
        int: int.__repr__,
        bool: lambda value: "1" if value else "0",
        type(None): lambda _value: "NULL",
        datetime: time_literal,
    }

    def render(value: Any) -> str:
        return by_type.get(type(value), literal)(value)

    return render


def insert_statements(
    table: Table, rows: Sequence[Row], batch: int, render: Render
) -> Iterator[str]:
    """One multi-row ``INSERT ... VALUES (...), (...)`` per ``batch`` rows, values rendered.

    The columns are the first row's keys (every row of a table has the same ones).
    """
    if not rows:
        return
    columns = list(rows[0])
    unknown = set(columns) - set(table.columns.keys())
    if unknown:
        raise ValueError(f"no column {sorted(unknown)} in {table.name}")
    # identifiers from the schema's metadata, backquoted; values rendered by the driver's rules
    head = f"INSERT INTO `{table.name}` ({', '.join(f'`{c}`' for c in columns)}) VALUES "  # noqa: S608
    getter = operator.itemgetter(*columns)
    values: Callable[[Row], Sequence[Any]] = (
        getter if len(columns) > 1 else lambda row: (getter(row),)
    )
    for chunk in _chunks(rows, batch):
        yield head + ", ".join("(" + ", ".join(map(render, values(row))) + ")" for row in chunk)


def _soft_delete(uuids: Sequence[str], render: Render) -> str:
    """``deleted = id`` for these planned-deleted instances, ``updated_at`` as planned."""
    listed = ", ".join(map(render, uuids))
    return (
        "UPDATE `instances` SET `deleted` = `id`, `updated_at` = `updated_at` "  # noqa: S608
        f"WHERE `deleted` = 0 AND `uuid` IN ({listed})"
    )


def _ahead(items: Iterator[str]) -> Iterator[str]:
    """``items``, the next one made in a thread while the caller sends the current one.

    The server runs a statement while the socket wait has released the GIL: rendering
    the next batch then costs the seed no time of its own.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="offload-seed") as pool:
        future = pool.submit(next, items, None)
        while (item := future.result()) is not None:
            future = pool.submit(next, items, None)
            yield item


class _Floor:
    """Statements straight on the writer session's DBAPI connection, errors translated.

    Megabytes of rendered rows skip the per-statement hooks (tag, trace, write guard: a
    writer's INSERT needs none of them) and their caches, which would keep every
    distinct text.  ``foreign_key_checks`` is off while the plan's own rows, consistent
    by construction, go in; on again before the connection returns to the pool.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        self.dbapi: Any = dbapi
        url = conn.engine.url
        self.where = f"primary {url.host}:{url.port or 3306}"
        self.render = renderer(self.dbapi.escape, self.dbapi.literal)

    def execute(self, sql: str) -> None:
        try:
            with self.dbapi.cursor() as cursor:
                cursor.execute(sql)
        except pymysql.Error as exc:
            translated = translate(exc, self.where)
            if translated is None:
                raise DBAPIError.instance(sql[:200], None, exc, pymysql.Error) from exc
            if isinstance(translated, ConnectionLost):
                self.conn.invalidate()
            raise translated from exc

    def __enter__(self) -> _Floor:
        self.execute("SET SESSION foreign_key_checks = 0")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.conn.invalidated:
            self.execute("SET SESSION foreign_key_checks = 1")


def seed(
    db: Database,
    *,
    instances: int = 1000,
    hosts: int = 2,
    seed: int = 0,
    now: datetime | None = None,
    batch: int = 2000,
    first_host: int = 0,
) -> SeedSummary:
    """Insert :func:`plan`'s rows on the primary in one ``db.writer()`` transaction.

    Rows go in with one multi-row ``INSERT`` per ``batch`` rows, sent straight on the
    session's DBAPI connection (:class:`_Floor`), each rendered while the server runs
    the one before; each batch of instances is followed by one ``UPDATE`` that sets
    ``deleted = id`` on its deleted instances.  compute_nodes.service_id is linked with
    one SELECT of the new services.  ``first_host`` adds hosts to a seeded fleet:
    ``compute-<first_host + 1>`` on (pass another ``seed``, so uuids differ).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, not {batch}")
    started = time.monotonic()
    moment = _normalize(schema.utcnow() if now is None else now)
    rows = plan(instances, hosts, seed, moment, first_host=first_host)
    tables = schema.metadata.tables
    services, nodes = tables["services"], tables["compute_nodes"]
    with db.writer() as session, _Floor(session.connection()) as floor:
        render = floor.render
        for sql in insert_statements(services, rows["services"], batch, render):
            floor.execute(sql)
        host_list = [row["host"] for row in rows["services"]]
        service_ids = {
            host: service_id
            for host, service_id in floor.conn.execute(
                select(services.c.host, services.c.id).where(
                    services.c.host.in_(host_list),
                    services.c.binary == "nova-compute",
                    services.c.deleted == 0,
                )
            )
        }

        def statements() -> Iterator[str]:
            yield from insert_statements(
                nodes,
                [{**r, "service_id": service_ids.get(r["host"])} for r in rows["compute_nodes"]],
                batch,
                render,
            )
            for chunk in _chunks(rows[_INSTANCES_KEY], batch):
                yield from insert_statements(tables[_INSTANCES_KEY], chunk, batch, render)
                doomed = [row["uuid"] for row in chunk if row["vm_state"] == "deleted"]
                if doomed:
                    yield _soft_delete(doomed, render)
            for name in _CHILD_TABLES:
                yield from insert_statements(tables[name], rows[name], batch, render)

        for sql in _ahead(statements()):
            floor.execute(sql)
    return SeedSummary.from_plan(rows, seed=seed, now=moment, elapsed=time.monotonic() - started)
