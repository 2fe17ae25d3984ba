"""Unit tests for offload.compute.driver: the deterministic simulated hypervisor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections import Counter

import pytest

from offload.compute.driver import HYPERVISOR_VERSION, FakeDriver, PowerState
from offload.compute.network import macs_for

HOST = "compute-1"


def uuids(n: int, prefix: str = "inst") -> list[str]:
    """``n`` stable uuids (uuid5, so the tests themselves are deterministic)."""
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/{i}")) for i in range(n)]


def exercise(driver: FakeDriver) -> list[object]:
    """A fixed script of calls touching every random stream; returns everything observed."""
    instances = uuids(20)
    volumes = [(u, f"vol-{i}") for i, u in enumerate(instances[:8])]
    seen: list[object] = []
    for u in instances[:10]:
        driver.plug(u)
    driver.destroy(instances[3])
    driver.power_off(instances[4])
    for _ in range(30):
        seen.append(driver.get_all_bw_counters(instances))
        seen.append(driver.get_all_volume_usage(volumes))
    seen.append([driver.get_info(u) for u in uuids(200, "power")])
    seen.append([driver.instance_exists(u) for u in uuids(200, "exists")])
    seen.append([driver.delete_instance_files(u) for u in uuids(50, "del") for _ in range(3)])
    seen.append(list(driver.calls))
    seen.append(list(driver.counter_resets))
    seen.append(driver.list_instance_uuids())
    return seen


# -- determinism ----------------------------------------------------------------


def test_same_seed_and_calls_give_the_same_results() -> None:
    a = exercise(FakeDriver(HOST, seed=7, counter_reset_rate=0.2))
    b = exercise(FakeDriver(HOST, seed=7, counter_reset_rate=0.2))
    assert a == b


def test_different_seeds_differ_in_every_stream() -> None:
    a = exercise(FakeDriver(HOST, seed=1, counter_reset_rate=0.2))
    b = exercise(FakeDriver(HOST, seed=2, counter_reset_rate=0.2))
    # bw, volume, power, exists, delete: each differs on its own
    assert a[0] != b[0]
    assert a[1] != b[1]
    assert a[-6] != b[-6]
    assert a[-5] != b[-5]
    assert a[-4] != b[-4]


def test_a_keys_counters_do_not_depend_on_other_keys() -> None:
    target = uuids(1, "target")
    alone = FakeDriver(HOST, seed=3, counter_reset_rate=0.3)
    crowded = FakeDriver(HOST, seed=3, counter_reset_rate=0.3)
    for i in range(20):
        expected = alone.get_all_bw_counters(target)
        crowded.get_all_bw_counters(uuids(5, f"noise{i}"))
        assert crowded.get_all_bw_counters(target) == expected


_SUMMARY_SCRIPT = """
import json
from offload.compute.driver import FakeDriver
d = FakeDriver("h", seed=11, counter_reset_rate=0.3)
ids = [f"uuid-{i}" for i in range(30)]
for u in ids[:10]:
    d.plug(u)
