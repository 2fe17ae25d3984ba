"""Unit tests for offload.config: nova.conf-style files and environment overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from offload.config import (
    DEFAULT_TESTBED_CONFIG,
    LagPolicy,
    Settings,
    find_config_file,
    load_settings,
)
from offload.errors import ConfigError

#: distinctive, so a leak into any message is unmistakable
SECRET = "Zq9-SeKr1t-pw"

NOVA_CONF = f"""\
[DEFAULT]
# a compute node's nova.conf, as deployment tools write it
host = compute-7
my_ip = 10.0.0.17
compute_driver = libvirt.LibvirtDriver
instance_name_template = instance-%08x
log_date_format = %Y-%m-%d %H:%M:%S
logging_context_format_string = %(asctime)s.%(msecs)03d %(levelname)s [%(request_id)s] %(message)s
state_path = /var/lib/nova
transport_url = rabbit://openstack:rabbitpw@ctl:5672/
debug = false
# oslo MultiStrOpt: the key repeats
pci_passthrough_whitelist = {{"vendor_id": "8086"}}
pci_passthrough_whitelist = {{"vendor_id": "10de"}}
reserved_host_memory_mb = 512
cpu_allocation_ratio = 16.0
instance_usage_audit = True
instance_usage_audit_period = month

[database]
connection = mysql+pymysql://nova:{SECRET}@ctl/nova?charset=utf8
slave_connection =
max_pool_size = 10
max_overflow = 20
pool_timeout = 60
connection_recycle_time = 1800
idle_timeout = 3600
max_retries = -1
retry_interval = 10
db_max_retries = 20
connection_debug = 0
use_db_reconnect = false
mysql_enable_ndb = false

[api_database]
connection = mysql+pymysql://nova:{SECRET}@ctl/nova_api?charset=utf8

[glance]
api_servers = http://ctl:9292

[neutron]
url = http://ctl:9696
auth_type = password
password = neutronpw
region_name = RegionOne

[vnc]
enabled = true
server_listen = $my_ip
novncproxy_base_url = http://ctl:6080/vnc_auto.html

