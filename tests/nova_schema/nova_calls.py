"""Nova's own object API on a testbed: run by the side environment's Python, not offload's.

    python nova_calls.py NOVA_CONF HOST RUN setup  # Nova writes a small host's worth of rows
    python nova_calls.py NOVA_CONF HOST RUN calls  # the periodic tasks' reads, use_slave both ways

``NOVA_CONF`` is a nova.conf whose ``[database] connection`` is the primary and
``slave_connection`` the replica.  Every statement Nova sends is tagged, first thing, with
``/* nova-proof run=RUN phase=... call=... use_slave=... */`` (a SQLAlchemy event on every engine),
so the servers' own statement history tells which call's statements ran where.  Prints one
JSON document: per call, its rows and what the client saw (statements, servers' ports).

Each read is the call a nova-compute periodic task makes (Nova 34's
``nova/compute/manager.py``), with that task's filters and ``expected_attrs``.
"""

from __future__ import annotations

import datetime
import json
import sys
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from nova import config, context, objects, utils
from nova.compute import task_states, vm_states
from nova.network import model as network_model
from sqlalchemy import event
from sqlalchemy.engine import Engine

#: the tag of the statements sent now; the event below puts it first in each
TAG: dict[str, str] = {"run": "-", "phase": "none", "call": "none", "use_slave": "-"}
SEEN: list[dict[str, Any]] = []


def _tag(conn: Any, cursor: Any, statement: str, parameters: Any, ctx: Any, many: bool) -> Any:
    tag = (
        f"/* nova-proof run={TAG['run']} phase={TAG['phase']} call={TAG['call']} "
        f"use_slave={TAG['use_slave']} */"
    )
    SEEN.append(
        {
            "call": TAG["call"],
            "use_slave": TAG["use_slave"],
            "verb": statement.lstrip().split(None, 1)[0].upper(),
            "port": conn.engine.url.port,
        }
    )
    return f"{tag} {statement}", parameters


def _flavor() -> objects.Flavor:
    return objects.Flavor(
        id=1,
        flavorid="1",
        name="m1.tiny",
        memory_mb=512,
        vcpus=1,
        root_gb=1,
        ephemeral_gb=0,
        swap=0,
        rxtx_factor=1.0,
        vcpu_weight=None,
        disabled=False,
        is_public=True,
        extra_specs={},
        projects=[],
        description=None,
    )


def setup(ctx: context.RequestContext, host: str) -> dict[str, Any]:
    """Nova writes one compute node and instances in the states the tasks look for."""
    node = objects.ComputeNode(
        ctx,
        host=host,
        hypervisor_hostname=f"{host}.node",
        uuid=str(uuidlib.uuid4()),
        vcpus=8,
        memory_mb=16384,
        local_gb=100,
        vcpus_used=0,
        memory_mb_used=0,
        local_gb_used=0,
        hypervisor_type="fake",
        hypervisor_version=1,
        cpu_info="{}",
    )
    node.create()
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    states = [
        ("active", None),
        ("active", task_states.REBOOTING),
        ("rescued", None),
        ("shelved", None),
        ("soft-delete", None),
        ("resized", None),
    ]
    made = []
    for vm_state, task_state in states:
        instance = objects.Instance(
            ctx,
            uuid=str(uuidlib.uuid4()),
            host=host,
            node=node.hypervisor_hostname,
            compute_id=node.id,
            project_id="proof-project",
            user_id="proof-user",
            vm_state=vm_state,
            task_state=task_state,
            power_state=1,
            memory_mb=512,
            vcpus=1,
            root_gb=1,
            ephemeral_gb=0,
            instance_type_id=1,
            flavor=_flavor(),
            old_flavor=None,
            new_flavor=None,
            launched_at=now - datetime.timedelta(days=40),
            system_metadata={"image_base_image_ref": "proof"},
            info_cache=objects.InstanceInfoCache(network_info=network_model.NetworkInfo()),
        )
        instance.create()
        made.append(instance.uuid)
    objects.BlockDeviceMapping(
        ctx,
        instance_uuid=made[0],
        source_type="volume",
        destination_type="volume",
        volume_id=str(uuidlib.uuid4()),
        device_name="/dev/vdb",
        boot_index=None,
    ).create()
    migration = objects.Migration(
        ctx,
        instance_uuid=made[-1],
        source_compute="elsewhere",
        dest_compute=host,
        source_node="elsewhere.node",
        dest_node=node.hypervisor_hostname,
        dest_compute_id=node.id,
        status="finished",
        migration_type="resize",
    )
    migration.create()
    migration.status = "confirming"  # two saves: Nova itself stamps updated_at
    migration.save()
    migration.status = "finished"
    migration.save()
    gone = objects.Instance.get_by_uuid(ctx, made[4])
    gone.destroy()  # deleted = id; cleaned 0: what _run_pending_deletes looks for
    return {"instances": made, "node": node.id, "migration": migration.id}


