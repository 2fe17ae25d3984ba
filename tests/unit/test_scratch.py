"""DatabaseJanitor's and OwnTestbed's checks that need no server, and the plugin's surface."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from offload.config import DatabaseSettings, Settings, TestbedSettings
from offload.errors import ConfigError, TestbedError
from offload.pytest import plugin
from offload.pytest.options import OPTIONS
from offload.testbed.janitor import READER_PRIVILEGES, SERVICE_PRIVILEGES, DatabaseJanitor
from offload.testbed.own import OwnTestbed
from offload.urls import parse_url, with_database

PRIMARY = parse_url("mysql+pymysql://nova:pw@127.0.0.1:1/nova", option="test")
REPLICA = parse_url("mysql+pymysql://nova_ro:pw@127.0.0.1:2/nova", option="test")
ADMIN = with_database(parse_url("mysql+pymysql://offload_admin:pw@127.0.0.1:1/x", option="t"), None)


def _settings(*, admin: bool = True) -> Settings:
    return Settings(
        database=DatabaseSettings(connection=PRIMARY, slave_connections=(REPLICA, REPLICA)),
        testbed=TestbedSettings(admin_connection=ADMIN if admin else None),
    )


def test_janitor_needs_the_privileged_account() -> None:
    with pytest.raises(ConfigError, match=r"admin_connection"):
        DatabaseJanitor(_settings(admin=False))


@pytest.mark.parametrize("name", ["nova`; DROP DATABASE nova; --", "", "x" * 65, "a-b"])
def test_janitor_refuses_a_name_it_would_have_to_quote(name: str) -> None:
    with pytest.raises(ConfigError, match="not a database name"):
        DatabaseJanitor(_settings(), name=name or "-")


def test_janitor_grants_each_service_account_once_and_never_the_admin() -> None:
    janitor = DatabaseJanitor(_settings(), prefix="offload_u_")
    assert janitor.name.startswith("offload_u_")
    assert janitor.grants() == [("nova", SERVICE_PRIVILEGES), ("nova_ro", READER_PRIVILEGES)]
    as_admin = Settings(
        database=DatabaseSettings(connection=ADMIN, slave_connections=(ADMIN,)),
        testbed=TestbedSettings(admin_connection=ADMIN),
    )
    assert DatabaseJanitor(as_admin).grants() == []  # --testbed=external: nothing to revoke


def test_janitor_settings_point_at_the_scratch_database() -> None:
    janitor = DatabaseJanitor(_settings(), name="offload_fixed")
    assert janitor.settings.require_connection().database == "offload_fixed"
    assert [u.database for u in janitor.settings.database.slave_connections] == [
        "offload_fixed",
        "offload_fixed",
    ]
    janitor.drop()  # nothing was made: nothing to undo, no server asked


def test_own_testbed_removes_its_temporary_directory_when_it_cannot_start() -> None:
    prefix = f"offload-unit-{id(object())}-"
    with (
        pytest.raises(TestbedError, match="at least one replica"),
        OwnTestbed(replicas=0, prefix=prefix),
    ):
        pytest.fail("never up")
    assert not list(Path(tempfile.gettempdir()).glob(f"{prefix}*"))


def test_own_testbed_outside_its_block_says_so() -> None:
    own = OwnTestbed()
    with pytest.raises(TestbedError, match="not up"):
        _ = own.info
    with pytest.raises(TestbedError, match="not up"):
        _ = own.topology


def test_every_plugin_fixture_is_prefixed_and_every_option_has_an_ini_twin() -> None:
    fixtures = [name for name in plugin.__all__ if not name.startswith("pytest_")]
    assert fixtures and all(name.startswith("offload_") for name in fixtures)
    assert sorted(fixtures) == sorted(
        name for name in vars(plugin) if type(getattr(plugin, name)).__name__.startswith("Fixture")
    )
    assert all(ini == "offload_" + option[2:].replace("-", "_") for option, ini in OPTIONS.items())
