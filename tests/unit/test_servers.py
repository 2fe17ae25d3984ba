"""Flavor specs, provided servers' launchers, and which programs belong to a server."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from offload.errors import TestbedError
from offload.replication import Flavor, ReplicaStatus, describe_server, with_worker_error
from offload.testbed import images
from offload.testbed.compose import registry_image
from offload.testbed.mysqld import ServerProgram, find_server
from offload.testbed.servers import (
    FLAVOR_VARIABLE,
    PROVIDED,
    FlavorSpec,
    default_flavor,
    provided_for,
    series_of,
)


@pytest.mark.parametrize(
    ("version", "series"),
    [
        ("9.7.4-2", "9.7"),
        ("1:11.8.9+ds-0+deb13u1", "11.8"),
        ("11.8.9-MariaDB-deb13", "11.8"),
        ("10.11.19-MariaDB-0+deb12u1", "10.11"),
        ("8.4.3", "8.4"),
    ],
)
def test_series_of_versions(version: str, series: str) -> None:
    assert series_of(version) == series


@pytest.mark.parametrize("text", ["", "x.y", "MariaDB"])
def test_series_of_refuses_what_is_no_version(text: str) -> None:
    with pytest.raises(ValueError, match="not a server version"):
        series_of(text)


@pytest.mark.parametrize(
    ("text", "flavor", "series"),
    [
        ("mariadb", Flavor.MARIADB, None),
        ("MySQL", Flavor.MYSQL, None),
        ("mariadb-11.8", Flavor.MARIADB, "11.8"),
        ("mysql-9.7", Flavor.MYSQL, "9.7"),
        ("mariadb-10.11", Flavor.MARIADB, "10.11"),
    ],
)
def test_flavor_specs_parse(text: str, flavor: Flavor, series: str | None) -> None:
    spec = FlavorSpec.parse(text)
    assert (spec.flavor, spec.series) == (flavor, series)
    assert str(spec) == text.lower()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("postgres", "unknown server flavor"),
        ("mysql-8", "bad server version"),
        ("mysql-latest", "bad server version"),
        ("mariadb-11.8.9", "bad server version"),
    ],
)
def test_bad_flavor_specs_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(TestbedError, match=message) as raised:
        FlavorSpec.parse(text)
    assert "mysql-9.7" in str(raised.value) and "\n" not in str(raised.value)


def test_a_spec_accepts_its_flavor_and_series_only() -> None:
    assert FlavorSpec.parse("mysql").accepts(Flavor.MYSQL, "9.7.4-2")
    assert FlavorSpec.parse("mysql-9.7").accepts(Flavor.MYSQL, "9.7.4-2")
    assert not FlavorSpec.parse("mysql-8.4").accepts(Flavor.MYSQL, "9.7.4-2")
    assert not FlavorSpec.parse("mysql").accepts(Flavor.MARIADB, "10.11.19-MariaDB")
    assert FlavorSpec.parse("mariadb-10.11").accepts(Flavor.MARIADB, "10.11.19-MariaDB-0+deb12")
    assert not FlavorSpec.parse("mariadb-11.8").accepts(Flavor.MARIADB, "10.11.19-MariaDB")


def test_provided_servers_answer_their_specs() -> None:
    mysql = provided_for(FlavorSpec.parse("mysql"))
    assert mysql is not None and mysql.key == "mysql-9.7" and mysql.suite == "sid"
    assert mysql.image == "offload-mysql:9.7"
    assert dict(mysql.packages)["mysql-server-core"].startswith("9.7.4")
    maria = provided_for(FlavorSpec.parse("mariadb-11.8"))
    assert maria is not None and maria.suite == "trixie" and maria.image == "offload-mariadb:11.8"
    assert provided_for(FlavorSpec.parse("mysql-8.4")) is None


def test_recipes_change_with_the_pins() -> None:
    assert len({p.recipe() for p in PROVIDED}) == len(PROVIDED)


def test_images_and_registry_images_by_flavor() -> None:
    assert images.db_image(None) == images.BASE_IMAGE
    assert images.db_image(FlavorSpec.parse("mariadb")) == images.BASE_IMAGE
    assert images.db_image(FlavorSpec.parse("mysql")) == "offload-mysql:9.7"
    assert images.db_image(FlavorSpec.parse("mariadb-11.8")) == "offload-mariadb:11.8"
    assert registry_image(None) == "mysql:8.4"
    assert registry_image(FlavorSpec.parse("mysql")) == "mysql:8.4"
    assert registry_image(FlavorSpec.parse("mariadb-10.11")) == "mariadb:10.11"


def test_default_flavor_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FLAVOR_VARIABLE, raising=False)
    assert default_flavor() is None
    monkeypatch.setenv(FLAVOR_VARIABLE, "mysql-9.7")
    assert default_flavor() == FlavorSpec(Flavor.MYSQL, "9.7")


def test_server_description_names_flavor_and_exact_version() -> None:
    assert describe_server(Flavor.MYSQL, "9.7.4-2") == "mysql 9.7.4"
    assert describe_server(Flavor.MARIADB, "10.11.19-MariaDB-0+deb12u1") == "mariadb 10.11.19"


# --- launchers ----------------------------------------------------------------


def _executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_launcher_runs_the_tree_through_its_loader_with_the_callers_options_first(
    tmp_path: Path,
) -> None:
    mysql = PROVIDED[0]
    home = mysql.home(tmp_path)
    tree = home / "rootfs"
    # a stand-in loader that prints what it was asked to run
    import platform  # noqa: PLC0415

    triplet = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}[platform.machine()]
    loader = {"x86_64": "ld-linux-x86-64.so.2", "aarch64": "ld-linux-aarch64.so.1"}[
        platform.machine()
    ]
    _executable(tree / "usr" / "lib" / triplet / loader, 'printf "%s\\n" "$@"')
    mysql._write_launchers(home)
    launcher = mysql.server_path(tmp_path)
    assert launcher == home / "sbin" / "mysqld"
    out = subprocess.run(
        [str(launcher), "--defaults-file=/x/my.cnf", "--user=root"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[:4] == [
        "--library-path",
        str(tree / "usr" / "lib" / triplet),
        str(tree / "usr" / "sbin" / "mysqld"),
        "--defaults-file=/x/my.cnf",
    ]
    assert out[4] == "--user=root"
    assert f"--plugin-dir={tree}/usr/lib/mysql/plugin" in out
    assert f"--lc-messages-dir={tree}/usr/share/mysql" in out
    client = subprocess.run(
        [str(mysql.client_path(tmp_path)), "-e", "SELECT 1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert client[2:] == [str(tree / "usr" / "bin" / "mysql"), "-e", "SELECT 1"]
    assert not mysql.is_built(tmp_path)  # launchers alone are no finished build


def test_a_provided_server_that_is_not_built_names_the_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("OFFLOAD_MYSQLD", raising=False)
    monkeypatch.setattr("offload.testbed.mysqld._host_candidates", list)
    with pytest.raises(TestbedError, match=r"offload testbed server --flavor mysql-9\.7"):
        find_server(spec=FlavorSpec.parse("mysql"), provide=False)


# --- programs that belong to a server -------------------------------------------


def test_mariadb_is_initialised_by_its_own_install_script(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours = tmp_path / "mariadb-11.8"
    server = _executable(ours / "sbin" / "mariadbd", "exit 0")
    installer = _executable(ours / "bin" / "mariadb-install-db", "exit 0")
    other = _executable(tmp_path / "elsewhere" / "mariadb-install-db", "exit 0")
    monkeypatch.setenv("PATH", f"{other.parent}{os.pathsep}{os.environ['PATH']}")
    program = ServerProgram(server, Flavor.MARIADB, "11.8.9-MariaDB")
    command = program.init_command(tmp_path / "data", tmp_path / "init.log")
    assert command[0] == str(installer)


def test_a_server_without_its_install_script_is_refused(tmp_path: Path) -> None:
    server = _executable(tmp_path / "sbin" / "mariadbd", "exit 0")
    program = ServerProgram(server, Flavor.MARIADB, "11.8.9-MariaDB")
    with pytest.raises(TestbedError, match="no mariadb-install-db beside"):
        program.init_command(tmp_path / "data", tmp_path / "init.log")


def test_mysql_initialise_needs_no_secure_file_dir(tmp_path: Path) -> None:
    program = ServerProgram(tmp_path / "mysqld", Flavor.MYSQL, "9.7.4-2")
    assert "--secure-file-priv=NULL" in program.init_command(tmp_path / "d", tmp_path / "l")


# --- the applier worker's own error -------------------------------------------


def _status(errno: int, error: str) -> ReplicaStatus:
    return ReplicaStatus(
        io_running="Yes",
        sql_running="No",
        last_io_errno=0,
        last_io_error="",
        last_sql_errno=errno,
        last_sql_error=error,
        seconds_behind=None,
        source_host="p",
        source_port=3306,
        using_gtid="auto_position",
        received_gtid="",
        executed_gtid="",
        sql_delay=0,
        sql_remaining_delay=None,
    )


def test_the_workers_error_replaces_the_coordinators_summary() -> None:
    coordinator = _status(
        1062,
        "Coordinator stopped because there were error(s) in the "
        "worker(s). The most recent failure being: Worker 1 ...",
    )
    worker = with_worker_error(coordinator, (1062, "Duplicate entry '4' for key 'PRIMARY'"))
    assert worker.last_sql_errno == 1062
    assert worker.last_sql_error == "Duplicate entry '4' for key 'PRIMARY'"
    assert with_worker_error(coordinator, None) == coordinator
    assert with_worker_error(coordinator, (0, "")) == coordinator


@pytest.mark.parametrize("flavor", ["mariadb", "mysql"])
def test_the_bootstrap_sets_the_heartbeat_the_code_keeps(flavor: str) -> None:
    from offload.replication import HEARTBEAT_PERIOD  # noqa: PLC0415
    from offload.testbed.mysqld import find_mysql_dir  # noqa: PLC0415

    script = (find_mysql_dir() / "bootstrap" / f"replica-{flavor}.sql").read_text()
    word = "MASTER" if flavor == "mariadb" else "SOURCE"
    assert f"{word}_HEARTBEAT_PERIOD = {HEARTBEAT_PERIOD}," in script


def test_data_dirs_are_copies_of_one_pristine_initialisation(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    server = _executable(
        tmp_path / "sbin" / "mysqld",
        f"""for a in "$@"; do case "$a" in --datadir=*) d="${{a#--datadir=}}" ;; esac; done
echo run >> {runs}
mkdir -p "$d/mysql" && echo uuid > "$d/auto.cnf" && echo data > "$d/ibdata1"
""",
    )
    program = ServerProgram(server, Flavor.MYSQL, "9.7.4-2")
    program.initialise(tmp_path / "a" / "data", tmp_path / "a.log")
    program.initialise(tmp_path / "b" / "data", tmp_path / "b.log")
    assert runs.read_text().splitlines() == ["run"]  # the server initialised once
    for name in ("a", "b"):
        data = tmp_path / name / "data"
        assert (data / "ibdata1").read_text() == "data\n" and (data / "mysql").is_dir()
        assert not (data / "auto.cnf").exists()  # each server makes its own server_uuid
        assert sorted(p.name for p in data.iterdir()) == ["ibdata1", "mysql"]
    program.initialise(tmp_path / "c" / "data", tmp_path / "c.log", template=False)
    assert runs.read_text().splitlines() == ["run", "run"]
    assert (tmp_path / "c" / "data" / "auto.cnf").exists()
