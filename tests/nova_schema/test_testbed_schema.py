"""``testbed up --schema nova``: the testbed's own nova database is made by Nova's migrations.

`make test SCHEMA=nova` (``OFFLOAD_SCHEMA=nova``) starts the session's native testbed with
it: nova-manage db sync ran once when the testbed came up, and the replica has every table.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import inspect, text

from offload.dberrors import unpooled_engine
from offload.testbed import TestbedInfo
from offload.testbed.files import NativeState, read_state


@pytest.fixture
def native(nova_testbed: TestbedInfo) -> TestbedInfo:
    if nova_testbed.backend != "native" or nova_testbed.dir is None:
        pytest.skip("the schema option is the native testbed's")
    return nova_testbed


def test_the_testbeds_nova_database_is_novas_own(native: TestbedInfo) -> None:
    assert native.schema == "nova"
    assert native.dir is not None
    state = read_state(native.dir)
    assert isinstance(state, NativeState) and state.nova_schema is not None
    made = state.nova_schema
    for url in (native.admin_url("nova"), *native.replica_admin_urls("nova")):
        engine = unpooled_engine(url, name="server")
        try:
            with engine.connect() as conn:
                tables = set(inspect(conn).get_table_names())
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        finally:
            engine.dispose()
        assert {"instances", "instance_extra", "migrations", "block_device_mapping"} <= tables
        assert len(tables) >= made.tables == 111
        assert revision == made.revision


def test_a_nova_schema_testbed_is_not_taken_for_an_offload_one(native: TestbedInfo) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "offload.cli",
            "testbed",
            "up",
            "--backend",
            "native",
            "--dir",
            str(native.dir),
            "--schema",
            "offload",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1
    assert "was made with schema nova, asked for offload" in result.stderr
    assert "make clean" in result.stderr
