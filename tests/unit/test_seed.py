"""Unit tests of offload.seed's plan: no server, only the rows it would insert."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from pymysql.converters import escape_item
from sqlalchemy import Table

from offload import schema
from offload.compute.network import macs_for
from offload.seed import (
    AUDIT_TASK_NAME,
    MIX,
    Kind,
    Plan,
    Render,
    SeedSummary,
    audit_periods,
    host_names,
    insert_statements,
    instance_kind,
    node_name,
    plan,
    renderer,
)

NOW = datetime(2025, 3, 10, 12, 30, 0)
INSTANCES = 2000
HOSTS = 4


@pytest.fixture(scope="module")
def rows() -> Plan:
    return plan(INSTANCES, HOSTS, 7, NOW)


def live_uuids(rows: Plan) -> set[str]:
    return {r["uuid"] for r in rows["instances"] if not instance_kind(r).deleted}


def table(name: str) -> Table:
    return schema.metadata.tables[name]


# --- determinism ------------------------------------------------------------


def test_plan_is_deterministic_for_a_seed(rows: Plan) -> None:
    assert plan(INSTANCES, HOSTS, 7, NOW) == rows


def test_plan_differs_across_seeds(rows: Plan) -> None:
    other = plan(INSTANCES, HOSTS, 8, NOW)
    assert {r["uuid"] for r in other["instances"]}.isdisjoint(r["uuid"] for r in rows["instances"])
    assert [instance_kind(r) for r in other["instances"]] != [
        instance_kind(r) for r in rows["instances"]
    ]


def test_plan_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="hosts"):
        plan(10, 0, 0, NOW)
    with pytest.raises(ValueError, match="instances"):
        plan(-1, 1, 0, NOW)


def test_aware_now_is_taken_as_utc_in_whole_seconds() -> None:
    aware = datetime(2025, 3, 10, 13, 30, 0, 123456, tzinfo=UTC) - timedelta(hours=1)
    assert plan(50, 2, 3, aware) == plan(50, 2, 3, NOW)


# --- the shape of every row -------------------------------------------------


def test_every_table_is_planned_parents_first(rows: Plan) -> None:
    assert list(rows) == [name for name in schema.NOVA_TABLES if name != "heartbeat"]


def test_rows_fit_their_table(rows: Plan) -> None:
    for name, planned in rows.items():
        columns = table(name).columns
        required = {
            c.name
            for c in columns
            if not c.nullable and not c.primary_key and c.server_default is None
        }
        keys = set(planned[0]) if planned else set()
        for row in planned:
            # executemany needs one key set per statement
            assert set(row) == keys, name
            assert keys <= set(columns.keys()), (name, keys - set(columns.keys()))
            missing = [c for c in required if row.get(c) is None]
            assert not missing, (name, missing)
            assert "id" not in row
            for column in ("uuid", "instance_uuid", "volume_id", "project_id"):
                value = row.get(column)
                if value is None:
                    continue
                length = getattr(columns[column].type, "length", None)
                if length is not None:
                    assert len(value) <= length, (name, column)


def test_times_are_whole_seconds_and_not_in_the_future(rows: Plan) -> None:
    for name, planned in rows.items():
        for row in planned:
            for column, value in row.items():
                if isinstance(value, datetime):
                    assert value.tzinfo is None and value.microsecond == 0, (name, column)
                    assert value <= NOW, (name, column, value)


# --- hosts ------------------------------------------------------------------


def test_every_host_has_one_service_and_one_compute_node(rows: Plan) -> None:
    hosts = host_names(HOSTS)
    assert hosts == ["compute-1", "compute-2", "compute-3", "compute-4"]
    assert [r["host"] for r in rows["services"]] == hosts
    for service in rows["services"]:
        assert (service["binary"], service["topic"]) == ("nova-compute", "compute")
        assert service["report_count"] == 0
        assert service["disabled"] is False
    assert [r["host"] for r in rows["compute_nodes"]] == hosts
    for node in rows["compute_nodes"]:
        assert node["hypervisor_hostname"] == node_name(node["host"]) == f"{node['host']}.node"
        assert node["vcpus"] > 0 and node["memory_mb"] > 0 and node["local_gb"] > 0
        assert node["vcpus_used"] == node["memory_mb_used"] == node["local_gb_used"] == 0
        assert (node["hypervisor_type"], node["hypervisor_version"]) == ("fake", 1000)
        assert node["cpu_info"] == "{}"


def test_instances_are_spread_evenly_over_the_hosts(rows: Plan) -> None:
    per_host = Counter(r["host"] for r in rows["instances"])
    assert per_host == dict.fromkeys(host_names(HOSTS), INSTANCES // HOSTS)
    for row in rows["instances"]:
        assert row["node"] == node_name(row["host"])
        assert row["launched_at"] < NOW


# --- the mix ----------------------------------------------------------------


def test_mix_shares_add_up_and_the_rest_is_active() -> None:
    assert sum(MIX.values()) == pytest.approx(1.0)
    assert MIX[Kind.ACTIVE] >= 0.70
    assert set(MIX) == set(Kind)


def test_mix_proportions_on_every_host(rows: Plan) -> None:
    per_host = INSTANCES // HOSTS
    for host in host_names(HOSTS):
        kinds = Counter(instance_kind(r) for r in rows["instances"] if r["host"] == host)
        for kind, share in MIX.items():
            expected = share * per_host
            assert abs(kinds[kind] - expected) <= max(3, 0.1 * expected), (host, kind)


def test_mix_with_uneven_hosts_stays_close() -> None:
    planned = plan(997, 3, 1, NOW)
    kinds = Counter(instance_kind(r) for r in planned["instances"])
    assert sum(kinds.values()) == 997
    for kind, share in MIX.items():
        assert abs(kinds[kind] - share * 997) <= 3, kind


def test_states_of_each_kind(rows: Plan) -> None:
    expected = {
        Kind.ACTIVE: ("active", 1, None),
        Kind.STOPPED: ("stopped", 4, None),
        Kind.DELETED: ("deleted", 0, None),
        Kind.CLEANED: ("deleted", 0, None),
        Kind.SOFT_DELETED: ("soft-delete", 4, None),
        Kind.SHELVED: ("shelved", 4, None),
        Kind.RESCUED: ("rescued", 1, None),
        Kind.REBOOTING: ("active", 1, "rebooting"),
        Kind.RESIZED: ("resized", 1, None),
    }
    for row in rows["instances"]:
        kind = instance_kind(row)
        state = (row["vm_state"], row["power_state"], row["task_state"])
        if kind is Kind.MIGRATING:
            assert state in {("active", 1, "resize_migrating"), ("active", 4, "resize_migrated")}
        else:
            assert state == expected[kind], (kind, state)
        assert row["deleted"] == 0  # seed() sets deleted = id after the insert


def test_deleted_not_cleaned_instances(rows: Plan) -> None:
    deleted = [r for r in rows["instances"] if instance_kind(r) is Kind.DELETED]
    assert deleted
    attempts = {
        m["instance_uuid"]: int(m["value"])
        for m in rows["instance_system_metadata"]
        if m["key"] == schema.CLEAN_ATTEMPTS_KEY
    }
    for row in deleted:
        assert row["vm_state"] == "deleted" and row["cleaned"] == 0
        assert row["terminated_at"] is not None and row["deleted_at"] is not None
        assert row["launched_at"] < row["terminated_at"] <= NOW
        assert row["deleted_at"] >= NOW - timedelta(days=3, seconds=1)
    seen = Counter(attempts.get(r["uuid"], 0) for r in deleted)
    assert seen[0] > 0  # never tried yet
    assert sum(seen[n] for n in range(1, 5)) > 0
    assert 0 < seen[5] < len(deleted) / 4
    assert set(seen) <= set(range(6))


def test_cleaned_instances_have_tried_at_least_once(rows: Plan) -> None:
    attempts = {
        m["instance_uuid"]: int(m["value"])
        for m in rows["instance_system_metadata"]
        if m["key"] == schema.CLEAN_ATTEMPTS_KEY
    }
    cleaned = [r for r in rows["instances"] if instance_kind(r) is Kind.CLEANED]
    assert cleaned
    for row in cleaned:
        assert row["cleaned"] == 1
        assert attempts[row["uuid"]] >= 1


def test_soft_deleted_ages_spread_from_minutes_to_days(rows: Plan) -> None:
    ages = [
        NOW - r["deleted_at"] for r in rows["instances"] if instance_kind(r) is Kind.SOFT_DELETED
    ]
    assert ages and all(age >= timedelta(minutes=1) for age in ages)
    assert min(ages) < timedelta(hours=1)
    assert max(ages) > timedelta(days=1)


def test_shelved_instances_carry_their_system_metadata(rows: Plan) -> None:
    meta: dict[str, dict[str, str]] = {}
    for m in rows["instance_system_metadata"]:
        meta.setdefault(m["instance_uuid"], {})[m["key"]] = m["value"]
    shelved = [r for r in rows["instances"] if instance_kind(r) is Kind.SHELVED]
    assert shelved
    for row in shelved:
        keys = meta[row["uuid"]]
        shelved_at = datetime.fromisoformat(keys[schema.SHELVED_AT_KEY])
        assert shelved_at.replace(microsecond=0) == row["updated_at"]
        assert datetime.strptime(keys[schema.SHELVED_AT_KEY], "%Y-%m-%dT%H:%M:%S.%f")
        assert keys["shelved_host"] == row["host"]
        assert len(keys["shelved_image_id"]) == 36


def test_migrations_of_resized_and_migrating_instances(rows: Plan) -> None:
    by_uuid = {r["uuid"]: r for r in rows["instances"]}
    migrations = {m["instance_uuid"]: m for m in rows["migrations"]}
    kinds = {u: instance_kind(r) for u, r in by_uuid.items()}
    assert {u for u, k in kinds.items() if k in (Kind.RESIZED, Kind.MIGRATING)} == set(migrations)
    for instance_uuid, migration in migrations.items():
        instance = by_uuid[instance_uuid]
        assert migration["old_instance_type_id"] != migration["new_instance_type_id"]
        assert migration["source_node"] == node_name(migration["source_compute"])
        assert migration["dest_node"] == node_name(migration["dest_compute"])
        assert migration["source_compute"] != migration["dest_compute"]
        if kinds[instance_uuid] is Kind.RESIZED:
            assert migration["status"] == "finished"
            assert migration["dest_compute"] == instance["host"]
            assert instance["instance_type_id"] == migration["new_instance_type_id"]
        else:
            assert migration["status"] in {"migrating", "post-migrating"}
            assert migration["source_compute"] == instance["host"]
            assert instance["instance_type_id"] == migration["old_instance_type_id"]


# --- children ---------------------------------------------------------------


def test_child_rows_reference_planned_instances(rows: Plan) -> None:
    uuids = {r["uuid"] for r in rows["instances"]}
    assert len(uuids) == INSTANCES
    for name in (
        "instance_system_metadata",
        "instance_info_caches",
        "block_device_mapping",
        "migrations",
        "volume_usage_cache",
    ):
        assert rows[name], name
        assert {r["instance_uuid"] for r in rows[name]} <= uuids, name
    assert {r["uuid"] for r in rows["bw_usage_cache"]} <= uuids


def test_one_info_cache_per_live_instance_with_macs_for(rows: Plan) -> None:
    caches = {c["instance_uuid"]: c for c in rows["instance_info_caches"]}
    assert set(caches) == live_uuids(rows)
    assert len(caches) == len(rows["instance_info_caches"])
    for instance_uuid, cache in caches.items():
        vifs = json.loads(cache["network_info"])
        assert [vif["address"] for vif in vifs] == list(macs_for(instance_uuid))


def test_bandwidth_rows_use_macs_for_and_the_audit_periods(rows: Plan) -> None:
    previous, current = audit_periods(NOW)
    assert (previous, current) == (datetime(2025, 2, 1), datetime(2025, 3, 1))
    live = live_uuids(rows)
    with_bw = {r["uuid"] for r in rows["bw_usage_cache"]}
    assert with_bw <= live
    assert 0.5 < len(with_bw) / len(live) < 0.7
    starts = Counter(r["start_period"] for r in rows["bw_usage_cache"])
    assert set(starts) == {previous, current} and all(starts.values())
    keys = [(r["uuid"], r["mac"], r["start_period"]) for r in rows["bw_usage_cache"]]
    assert len(keys) == len(set(keys))
    for row in rows["bw_usage_cache"]:
        assert row["mac"] in macs_for(row["uuid"])
        assert 0 < row["bw_in"] <= row["last_ctr_in"]
        assert 0 < row["bw_out"] <= row["last_ctr_out"]
        assert row["last_refreshed"] <= NOW


def test_audit_periods_wrap_the_year() -> None:
    assert audit_periods(datetime(2025, 1, 1, 0, 0, 0)) == (
        datetime(2024, 12, 1),
        datetime(2025, 1, 1),
    )


def test_every_instance_has_a_root_disk_and_some_have_volumes(rows: Plan) -> None:
    bdms = rows["block_device_mapping"]
    roots = [b for b in bdms if b["boot_index"] == 0]
    assert sorted(b["instance_uuid"] for b in roots) == sorted(r["uuid"] for r in rows["instances"])
    for root in roots:
        assert (root["source_type"], root["destination_type"], root["device_name"]) == (
            "image",
            "local",
            "/dev/vda",
        )
    volumes = [b for b in bdms if b["source_type"] == "volume"]
    assert all(b["destination_type"] == "volume" and b["volume_id"] for b in volumes)
    assert {b["instance_uuid"] for b in volumes} <= live_uuids(rows)
    share = len({b["instance_uuid"] for b in volumes}) / len(live_uuids(rows))
    assert 0.18 < share < 0.32
    usage = {u["volume_id"] for u in rows["volume_usage_cache"]}
    assert usage <= {b["volume_id"] for b in volumes}
    assert 0.35 < len(usage) / len(volumes) < 0.65


def test_task_log_for_about_half_the_hosts(rows: Plan) -> None:
    previous, current = audit_periods(NOW)
    logs = rows["task_log"]
    assert len(logs) == HOSTS // 2
    for log in logs:
        assert (log["task_name"], log["state"]) == (AUDIT_TASK_NAME, "DONE")
        assert (log["period_beginning"], log["period_ending"]) == (previous, current)
        assert log["task_items"] > 0 and log["errors"] == 0
    assert len(plan(3, 1, 0, NOW)["task_log"]) == 1


# --- the summary ------------------------------------------------------------


def test_summary_counts_rows_kinds_and_hosts(rows: Plan) -> None:
    summary = SeedSummary.from_plan(rows, seed=7, now=NOW, elapsed=1.25)
    assert summary.instances == INSTANCES
    assert summary.hosts == tuple(host_names(HOSTS))
    assert dict(summary.rows) == {name: len(planned) for name, planned in rows.items()}
    assert sum(summary.kinds.values()) == INSTANCES
    assert all(sum(c.values()) == INSTANCES // HOSTS for c in summary.per_host.values())
    data = summary.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["elapsed_seconds"] == 1.25
    assert data["kinds"]["deleted"] == summary.kinds[Kind.DELETED]
    with pytest.raises(AttributeError):
        summary.seed = 3  # type: ignore[misc]


def test_zero_instances_still_plans_the_hosts() -> None:
    empty = plan(0, 2, 0, NOW)
    assert len(empty["services"]) == len(empty["compute_nodes"]) == 2
    assert all(not empty[name] for name in list(empty)[2:] if name != "task_log")


# --- more hosts for a seeded fleet ------------------------------------------


def test_first_host_plans_the_next_hosts() -> None:
    first = plan(40, 2, 1, NOW)
    more = plan(60, 3, 2, NOW, first_host=2)
    assert [r["host"] for r in more["services"]] == ["compute-3", "compute-4", "compute-5"]
    assert {r["host"] for r in more["instances"]} == {"compute-3", "compute-4", "compute-5"}
    assert [r["host_ip"] for r in first["compute_nodes"] + more["compute_nodes"]] == [
        f"192.168.0.{10 + i}" for i in range(5)
    ]
    assert {r["uuid"] for r in first["instances"]}.isdisjoint(r["uuid"] for r in more["instances"])
    migrations = more["migrations"]
    assert migrations and all(
        m["source_compute"] in {"compute-3", "compute-4", "compute-5"} for m in migrations
    )
    with pytest.raises(ValueError, match="first_host"):
        plan(1, 1, 0, NOW, first_host=-1)


# --- the rendered statements ------------------------------------------------


def pymysql_render() -> Render:
    def literal(value: object) -> str:
        return str(escape_item(value, "utf8mb4"))

    return renderer(literal, literal)


def test_rendered_literals_are_pymysqls(rows: Plan) -> None:
    render = pymysql_render()
    odd = [
        "O'Brien",
        "back\\slash",
        'quote " and\nnewline\r\x00\x1a',
        "naïve ☃",
        True,
        False,
        None,
        0,
        -7,
        2**40,
        1.5,
        Decimal("2.50"),
        datetime(2025, 3, 10, 12, 30, 0, 1234),
        datetime(2025, 3, 10, 12, 30, 0),
        date(2025, 3, 10),
    ]
    values = odd + [v for planned in rows.values() for row in planned for v in row.values()]
    for value in values:
        assert render(value) == escape_item(value, "utf8mb4"), value


def test_insert_statements_one_per_batch_with_every_row() -> None:
    render = pymysql_render()
    services = plan(0, 5, 0, NOW)["services"]
    statements = list(insert_statements(table("services"), services, 2, render))
    assert len(statements) == 3
    assert all(s.startswith("INSERT INTO `services` (`created_at`, ") for s in statements)
    assert sum(s.count("'nova-compute'") for s in statements) == 5
    assert list(insert_statements(table("services"), [], 2, render)) == []
    with pytest.raises(ValueError, match="no column"):
        list(insert_statements(table("services"), [{"nope": 1}], 2, render))
