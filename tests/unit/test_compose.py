"""The compose backend without a Docker engine: bootstrap SQL, names, config, choices.

The compose DB containers fill mysql/bootstrap/*.sql with a shell loop
(mysql/entrypoint.sh); these tests run that loop and compare its SQL with what the
native backend sends — for MariaDB and for the MySQL 8.4 path, which no server
here can run.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import make_url

from offload.errors import TestbedError
from offload.testbed import compose as compose_module
from offload.testbed import images as images_module
from offload.testbed.compose import ComposeTopology, offline_wanted, project_name
from offload.testbed.container import (
    compute_host,
    parse_ptr_answer,
    ptr_query,
    render_config,
    tls_from_environ,
)
from offload.testbed.files import ComposeState
from offload.testbed.mysqld import find_mysql_dir, render_sql, split_sql
from offload.testbed.tls import TlsFiles, ensure_certificates
from offload.testbed.topology import TESTBED_COMPUTE_OPTIONS, Credentials

MYSQL_DIR = find_mysql_dir()
REPO = MYSQL_DIR.parent
VALUES = {
    **Credentials("nova-pw_1", "ro-PW-2", "repl_3", "adm-4").placeholders(),
    "PRIMARY_HOST": "primary",
    "PRIMARY_PORT": "3306",
    "TLS_ON": "1",
    "TLS_CA": "/etc/offload/tls/ca.pem",
}


def published_hosts(rendered: str) -> list[str]:
    """The host address of every published port in `compose config` output (v1 or v2)."""
    lines = [ln.strip() for ln in rendered.splitlines()]
    long_syntax = [
        ln.split(":", 1)[1].strip().strip("'\"") for ln in lines if ln.startswith("host_ip:")
    ]
    if long_syntax:  # compose v2 renders ports as mappings
        return long_syntax
    return [
        ln[2:].strip("'\"").split(":", 1)[0]
        for ln in lines
        if ln.startswith("- ") and any(f":{port}" in ln for port in (3306, 8080, 8081))
    ]


def shell_render(template: Path, values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(MYSQL_DIR / "entrypoint.sh"), "render", str(template)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", **values},
    )


@pytest.mark.parametrize("name", ["primary.sql", "replica-mariadb.sql", "replica-mysql.sql"])
def test_the_entrypoint_fills_the_bootstrap_as_the_native_backend_does(name: str) -> None:
    template = MYSQL_DIR / "bootstrap" / name
    result = shell_render(template, VALUES)
    assert result.returncode == 0, result.stderr
    assert split_sql(result.stdout) == split_sql(render_sql(template, VALUES))


def test_the_mysql_replica_bootstrap_uses_gtid_auto_position() -> None:
    result = shell_render(MYSQL_DIR / "bootstrap" / "replica-mysql.sql", VALUES)
    change, start = split_sql(result.stdout)
    assert change.startswith("CHANGE REPLICATION SOURCE TO")
    for clause in (
        "SOURCE_HOST = 'primary'",
        "SOURCE_PORT = 3306",
        "SOURCE_USER = 'repl'",
        "SOURCE_PASSWORD = 'repl_3'",
        "SOURCE_AUTO_POSITION = 1",
        "GET_SOURCE_PUBLIC_KEY = 1",
    ):
        assert clause in change
    assert start == "START REPLICA"


def test_the_mariadb_replica_bootstrap_uses_slave_pos() -> None:
    result = shell_render(MYSQL_DIR / "bootstrap" / "replica-mariadb.sql", VALUES)
    change, start = split_sql(result.stdout)
    assert "MASTER_USE_GTID = slave_pos" in change and "MASTER_HOST = 'primary'" in change
    assert start == "START SLAVE"


@pytest.mark.parametrize("name", ["replica-mariadb.sql", "replica-mysql.sql"])
def test_the_replica_channel_is_plain_unless_tls_is_asked_for(name: str) -> None:
    template = MYSQL_DIR / "bootstrap" / name
    keyword = "MASTER" if "mariadb" in name else "SOURCE"
    on = split_sql(shell_render(template, VALUES).stdout)[0]
    assert f"{keyword}_SSL = 1" in on and f"{keyword}_SSL_VERIFY_SERVER_CERT = 1" in on
    assert f"{keyword}_SSL_CA = '/etc/offload/tls/ca.pem'" in on
    plain_values = {k: v for k, v in VALUES.items() if not k.startswith("TLS_")}
    plain = split_sql(shell_render(template, plain_values).stdout)[0]
    assert f"{keyword}_SSL = 0" in plain and f"{keyword}_SSL_CA = ''" in plain


def test_the_entrypoint_refuses_a_quote_and_a_missing_value() -> None:
    template = MYSQL_DIR / "bootstrap" / "primary.sql"
    quoted = shell_render(template, {**VALUES, "NOVA_PASSWORD": "a'b"})
    assert quoted.returncode != 0 and "quote" in quoted.stderr
    missing = shell_render(template, {k: v for k, v in VALUES.items() if k != "ADMIN_PASSWORD"})
    assert missing.returncode != 0 and "ADMIN_PASSWORD" in missing.stderr


@pytest.mark.parametrize(
    ("reverse", "host"),
    [
        ("offload_compute_1.offload_default", "compute-1"),  # compose v1
        ("offload-compute-3.offload_default", "compute-3"),  # compose v2
        ("offload-pytest4242_compute_2.offload-pytest4242_default", "compute-2"),
        ("compute_12", "compute-12"),
        ("0ffb5fc09414", "0ffb5fc09414"),
        (None, "fallback-host"),
    ],
)
def test_compute_host_from_the_container_name(reverse: str | None, host: str) -> None:
    expected = host if reverse != "0ffb5fc09414" else "fallback-host"
    assert compute_host({}, reverse_name=reverse, hostname="fallback-host") == expected


def test_an_explicit_compute_host_wins() -> None:
    assert (
        compute_host({"OFFLOAD_COMPUTE_HOST": "compute-9"}, reverse_name="offload_compute_1.x")
        == "compute-9"
    )


def test_the_ptr_query_and_its_answer() -> None:
    query = ptr_query("172.18.0.4", 0x1234)
    assert query[:2] == b"\x12\x34"
    assert b"\x014\x010\x0218\x03172\x07in-addr\x04arpa\x00" in query
    # the answer repeats the question, then a PTR record whose owner is a pointer
    name = b"\x11offload_compute_1\x0foffload_default\x00"
    answer = (
        struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 1, 0, 0)
        + query[12:]
        + b"\xc0\x0c"
        + struct.pack("!HHIH", 12, 1, 600, len(name))
        + name
    )
    assert parse_ptr_answer(answer, 0x1234) == "offload_compute_1.offload_default"
    assert parse_ptr_answer(answer, 0x9999) is None  # not our query
    refused = struct.pack("!HHHHHH", 0x1234, 0x8183, 1, 0, 0, 0) + query[12:]
    assert parse_ptr_answer(refused, 0x1234) is None


def test_the_compute_container_config() -> None:
    text = render_config({"NOVA_PASSWORD": "pw1", "NOVA_RO_PASSWORD": "pw2"}, "compute-2")
    assert "host = compute-2" in text
    assert "connection = mysql+pymysql://nova:pw1@primary:3306/nova" in text
    assert "slave_connection = mysql+pymysql://nova_ro:pw2@replica:3306/nova" in text
    assert "http_host = 0.0.0.0" in text and "http_port = 8080" in text
    for key, value in TESTBED_COMPUTE_OPTIONS.items():
        assert f"{key} = {value}" in text


def test_ports_fixed_scaled_and_picked_by_docker() -> None:
    assert ComposeTopology._ports(34061) == {
        "OFFLOAD_PRIMARY_PORT": "34061",
        "OFFLOAD_REPLICA_PORT": "34062",
        "OFFLOAD_LINK_PORT": "34063",
        "OFFLOAD_ENDPOINT_PORT": "34064",
        "OFFLOAD_REPLICA_ENDPOINT_PORT": "34065",
        "OFFLOAD_PRIMARY_SERVER_PORT": "34066",
        "OFFLOAD_REPLICA_SERVER_PORT": "34067",
        "OFFLOAD_SERVICE_PORTS": "34080",
    }
    scaled = ComposeTopology._ports(34061, 3)
    assert scaled["OFFLOAD_SERVICE_PORTS"] == "34080-34089"  # each instance a free one
    assert set(ComposeTopology._ports(0, 3).values()) == {"0"}


def test_one_project_per_testbed_directory(tmp_path: Path) -> None:
    first, second = project_name(tmp_path / "a"), project_name(tmp_path / "b")
    assert first != second and first.startswith("offload-")
    assert project_name(tmp_path / "a") == first


def test_one_replica_only(tmp_path: Path) -> None:
    with pytest.raises(TestbedError, match="one replica"):
        ComposeTopology(tmp_path, replicas=2)


def test_the_env_file_is_private_and_complete(tmp_path: Path) -> None:
    topology = ComposeTopology(tmp_path, port=34061)
    tmp_path.mkdir(exist_ok=True)
    state = ComposeState(
        project="p",
        compose=("docker-compose",),
        compose_file="docker-compose.yml",
        env_file=str(topology.env_path),
        port=34061,
        images={"OFFLOAD_DB_IMAGE": "mariadb:11.4"},
    )
    topology._write_env(state, Credentials("a", "b", "c", "d"))
    written = topology.env_path.read_text()
    assert topology.env_path.stat().st_mode & 0o777 == 0o600
    for line in (
        "NOVA_PASSWORD=a",
        "ADMIN_PASSWORD=d",
        "OFFLOAD_DB_IMAGE=mariadb:11.4",
        "OFFLOAD_PRIMARY_PORT=34061",
        "OFFLOAD_LINK_PORT=34063",
        "OFFLOAD_SERVICE_PORTS=34080",
    ):
        assert line in written.splitlines()


def test_offline_is_asked_for_or_follows_the_local_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images_module, "image_exists", lambda image: True)
    assert offline_wanted({}) is True
    assert offline_wanted({"OFFLOAD_OFFLINE": "0"}) is False
    monkeypatch.setattr(images_module, "image_exists", lambda image: False)
    assert offline_wanted({}) is False
    assert offline_wanted({"OFFLOAD_OFFLINE": "1"}) is True


@pytest.fixture(autouse=True)
def _no_flavor_from_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OFFLOAD_FLAVOR", raising=False)  # `make test FLAVOR=...` sets it


@pytest.mark.skipif(
    shutil.which("docker-compose") is None and shutil.which("docker") is None,
    reason="no compose command",
)
def test_the_compose_file_validates(tmp_path: Path) -> None:
    env = tmp_path / "compose.env"
    values = {**VALUES, "OFFLOAD_TLS_DIR": str(tmp_path / "tls")}
    env.write_text("\n".join(f"{k}={v}" for k, v in values.items()) + "\n")
    try:
        command = compose_module.compose_command()
    except TestbedError:
        pytest.skip("no compose command")
    result = subprocess.run(
        [
            *command,
            "--env-file",
            str(env),
            "-f",
            str(REPO / "docker-compose.yml"),
            "-p",
            "offloadunit",
            "config",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # primary, replica, the replica's link (its control API), compute
    assert published_hosts(result.stdout) == ["127.0.0.1"] * 8
    assert "condition: service_healthy" in result.stdout
    assert "container_name" not in result.stdout
    assert f"{tmp_path / 'tls'}:/etc/offload/tls:ro" in result.stdout  # the DB containers'


def test_a_new_directory_is_no_other_backends_testbed(tmp_path: Path) -> None:
    from offload.testbed.compose import ComposeTopology  # noqa: PLC0415

    assert ComposeTopology(tmp_path)._load_state() is None


def test_the_command_line_a_person_runs_by_hand(tmp_path: Path) -> None:
    topology = ComposeTopology(tmp_path)
    with pytest.raises(TestbedError, match="no compose testbed"):
        topology.command_line()
    (tmp_path / "state.json").write_text(
        json.dumps(
            {
                "backend": "compose",
                "compose": ["/usr/bin/docker", "compose"],
                "compose_file": "/repo/docker-compose.yml",
                "project": "offload-1234abcd",
                "port": 0,
            }
        )
    )

    assert topology.command_line() == (
        f"docker compose -p offload-1234abcd --env-file {tmp_path.resolve()}/compose.env"
    )


def _state(topology: ComposeTopology, *, tls: bool) -> ComposeState:
    return ComposeState(
        project="p",
        compose=("docker-compose",),
        compose_file="docker-compose.yml",
        env_file=str(topology.env_path),
        port=34061,
        images={"OFFLOAD_DB_IMAGE": "mariadb:11.4"},
        tls=tls,
    )


def test_with_tls_the_env_file_mounts_the_files_and_carries_the_ca(tmp_path: Path) -> None:
    topology = ComposeTopology(tmp_path, port=34061, tls=True)
    state = _state(topology, tls=True)
    topology._ensure_tls(state)
    topology._write_env(state, Credentials("a", "b", "c", "d"))
    env = dict(
        line.split("=", 1) for line in topology.env_path.read_text().splitlines()[2:] if line
    )
    files = TlsFiles.in_dir(tmp_path)
    assert env["OFFLOAD_TLS_DIR"] == str(tmp_path.resolve() / "tls")
    assert (env["OFFLOAD_TLS_ON"], env["OFFLOAD_TLS_CA"]) == ("1", "/run/offload/tls/ca.pem")
    assert base64.b64decode(env["OFFLOAD_TLS_CA_PEM"]) == files.ca.read_bytes()
    # every file private on the host; the servers' options name the container's copies
    tls_dir = tmp_path / "tls"
    assert {p.name: p.stat().st_mode & 0o777 for p in tls_dir.iterdir()} == dict.fromkeys(
        ("ca.pem", "ca-key.pem", "server-cert.pem", "server-key.pem", "server.cnf"), 0o600
    )
    include = (tls_dir / "server.cnf").read_text().splitlines()
    assert "[mysqld]" in include
    assert "ssl_key       = /run/offload/tls/server-key.pem" in include
    assert "require_secure_transport = ON" in include
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"primary", "replica", "link", "endpoint", "replica-endpoint", "localhost"} <= set(
        names.get_values_for_type(x509.DNSName)
    )
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_without_tls_the_env_file_says_plain_and_the_mount_is_empty(tmp_path: Path) -> None:
    topology = ComposeTopology(tmp_path, port=34061, tls=False)
    state = _state(topology, tls=False)
    topology._ensure_tls(state)
    topology._write_env(state, Credentials("a", "b", "c", "d"))
    lines = topology.env_path.read_text().splitlines()
    assert {"OFFLOAD_TLS_ON=0", "OFFLOAD_TLS_CA=", "OFFLOAD_TLS_CA_PEM="} <= set(lines)
    assert list((tmp_path / "tls").iterdir()) == []


def test_the_compute_container_verifies_with_the_ca_it_is_given(tmp_path: Path) -> None:
    ca = ensure_certificates(tmp_path / "testbed").ca
    environ = {
        "NOVA_PASSWORD": "pw1",
        "NOVA_RO_PASSWORD": "pw2",
        "OFFLOAD_TESTBED_CA": base64.b64encode(ca.read_bytes()).decode(),
    }
    tls = tls_from_environ(environ, tmp_path / "container")
    assert tls is not None and tls.ca.read_bytes() == ca.read_bytes()
    assert tls.ca.stat().st_mode & 0o777 == 0o600
    text = render_config(environ, "compute-1", tls)
    options = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    urls = [make_url(options[key]) for key in ("connection", "slave_connection")]
    assert [u.host for u in urls] == ["primary", "replica"]  # the names the certificate holds
    for url in urls:
        assert dict(url.query) == {"ssl_ca": str(tls.ca), "ssl_check_hostname": "true"}
    assert "[testbed]" not in text  # no privileged account given
    admin = render_config({**environ, "ADMIN_PASSWORD": "pw3"}, "compute-1", tls)
    options = dict(line.split(" = ", 1) for line in admin.splitlines() if " = " in line)
    admins = [make_url(options[k]) for k in ("admin_connection", "replica_admin_connections")]
    assert [(u.username, u.host, u.database) for u in admins] == [
        ("offload_admin", "primary", None),
        ("offload_admin", "replica", None),
    ]
    assert all(u.query["ssl_ca"] == str(tls.ca) for u in admins)
    assert tls_from_environ({"OFFLOAD_TESTBED_CA": ""}, tmp_path / "none") is None


@pytest.mark.parametrize(
    ("value", "says"),
    [("not base64!", "not base64"), (base64.b64encode(b"hello").decode(), "not a PEM")],
)
def test_a_bad_ca_variable_is_one_line(value: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=says):
        tls_from_environ({"OFFLOAD_TESTBED_CA": value}, tmp_path)


def test_tls_cannot_change_on_a_made_testbed(tmp_path: Path) -> None:
    made = ComposeTopology(tmp_path, port=34061, tls=True)
    made._save_state(dataclasses.replace(_state(made, tls=True), initialised=True))
    with pytest.raises(TestbedError, match="made with TLS on, asked for TLS off"):
        ComposeTopology(tmp_path, port=34061, tls=False)._prepare()


def test_the_compose_roles_are_recorded(tmp_path: Path) -> None:
    from offload.testbed.files import read_state, save_state  # noqa: PLC0415

    state = ComposeState(
        project="p",
        compose=("docker-compose",),
        compose_file="docker-compose.yml",
        env_file="compose.env",
        port=0,
        endpoint_ports={"primary-endpoint": 40001, "replica0-endpoint": 40002},
        primary="replica",
        departed=("primary",),
    )
    assert state.replicas() == [] and state.role("primary") == "departed"
    assert state.role("replica") == "primary"
    save_state(tmp_path, state)
    assert read_state(tmp_path) == state