def _calls(ctx: context.RequestContext, host: str, use_slave: bool) -> dict[str, Callable[[], Any]]:
    """The reads of nova-compute's periodic tasks, as Nova 34 makes them."""
    uuids = [i.uuid for i in objects.InstanceList.get_by_host(ctx, host, use_slave=use_slave)]

    def pending_deletes() -> Any:
        with utils.temporary_mutation(ctx, read_deleted="yes"):
            return objects.InstanceList.get_by_filters(
                ctx,
                {"deleted": True, "soft_deleted": False, "host": host, "cleaned": False},
                expected_attrs=["system_metadata"],
                use_slave=use_slave,
            )

    def volume_bdms() -> Any:  # _get_host_volume_bdms
        found = []
        for instance in objects.InstanceList.get_by_host(ctx, host, use_slave=use_slave):
            found.extend(
                objects.BlockDeviceMappingList.get_by_instance_uuid(
                    ctx, instance.uuid, use_slave=use_slave
                )
            )
        return found

    begin, end = utils.last_completed_audit_period()
    return {
        "_sync_power_states": lambda: objects.InstanceList.get_by_host(
            ctx, host, expected_attrs=[], use_slave=use_slave
        ),
        "_heal_instance_info_cache": lambda: objects.Instance.get_by_uuid(
            ctx,
            uuids[0],
            expected_attrs=["system_metadata", "info_cache", "flavor"],
            use_slave=use_slave,
        ),
        "_poll_rebooting_instances": lambda: objects.InstanceList.get_by_filters(
            ctx,
            {
                "task_state": [
                    task_states.REBOOTING,
                    task_states.REBOOT_STARTED,
                    task_states.REBOOT_PENDING,
                ],
                "host": host,
            },
            expected_attrs=[],
            use_slave=use_slave,
        ),
        "_poll_rescued_instances": lambda: objects.InstanceList.get_by_filters(
            ctx,
            {"vm_state": vm_states.RESCUED, "host": host},
            expected_attrs=["system_metadata"],
            use_slave=use_slave,
        ),
        "_poll_unconfirmed_resizes": lambda: objects.MigrationList.get_unconfirmed_by_dest_compute(
            ctx, 0, host, use_slave=use_slave
        ),
        "_poll_shelved_instances": lambda: objects.InstanceList.get_by_filters(
            ctx,
            {"vm_state": vm_states.SHELVED, "task_state": None, "host": host},
            expected_attrs=["system_metadata"],
            use_slave=use_slave,
        ),
        "_instance_usage_audit": lambda: objects.InstanceList.get_active_by_window_joined(
            ctx,
            begin,
            end,
            host=host,
            expected_attrs=["system_metadata", "info_cache", "metadata", "flavor"],
            use_slave=use_slave,
        ),
        "_poll_volume_usage": volume_bdms,
        "update_available_resource": lambda: objects.ComputeNodeList.get_all_by_host(
            ctx, host, use_slave=use_slave
        ),
        "_reclaim_queued_deletes": lambda: objects.InstanceList.get_by_filters(
            ctx,
            {"vm_state": vm_states.SOFT_DELETED, "task_state": None, "host": host},
            expected_attrs=objects.instance.INSTANCE_DEFAULT_FIELDS,
            use_slave=use_slave,
        ),
        "_run_pending_deletes": pending_deletes,
    }


def calls(ctx: context.RequestContext, host: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for use_slave in (True, False):
        TAG.update(call="listing", use_slave=str(int(use_slave)))
        for name, call in _calls(ctx, host, use_slave).items():
            TAG.update(call=name)
            found = call()
            rows = len(found) if hasattr(found, "__len__") else 1
            results[f"{name}:{int(use_slave)}"] = {"rows": rows}
    return results


def main(argv: list[str]) -> int:
    conf, host, run, phase = argv[1:5]
    config.parse_args(["nova-proof", "--config-file", conf], init_rpc=False)
    objects.register_all()
    event.listen(Engine, "before_cursor_execute", _tag, retval=True)
    ctx = context.get_admin_context()
    TAG.update(run=run, phase=phase)
    if phase == "setup":
        TAG.update(call="setup", use_slave="0")
        result = setup(ctx, host)
    else:
        result = calls(ctx, host)
    json.dump({"result": result, "statements": SEEN}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