out = [d.get_all_bw_counters(ids) for _ in range(5)]
out.append([int(d.get_info(u)) for u in ids])
out.append([d.instance_exists(u) for u in ids])
out.append([d.delete_instance_files(u) for u in ids])
out.append(d.list_instance_uuids())
print(json.dumps(out))
"""


def test_results_do_not_depend_on_python_hash_randomisation() -> None:
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", _SUMMARY_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1


# -- counters -------------------------------------------------------------------


def test_bw_counters_have_novas_shape_one_per_instance_and_mac() -> None:
    driver = FakeDriver(HOST)
    instances = uuids(3)
    rows = driver.get_all_bw_counters(instances)
    assert [(r["uuid"], r["mac_address"]) for r in rows] == [
        (u, mac) for u in instances for mac in macs_for(u)
    ]
    for row in rows:
        assert set(row) == {"uuid", "mac_address", "bw_in", "bw_out"}
        assert isinstance(row["bw_in"], int)
        assert isinstance(row["bw_out"], int)


def test_first_poll_starts_at_a_random_nonzero_value() -> None:
    driver = FakeDriver(HOST, seed=5)
    rows = driver.get_all_bw_counters(uuids(10))
    starts = {(r["bw_in"], r["bw_out"]) for r in rows}
    assert len(starts) == 10
    assert all(isinstance(v, int) and v > 0 for pair in starts for v in pair)
    assert driver.counter_resets == []


def _bw_series(
    driver: FakeDriver, instances: list[str], polls: int
) -> dict[str, list[tuple[int, int]]]:
    series: dict[str, list[tuple[int, int]]] = {}
    for _ in range(polls):
        for row in driver.get_all_bw_counters(instances):
            bw_in, bw_out = row["bw_in"], row["bw_out"]
            assert isinstance(bw_in, int)
            assert isinstance(bw_out, int)
            series.setdefault(row["uuid"], []).append((bw_in, bw_out))
    return series


def test_bw_counters_grow_except_when_a_reset_is_logged() -> None:
    driver = FakeDriver(HOST, seed=9, counter_reset_rate=0.2)
    instances = uuids(5)
    series = _bw_series(driver, instances, 100)
    resets = {(u, poll) for kind, u, _mac, poll in driver.counter_resets if kind == "bw"}
    grew = dropped = 0
    for u, values in series.items():
        for poll in range(1, len(values)):
            for old, new in zip(values[poll - 1], values[poll], strict=True):
                if (u, poll) in resets:
                    assert new < old or old == 0, (u, poll, old, new)
                    dropped += 1
                else:
                    assert new > old, (u, poll, old, new)
                    grew += 1
    assert grew > 0
    assert dropped > 0


def test_reset_counters_restart_near_zero() -> None:
    driver = FakeDriver(HOST, seed=4, counter_reset_rate=1.0)
    u = uuids(1)
    first = driver.get_all_bw_counters(u)[0]
    second = driver.get_all_bw_counters(u)[0]
    assert isinstance(first["bw_in"], int)
    assert isinstance(second["bw_in"], int)
    assert second["bw_in"] < first["bw_in"]
    assert second["bw_in"] <= 1 << 16


@pytest.mark.parametrize("rate", [0.05, 0.3])
def test_resets_happen_at_about_the_configured_rate(rate: float) -> None:
    driver = FakeDriver(HOST, seed=21, counter_reset_rate=rate)
    instances = uuids(20)
    polls = 201  # the first poll of a key cannot reset
    for _ in range(polls):
        driver.get_all_bw_counters(instances)
    observed = len(driver.counter_resets) / (len(instances) * (polls - 1))
    assert abs(observed - rate) < 0.03, observed


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 0), (1.0, 20 * 9)])
def test_reset_rate_extremes(rate: float, expected: int) -> None:
    driver = FakeDriver(HOST, counter_reset_rate=rate)
    for _ in range(10):
        driver.get_all_bw_counters(uuids(20))
    assert len(driver.counter_resets) == expected


def test_volume_usage_has_novas_keys_and_is_monotonic_except_on_resets() -> None:
    driver = FakeDriver(HOST, seed=13, counter_reset_rate=0.2)
    mappings = [(u, f"vol-{i}") for i, u in enumerate(uuids(4))]
    history: dict[tuple[str, str], list[tuple[int, ...]]] = {}
    for _ in range(80):
        rows = driver.get_all_volume_usage(mappings)
        assert [(r["instance"], r["volume"]) for r in rows] == mappings
        for row in rows:
            assert set(row) == {"volume", "instance", "rd_req", "rd_bytes", "wr_req", "wr_bytes"}
            values = (row["rd_req"], row["rd_bytes"], row["wr_req"], row["wr_bytes"])
            assert all(isinstance(v, int) for v in values)
            history.setdefault((row["instance"], row["volume"]), []).append(values)
    resets = {(u, v, poll) for kind, u, v, poll in driver.counter_resets if kind == "volume"}
    assert resets
    for (u, v), series in history.items():
        for poll in range(1, len(series)):
            pairs = zip(series[poll - 1], series[poll], strict=True)
            if (u, v, poll) in resets:
                assert all(new < old or old == 0 for old, new in pairs)
            else:
                assert all(new > old for old, new in pairs)


def test_bw_and_volume_counters_are_separate_streams() -> None:
    driver = FakeDriver(HOST, counter_reset_rate=0.0)
    u = uuids(1)[0]
    driver.get_all_volume_usage([(u, "vol-a")])
    driver.get_all_volume_usage([(u, "vol-a")])
    fresh = FakeDriver(HOST, counter_reset_rate=0.0)
    assert driver.get_all_bw_counters([u]) == fresh.get_all_bw_counters([u])


def test_concurrent_polls_lose_no_updates() -> None:
    u = uuids(1)
    threads_n, polls = 8, 100
    shared = FakeDriver(HOST, seed=17, counter_reset_rate=0.1)
    barrier = threading.Barrier(threads_n)

    def worker() -> None:
        barrier.wait()
        for _ in range(polls):
            shared.get_all_bw_counters(u)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    sequential = FakeDriver(HOST, seed=17, counter_reset_rate=0.1)
    for _ in range(threads_n * polls):
        sequential.get_all_bw_counters(u)
    # a key's values depend only on how many polls it has had
    assert shared.get_all_bw_counters(u) == sequential.get_all_bw_counters(u)
    assert sorted(shared.counter_resets) == sorted(sequential.counter_resets)


# -- power state ----------------------------------------------------------------


def test_default_power_states_are_stable_and_mostly_running() -> None:
    driver = FakeDriver(HOST, seed=2)
    instances = uuids(4000)
    states = [driver.get_info(u) for u in instances]
    assert states == [driver.get_info(u) for u in instances]
    counts = Counter(states)
    assert set(counts) == {
        PowerState.RUNNING,
        PowerState.SHUTDOWN,
        PowerState.PAUSED,
        PowerState.CRASHED,
    }
    share = {state: n / len(instances) for state, n in counts.items()}
    assert abs(share[PowerState.RUNNING] - 0.90) < 0.02
    assert abs(share[PowerState.SHUTDOWN] - 0.05) < 0.015
    assert abs(share[PowerState.PAUSED] - 0.03) < 0.012
    assert abs(share[PowerState.CRASHED] - 0.02) < 0.01


def test_power_state_values_are_novas() -> None:
    assert {s.name: int(s) for s in PowerState} == {
        "NOSTATE": 0,
        "RUNNING": 1,
        "PAUSED": 3,
        "SHUTDOWN": 4,
        "CRASHED": 6,
        "SUSPENDED": 7,
    }


def test_power_state_changes_stick() -> None:
    driver = FakeDriver(HOST)
    u = uuids(1)[0]
    driver.set_power_state(u, PowerState.SUSPENDED)
    assert driver.get_info(u) is PowerState.SUSPENDED
    assert driver.get_info(u) is PowerState.SUSPENDED
    driver.power_off(u)
    assert driver.get_info(u) is PowerState.SHUTDOWN
    driver.power_on(u)
    assert driver.get_info(u) is PowerState.RUNNING
    driver.set_power_state(u, PowerState.CRASHED)
    driver.get_all_bw_counters([u])
    assert driver.get_info(u) is PowerState.CRASHED
    assert driver.calls == [
        ("set_power_state", u, "SUSPENDED"),
        ("power_off", u),
        ("power_on", u),
        ("set_power_state", u, "CRASHED"),
    ]


def test_plug_keeps_the_default_state_unless_told() -> None:
    driver = FakeDriver(HOST, seed=6)
    a, b = uuids(2)
    before = driver.get_info(a)
    driver.plug(a)
    assert driver.get_info(a) is before
    driver.plug(b, PowerState.PAUSED)
    assert driver.get_info(b) is PowerState.PAUSED


# -- running instances ------------------------------------------------------------


def test_plug_and_destroy() -> None:
    driver = FakeDriver(HOST, still_running_rate=0.0)
    a, b, c = uuids(3)
    for u in (c, a, b):
        driver.plug(u)
    assert driver.list_instance_uuids() == [c, a, b]
    assert driver.instance_exists(a)
    driver.destroy(a)
    assert driver.get_info(a) is PowerState.NOSTATE
    assert not driver.instance_exists(a)
    assert driver.list_instance_uuids() == [c, b]
    assert [r["uuid"] for r in driver.get_all_bw_counters([a, b])] == [b] * len(macs_for(b))
    assert driver.get_all_volume_usage([(a, "vol-1")]) == []
    driver.plug(a)  # a new VM for the same uuid
    assert driver.instance_exists(a)
    assert driver.get_info(a) is PowerState.RUNNING
    assert driver.calls[-2:] == [("destroy", a), ("plug", a)]


def test_destroying_an_unknown_vm_makes_it_gone() -> None:
    driver = FakeDriver(HOST, still_running_rate=1.0)
    u = uuids(1)[0]
    assert driver.instance_exists(u)
    driver.destroy(u)
    assert not driver.instance_exists(u)
    assert driver.get_info(u) is PowerState.NOSTATE


def test_unseen_instances_are_still_running_at_the_configured_rate_and_stably() -> None:
    driver = FakeDriver(HOST, seed=8, still_running_rate=0.05)
    instances = uuids(4000, "deleted")
    answers = [driver.instance_exists(u) for u in instances]
    assert answers == [driver.instance_exists(u) for u in instances]
    assert abs(sum(answers) / len(instances) - 0.05) < 0.015
    assert driver.list_instance_uuids() == []  # asking registers nothing
    assert driver.calls == []


@pytest.mark.parametrize(("rate", "expected"), [(0.0, False), (1.0, True)])
def test_still_running_rate_extremes(rate: float, expected: bool) -> None:
    driver = FakeDriver(HOST, still_running_rate=rate)
    assert {driver.instance_exists(u) for u in uuids(100)} == {expected}


# -- deleting files ---------------------------------------------------------------


def test_delete_failures_are_deterministic_per_uuid_and_attempt() -> None:
    def outcomes(seed: int) -> list[list[bool]]:
        driver = FakeDriver(HOST, seed=seed, delete_failure_rate=0.5)
        return [[driver.delete_instance_files(u) for _ in range(4)] for u in uuids(50)]

    first = outcomes(1)
    assert first == outcomes(1)
    assert first != outcomes(2)
    # the outcome depends on the attempt: some uuid fails, then succeeds
    assert any(not tries[0] and tries[1] for tries in first)


def test_delete_attempts_are_recorded() -> None:
    driver = FakeDriver(HOST)
    a, b = uuids(2)
    for _ in range(3):
        driver.delete_instance_files(a)
    driver.delete_instance_files(b)
    assert driver.delete_attempts(a) == 3
    assert driver.delete_attempts(b) == 1
    assert driver.delete_attempts(uuids(3)[2]) == 0
    assert driver.calls == [("delete_instance_files", a)] * 3 + [("delete_instance_files", b)]


def test_delete_failures_happen_at_the_configured_rate() -> None:
    driver = FakeDriver(HOST, seed=3, delete_failure_rate=0.1)
    results = [driver.delete_instance_files(u) for u in uuids(2000) for _ in range(2)]
    assert abs(results.count(False) / len(results) - 0.1) < 0.02


@pytest.mark.parametrize(("rate", "expected"), [(0.0, True), (1.0, False)])
def test_delete_failure_rate_extremes(rate: float, expected: bool) -> None:
    driver = FakeDriver(HOST, delete_failure_rate=rate)
    assert {driver.delete_instance_files(u) for u in uuids(100)} == {expected}


# -- resources --------------------------------------------------------------------


NOVA_RESOURCE_KEYS = {
    "vcpus",
    "memory_mb",
    "local_gb",
    "vcpus_used",
    "memory_mb_used",
    "local_gb_used",
    "hypervisor_type",
    "hypervisor_version",
    "hypervisor_hostname",
    "cpu_info",
    "disk_available_least",
    "supported_instances",
}


def test_available_resource_keys_and_values() -> None:
    driver = FakeDriver(HOST, vcpus=48, memory_mb=262144, local_gb=4000)
    (node,) = driver.get_available_nodes()
    assert node == f"{HOST}.node"
    res = driver.get_available_resource(node)
    assert set(res) == NOVA_RESOURCE_KEYS
    assert (res["vcpus"], res["memory_mb"], res["local_gb"]) == (48, 262144, 4000)
    assert (res["vcpus_used"], res["memory_mb_used"], res["local_gb_used"]) == (0, 0, 0)
    assert res["hypervisor_type"] == "fake"
    assert res["hypervisor_version"] == HYPERVISOR_VERSION == 1000
    assert res["hypervisor_hostname"] == node
    assert res["disk_available_least"] == 4000
    assert isinstance(res["cpu_info"], str)
    cpu = json.loads(res["cpu_info"])
    topology = cpu["topology"]
    assert cpu["arch"] == "x86_64"
    assert topology["sockets"] * topology["cores"] * topology["threads"] == 48
    assert isinstance(res["supported_instances"], str)
    assert json.loads(res["supported_instances"]) == [["x86_64", "fake", "hvm"]]


def test_several_nodes() -> None:
    driver = FakeDriver(HOST, nodes=3)
    nodes = driver.get_available_nodes()
    assert nodes == [f"{HOST}.node0", f"{HOST}.node1", f"{HOST}.node2"]
    assert [driver.get_available_resource(n)["hypervisor_hostname"] for n in nodes] == nodes
    with pytest.raises(ValueError, match="not a node"):
        driver.get_available_resource("elsewhere.node")


# -- actions the tasks take ---------------------------------------------------------


def test_task_actions_are_logged_and_take_effect() -> None:
    driver = FakeDriver(HOST)
    a, b, c, d = uuids(4)
    for u in (a, b):
        driver.set_power_state(u, PowerState.SHUTDOWN)
    driver.calls.clear()
    driver.poll_rebooting_instances(120, [a, b])
    assert driver.get_info(a) is driver.get_info(b) is PowerState.RUNNING
    driver.set_power_state(c, PowerState.PAUSED)
    driver.unrescue(c)
    assert driver.get_info(c) is PowerState.RUNNING
    driver.confirm_migration(42, c)
    driver.plug(d)
    driver.shelve_offload(d)
    assert not driver.instance_exists(d)
    assert driver.get_info(d) is PowerState.NOSTATE
    assert d not in driver.list_instance_uuids()
    assert driver.calls == [
        ("poll_rebooting_instances", "120", a, b),
        ("set_power_state", c, "PAUSED"),
        ("unrescue", c),
        ("confirm_migration", "42", c),
        ("plug", d),
        ("shelve_offload", d),
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nodes": 0},
        {"vcpus": -1},
        {"counter_reset_rate": 1.5},
        {"delete_failure_rate": -0.1},
        {"still_running_rate": float("nan")},
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FakeDriver(HOST, **kwargs)  # type: ignore[arg-type]


def test_empty_host_is_rejected() -> None:
    with pytest.raises(ValueError):
        FakeDriver("")