[oslo_concurrency]
lock_path = /var/lib/nova/tmp
"""


def write(tmp_path: Path, text: str, name: str = "nova.conf") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def conf(tmp_path: Path, **sections: dict[str, str]) -> Path:
    """A minimal config: a primary connection plus the given sections."""
    body = [f"[database]\nconnection = mysql+pymysql://nova:{SECRET}@db1:3306/nova\n"]
    for section, options in sections.items():
        lines = "".join(f"{key} = {value}\n" for key, value in options.items())
        if section == "database":
            body[0] += lines
        else:
            body.append(f"[{section}]\n{lines}")
    return write(tmp_path, "\n".join(body))


def config_error(path: Path | None, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ or {})
    assert SECRET not in str(info.value)
    assert SECRET not in info.value.message
    return info.value


# --- a real nova.conf ---------------------------------------------------------


def test_real_nova_conf_is_accepted_unchanged(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, NOVA_CONF), {})

    assert settings.host == "compute-7"
    url = settings.database.connection
    assert url is not None
    assert url.drivername == "mysql+pymysql"
    assert (url.username, url.password, url.host, url.database) == ("nova", SECRET, "ctl", "nova")
    assert dict(url.query) == {"charset": "utf8"}
    assert settings.database.max_pool_size == 10
    assert settings.database.max_overflow == 20
    assert settings.database.pool_timeout == 60
    assert settings.database.connection_recycle_time == 1800
    assert settings.source == tmp_path / "nova.conf"


def test_empty_slave_connection_means_no_replica(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, NOVA_CONF), {})

    assert settings.database.slave_connections == ()
    assert settings.has_replica is False


def test_default_section_is_not_inherited_by_other_sections(tmp_path: Path) -> None:
    # configparser's DEFAULT would leak `host` and friends into [replica]
    # and make them "unknown options" there.
    path = conf(tmp_path, DEFAULT={"host": "c1", "debug": "true"}, replica={"max_lag": "2"})

    settings = load_settings(path, {})

    assert settings.host == "c1"
    assert settings.replica.max_lag == 2.0


def test_one_slave_connection(tmp_path: Path) -> None:
    path = conf(
        tmp_path, database={"slave_connection": f"mysql+pymysql://nova_ro:{SECRET}@db2:3307/nova"}
    )

    settings = load_settings(path, {})

    assert settings.has_replica
    (replica,) = settings.database.slave_connections
    assert (replica.username, replica.host, replica.port) == ("nova_ro", "db2", 3307)


def test_comma_separated_slave_connections(tmp_path: Path) -> None:
    path = conf(
        tmp_path,
        database={"slave_connection": "mysql+pymysql://ro:a@db2/nova, mysql://ro:b@db3:3308/nova,"},
    )

    replicas = load_settings(path, {}).database.slave_connections

    assert [(u.host, u.port, u.password) for u in replicas] == [
        ("db2", None, "a"),
        ("db3", 3308, "b"),
    ]
    assert all(u.drivername == "mysql+pymysql" for u in replicas)


def test_comma_inside_a_password_does_not_split_the_url(tmp_path: Path) -> None:
    # RFC 3986 allows "," unescaped in userinfo; Nova takes such a URL as is.
    path = conf(tmp_path, database={"slave_connection": "mysql+pymysql://ro:pa,ss@db2/nova"})

    (replica,) = load_settings(path, {}).database.slave_connections

    assert (replica.password, replica.host) == ("pa,ss", "db2")


def test_mysql_scheme_is_normalised_to_pymysql(tmp_path: Path) -> None:
    path = write(tmp_path, f"[database]\nconnection = mysql://nova:{SECRET}@db1/nova\n")

    url = load_settings(path, {}).database.connection

    assert url is not None
    assert url.drivername == "mysql+pymysql"


def test_defaults_without_a_file() -> None:
    settings = load_settings(None, {})

    assert settings.database.connection is None
    assert settings.database.max_pool_size == 5
    assert settings.replica.max_lag == 1.0
    assert settings.replica.lag_policy is LagPolicy.PRIMARY
    assert settings.replica.causal_reads is True
    assert settings.source is None
    assert settings.host  # the machine's name


def test_replica_section_is_parsed(tmp_path: Path) -> None:
    path = conf(
        tmp_path,
        replica={
            "max_lag": "0.25",
            "lag_policy": "Skip",
            "causal_reads": "off",
            "causal_timeout": "0",
            "heartbeat_interval": "0.5",
            "heartbeat_source": "pt-heartbeat",
            "wait_timeout": "12",
        },
    )

    replica = load_settings(path, {}).replica

    assert replica.max_lag == 0.25
    assert replica.lag_policy is LagPolicy.SKIP
    assert replica.causal_reads is False
    assert replica.causal_timeout == 0.0
    assert replica.heartbeat_interval == 0.5
    assert replica.heartbeat_source == "pt-heartbeat"
    assert replica.wait_timeout == 12.0


# --- environment overrides ----------------------------------------------------


def test_environment_overrides_beat_the_file(tmp_path: Path) -> None:
    path = conf(
        tmp_path, DEFAULT={"host": "from-file"}, replica={"max_lag": "5", "lag_policy": "skip"}
    )
    environ = {
        "OFFLOAD_REPLICA__MAX_LAG": "0.05",
        "OFFLOAD_REPLICA__LAG_POLICY": "stale",
        "OFFLOAD_DEFAULT__HOST": "from-env",
        "OFFLOAD_DATABASE__MAX_POOL_SIZE": "3",
        "OFFLOAD_CONFIG": "ignored-here.conf",  # names the file, not an option
        "PATH": "/usr/bin",
    }

    settings = load_settings(path, environ)

    assert settings.replica.max_lag == 0.05
    assert settings.replica.lag_policy is LagPolicy.STALE
    assert settings.host == "from-env"
    assert settings.database.max_pool_size == 3


def test_environment_override_without_a_file() -> None:
    settings = load_settings(
        None,
        {
            "OFFLOAD_DATABASE__CONNECTION": f"mysql://nova:{SECRET}@db1/nova",
            "OFFLOAD_DATABASE__SLAVE_CONNECTION": "mysql://ro:x@db2/nova,mysql+pymysql://ro:y@db3/nova",
        },
    )

    assert settings.require_connection().host == "db1"
    assert [u.host for u in settings.database.slave_connections] == ["db2", "db3"]


def test_empty_environment_override_removes_the_replica(tmp_path: Path) -> None:
    path = conf(tmp_path, database={"slave_connection": "mysql+pymysql://ro:x@db2/nova"})

    settings = load_settings(path, {"OFFLOAD_DATABASE__SLAVE_CONNECTION": ""})

    assert not settings.has_replica


def test_unknown_environment_override_is_an_error(tmp_path: Path) -> None:
    err = config_error(conf(tmp_path), {"OFFLOAD_REPLICA__MAX_LAGG": "1"})

    assert "OFFLOAD_REPLICA__MAX_LAGG" in str(err)
    assert "OFFLOAD_REPLICA__MAX_LAG" in (err.hint or "")  # the list of known ones


def test_unknown_environment_section_is_an_error() -> None:
    err = config_error(None, {"OFFLOAD_GLANCE__API_SERVERS": "http://x"})

    assert "OFFLOAD_GLANCE__API_SERVERS" in str(err)


def test_bad_environment_value_names_the_option() -> None:
    err = config_error(None, {"OFFLOAD_REPLICA__MAX_LAG": "soon"})

    assert "max_lag" in str(err)
    assert "'soon'" in str(err)


# --- errors ---------------------------------------------------------------


@pytest.mark.parametrize("section", ["replica", "testbed"])
def test_unknown_option_in_offload_sections_is_named(tmp_path: Path, section: str) -> None:
    err = config_error(conf(tmp_path, **{section: {"max_lagg": "1"}}))

    assert f"[{section}] max_lagg" in str(err)
    assert str(tmp_path / "nova.conf") in str(err)


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("replica", "max_lag", "abc", "number"),
        ("replica", "max_lag", "-1", "> 0"),
        ("replica", "max_lag", "0", "> 0"),
        ("replica", "max_lag", "nan", "finite"),
        ("replica", "max_lag", "inf", "finite"),
        ("replica", "causal_timeout", "-0.5", ">= 0"),
        ("replica", "heartbeat_interval", "0", "> 0"),
        ("replica", "lag_policy", "bogus", "primary | skip | stale"),
        ("replica", "causal_reads", "maybe", "true or false"),
        ("replica", "heartbeat_source", "cron", "offload | pt-heartbeat"),
        ("database", "max_pool_size", "0", ">= 1"),
        ("database", "max_pool_size", "2.5", "whole number"),
        ("database", "max_overflow", "-1", ">= 0"),
        ("testbed", "backend", "vagrant", "native | compose | external"),
    ],
)
def test_wrong_types_give_a_useful_message(
    tmp_path: Path, section: str, key: str, value: str, expected: str
) -> None:
    err = config_error(conf(tmp_path, **{section: {key: value}}))

    assert f"[{section}] {key}" in str(err)
    assert expected in str(err)
    assert value in str(err)


@pytest.mark.parametrize(
    "url",
    [
        f"mysql+pymysql://nova:{SECRET}@/nova",  # no host
        f"mysql+pymysql://nova:{SECRET}@db1",  # no database
        f"postgresql://nova:{SECRET}@db1/nova",
        f"mysql+pymysql://nova:{SECRET}@db1:port/nova",  # does not parse
        f"nova:{SECRET}@db1/nova",  # no scheme
        f"mysql+pymysql:/nova:{SECRET}@db1/nova",  # mangled scheme
    ],
)
def test_password_never_appears_in_url_errors(tmp_path: Path, url: str) -> None:
    err = config_error(write(tmp_path, f"[database]\nconnection = {url}\n"))

    assert "[database] connection" in str(err)


def test_password_never_appears_in_replica_url_errors(tmp_path: Path) -> None:
    path = conf(tmp_path, database={"slave_connection": f"sqlite://nova:{SECRET}@db2/nova"})

    err = config_error(path)

    assert "slave_connection" in str(err)


def test_password_never_appears_when_a_line_does_not_parse(tmp_path: Path) -> None:
    path = write(tmp_path, f"[database]\nconnection mysql+pymysql nova {SECRET}\n")

    err = config_error(path)

    assert "line 2" in str(err)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    err = config_error(tmp_path / "absent.conf")

    assert "absent.conf" in str(err)
    assert "does not exist" in str(err)


@pytest.mark.parametrize(
    "text",
    [
        "this is not an ini file\njust words\n",
        f"connection = mysql://nova:{SECRET}@db1/nova\n[database]\n",
        "<html><body>404</body></html>\n",
    ],
)
def test_non_ini_garbage_is_a_config_error(tmp_path: Path, text: str) -> None:
    err = config_error(write(tmp_path, text))

    assert "not an INI file" in str(err)


def test_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nova.conf"
    path.write_bytes(b"\x00\xff\xfe\x80garbage")

    err = config_error(path)

    assert "cannot read" in str(err)


def test_a_directory_is_a_config_error(tmp_path: Path) -> None:
    err = config_error(tmp_path)

    assert "cannot read" in str(err)


# --- the Settings object ------------------------------------------------------


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(conf(tmp_path), {})

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.host = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.replica.max_lag = 9.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.database.max_pool_size = 9  # type: ignore[misc]


def test_require_connection_returns_the_primary(tmp_path: Path) -> None:
    url = load_settings(conf(tmp_path), {}).require_connection()

    assert (url.host, url.port, url.database) == ("db1", 3306, "nova")


def test_require_connection_without_one_says_how_to_get_one(tmp_path: Path) -> None:
    path = write(tmp_path, "[replica]\nmax_lag = 1\n")
    settings = load_settings(path, {})

    with pytest.raises(ConfigError) as info:
        settings.require_connection()

    assert "no [database] connection" in str(info.value)
    assert str(path) in str(info.value)
    assert "make up" in str(info.value)


def test_require_connection_without_any_file() -> None:
    with pytest.raises(ConfigError, match="make up"):
        Settings().require_connection()


def test_testbed_admin_connection_needs_no_database(tmp_path: Path) -> None:
    path = conf(
        tmp_path,
        testbed={
            "backend": "native",
            "dir": "/srv/tb",
            "admin_connection": f"mysql+pymysql://root:{SECRET}@127.0.0.1:33061",
            "replica_admin_connections": "mysql+pymysql://root:a@127.0.0.1:33062/, mysql+pymysql://root:b@127.0.0.1:33063",
        },
    )

    testbed = load_settings(path, {}).testbed

    assert testbed.backend == "native"
    assert testbed.dir == "/srv/tb"
    assert testbed.admin_connection is not None
    assert testbed.admin_connection.port == 33061
    assert not testbed.admin_connection.database
    assert [u.port for u in testbed.replica_admin_connections] == [33062, 33063]


# --- find_config_file ---------------------------------------------------------


def test_find_config_file_prefers_the_explicit_path(tmp_path: Path) -> None:
    found = find_config_file("given.conf", {"OFFLOAD_CONFIG": "env.conf"}, cwd=tmp_path)

    assert found == Path("given.conf")


def test_find_config_file_uses_the_environment_next(tmp_path: Path) -> None:
    (tmp_path / DEFAULT_TESTBED_CONFIG).parent.mkdir()
    (tmp_path / DEFAULT_TESTBED_CONFIG).write_text("[database]\n")

    found = find_config_file(None, {"OFFLOAD_CONFIG": "env.conf"}, cwd=tmp_path)

    assert found == Path("env.conf")


def test_find_config_file_falls_back_to_the_testbed_config(tmp_path: Path) -> None:
    (tmp_path / DEFAULT_TESTBED_CONFIG).parent.mkdir()
    (tmp_path / DEFAULT_TESTBED_CONFIG).write_text("[database]\n")

    assert find_config_file(None, {}, cwd=tmp_path) == tmp_path / DEFAULT_TESTBED_CONFIG


def test_find_config_file_finds_nothing(tmp_path: Path) -> None:
    assert find_config_file(None, {"OFFLOAD_CONFIG": ""}, cwd=tmp_path) is None


# --- oslo.config conventions ----------------------------------------------------


def test_oslo_substitution_and_dollar_escape(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[DEFAULT]\nmy_ip = 10.0.0.5\n[database]\n"
        "connection = mysql+pymysql://nova:pa$$word@$my_ip/nova\n"
        "slave_connection = mysql+pymysql://ro:x@${my_ip}:3307/nova\n",
    )
    settings = load_settings(path, {})
    assert settings.database.connection is not None
    assert settings.database.connection.password == "pa$word"
    assert settings.database.connection.host == "10.0.0.5"
    assert settings.database.slave_connections[0].port == 3307
    assert settings.database.slave_connections[0].host == "10.0.0.5"


def test_reference_to_an_unset_option_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, f"[database]\nconnection = mysql+pymysql://nova:{SECRET}@$nohost/n\n")
    error = config_error(path)
    assert "$nohost" in str(error) and "$$" in str(error)


def test_deprecated_idle_timeout_sets_the_recycle_time(tmp_path: Path) -> None:
    assert (
        load_settings(
            conf(tmp_path, database={"idle_timeout": "1200"}), {}
        ).database.connection_recycle_time
        == 1200
    )
    both = conf(tmp_path, database={"idle_timeout": "1200", "connection_recycle_time": "900"})
    assert load_settings(both, {}).database.connection_recycle_time == 900


def test_devstack_dbcounter_plugin_is_dropped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[database]\nconnection = mysql+pymysql://nova:p@db/nova?charset=utf8&plugin=dbcounter\n",
    )
    url = load_settings(path, {}).database.connection
    assert url is not None and dict(url.query) == {"charset": "utf8"}


def test_port_out_of_range_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, f"[database]\nconnection = mysql+pymysql://nova:{SECRET}@db:99999/n\n")
    assert "99999" in str(config_error(path))


def test_only_the_sections_asked_for_are_read(tmp_path: Path) -> None:
    path = tmp_path / "nova.conf"
    path.write_text(
        "[database]\nconnection = mysql+pymysql://nova:pw@host:port/nova\n"
        "[compute]\nreboot_timeout = 60\n"
    )

    settings = load_settings(path, {}, sections=("compute",))

    assert settings.compute.reboot_timeout == 60
    assert settings.database.connection is None  # not read: the bad URL is not parsed
    with pytest.raises(ConfigError, match=r"\[database\] connection"):
        load_settings(path, {})


def test_unknown_options_are_refused_in_sections_not_read(tmp_path: Path) -> None:
    path = tmp_path / "nova.conf"
    path.write_text("[replica]\nmax_lagg = 1\n")

    with pytest.raises(ConfigError, match="max_lagg"):
        load_settings(path, {}, sections=("compute",))
    with pytest.raises(ConfigError, match="OFFLOAD_REPLICA__MAXLAG"):
        load_settings(None, {"OFFLOAD_REPLICA__MAXLAG": "1"}, sections=("compute",))
