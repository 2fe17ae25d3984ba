"""The pytest plugin as an outside project uses it (pytester: a project of its own, a new run).

Each test writes a small project — the README's example test, a conftest with
factories, an ini file — and runs pytest on it in a subprocess, where the
plugin comes from offload's ``pytest11`` entry point, as after ``pip install``.
``--testbed=external`` points those runs at this session's testbed; before and
after, its servers' databases and every account's grants are compared.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import URL, Engine, text
from sqlalchemy.exc import OperationalError

from offload.db import Database
from offload.testbed import TestbedInfo

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Use the fixtures in your own tests"


def readme_example() -> str:
    """The first Python block of the README's section on the fixtures, verbatim."""
    readme = README.read_text(encoding="utf-8")
    section = readme[readme.index(SECTION) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no example in the README's section"
    return match.group(1)


def plain(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def server_state(engine: Engine) -> tuple[list[str], dict[str, list[str]]]:
    """SHOW DATABASES, and SHOW GRANTS of every account on the server."""
    with engine.connect() as conn:
        names = sorted(str(row[0]) for row in conn.execute(text("SHOW DATABASES")))
        accounts = conn.execute(text("SELECT User, Host FROM mysql.user")).all()
        grants: dict[str, list[str]] = {}
        for user, host in accounts:
            try:
                shown = conn.execute(text(f"SHOW GRANTS FOR '{user}'@'{host}'")).all()
            except OperationalError as exc:  # 1141: an account without a grant
                assert exc.orig is not None and exc.orig.args[0] == 1141, exc
                conn.rollback()
                shown = []
            grants[f"{user}@{host}"] = sorted(str(row[0]) for row in shown)
    return names, grants


MORE = """
from offload.pytest import ComputeFactory, DbFactory
from offload.testing import assert_task_read_from_replica
from offload.tracing import QueryTrace

TASK = "update_available_resource"


def test_a_task_on_the_replica(
    offload_db_factory: DbFactory,
    offload_compute_factory: ComputeFactory,
    offload_wait_for_replication,
    offload_trace: QueryTrace,
    offload_primary_admin,
    offload_replica_admin,
) -> None:
    db = offload_db_factory()
    print("SCRATCH", db.settings.require_connection().database)
    offload_wait_for_replication(db)
    report = offload_compute_factory(db).run(TASK)
    assert report.error is None
    assert_task_read_from_replica(offload_trace, TASK, run=report.run)
    assert offload_primary_admin.url.host and len(offload_replica_admin) >= 1
"""


@pytest.mark.parametrize("how", ["options", "ini"])
def test_external_testbed_runs_the_readme_example_and_leaves_nothing_behind(
    pytester: pytest.Pytester,
    how: str,
    offload_testbed: TestbedInfo,
    offload_primary_admin: Engine,
    offload_replica_admin: list[Engine],
) -> None:
    primary, replica = (
        plain(offload_testbed.admin_url()),
        plain(offload_testbed.replica_admin_urls()[0]),
    )
    pytester.makepyfile(test_readme=readme_example(), test_more=MORE)
    if how == "ini":
        pytester.makeini(
            f"[pytest]\noffload_testbed = external\noffload_primary_url = {primary}\n"
            f"offload_replica_url =\n    {replica}\n"
        )
        args: list[str] = []
    else:
        args = ["--testbed=external", "--primary-url", primary, "--replica-url", replica]
    with Database(offload_testbed.settings()) as db:  # earlier tests' drops applied first
        db.wait_for_replicas(timeout=60)
    before = server_state(offload_primary_admin), server_state(offload_replica_admin[0])

    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *args)

    result.assert_outcomes(passed=2)
    assert f"offload testbed ran: external {offload_testbed.server}" in result.outlines
    scratch = re.findall(r"SCRATCH (\S+)", result.stdout.str())
    assert scratch and scratch[0].startswith("offload_test_")
    with Database(offload_testbed.settings()) as db:  # the replica applied the drops too
        db.wait_for_replicas(timeout=60)
    after = server_state(offload_primary_admin), server_state(offload_replica_admin[0])
    assert after == before
    assert not any(scratch[0] in name for name in after[0][0] + after[1][0])


CONFTEST = """
from offload.pytest import factories

two_replicas = factories.testbed(replicas=2)
db_on_two = factories.database("two_replicas")
"""

FACTORIES = """
from pathlib import Path

from sqlalchemy import text

from offload.db import session_target


def test_the_runs_testbed_is_in_the_ini_directory(request, offload_testbed) -> None:
    assert offload_testbed.backend == "native"
    assert offload_testbed.dir == Path(request.config.inipath).parent / "run-testbed"
    assert (offload_testbed.dir / "state.json").is_file()


def test_a_testbed_of_two_replicas(
    two_replicas, db_on_two, offload_testbed, offload_wait_for_replication
) -> None:
    assert len(two_replicas.replicas) == 2 and two_replicas.dir != offload_testbed.dir
    assert db_on_two.settings.require_connection().port == two_replicas.primary.port
    with db_on_two.writer() as s:
        s.execute(text("CREATE TABLE t (id INT PRIMARY KEY)"))
        s.execute(text("INSERT INTO t VALUES (1)"))
    offload_wait_for_replication(db_on_two)
    targets = set()
    for _ in range(10):
        with db_on_two.reader(allow_replica=True) as s:
            assert s.execute(text("SELECT id FROM t")).scalar_one() == 1
            targets.add(session_target(s).name)
    assert targets and targets <= {"replica0", "replica1"}
"""


def test_default_native_testbed_and_factories(pytester: pytest.Pytester) -> None:
    """No option at all: a native testbed of the run's own; a factory's testbed beside it."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_readme=readme_example(), test_factories=FACTORIES)
    pytester.makeini("[pytest]\noffload_testbed_dir = run-testbed\n")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=3)
    assert any(line.startswith("offload testbed ran: native ") for line in result.outlines)


CHECK_OPTIONS = """
import json
import os
from pathlib import Path

from offload.pytest import RunOptions


def test_options(request) -> None:
    run = RunOptions.of(request.config)
    expected = json.loads(Path(request.config.rootpath, "expected.json").read_text())
    seen = {
        "backend": run.backend,
        "directory": str(run.directory) if run.directory else None,
        "replicas": run.replicas,
        "flavor": str(run.flavor) if run.flavor else None,
        "schema": run.schema,
        "tls": run.tls,
        "primary_url": run.primary_url,
        "replica_urls": list(run.replica_urls),
        "environment": [
            os.environ.get(name) for name in ("OFFLOAD_FLAVOR", "OFFLOAD_SCHEMA", "OFFLOAD_TLS")
        ],
    }
    assert seen == expected
"""

INI = """[pytest]
offload_testbed = external
offload_testbed_dir = from-ini
offload_testbed_replicas = 3
offload_testbed_flavor = mariadb-11.8
offload_testbed_schema = nova
offload_testbed_tls = off
offload_primary_url = mysql+pymysql://admin:pw@127.0.0.1:1/
offload_replica_url =
    mysql+pymysql://admin:pw@127.0.0.1:2/
    mysql+pymysql://admin:pw@127.0.0.1:3/
"""


def test_every_option_has_an_ini_twin_and_the_option_wins(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OFFLOAD_FLAVOR", raising=False)
    monkeypatch.delenv("OFFLOAD_SCHEMA", raising=False)
    monkeypatch.delenv("OFFLOAD_TLS", raising=False)
    pytester.makepyfile(test_options=CHECK_OPTIONS)
    pytester.makeini(INI)
    expected = {
        "backend": "external",
        "directory": str(pytester.path / "from-ini"),
        "replicas": 3,
        "flavor": "mariadb-11.8",
        "schema": "nova",
        "tls": False,
        "primary_url": "mysql+pymysql://admin:pw@127.0.0.1:1/",
        "replica_urls": [
            "mysql+pymysql://admin:pw@127.0.0.1:2/",
            "mysql+pymysql://admin:pw@127.0.0.1:3/",
        ],
        "environment": ["mariadb-11.8", "nova", "off"],
    }
    (pytester.path / "expected.json").write_text(json.dumps(expected))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)

    overridden = {
        "backend": "native",
        "directory": "/elsewhere",
        "replicas": 2,
        "flavor": "mysql",
        "schema": "offload",
        "tls": True,
        "primary_url": "mysql+pymysql://admin:pw@127.0.0.1:4/",
        "replica_urls": ["mysql+pymysql://admin:pw@127.0.0.1:5/"],
        "environment": ["mysql", "offload", "on"],
    }
    (pytester.path / "expected.json").write_text(json.dumps(overridden))
    pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--testbed=native",
        "--testbed-dir=/elsewhere",
        "--testbed-replicas=2",
        "--testbed-flavor=mysql",
        "--testbed-schema=offload",
        "--testbed-tls=on",
        "--primary-url=mysql+pymysql://admin:pw@127.0.0.1:4/",
        "--replica-url=mysql+pymysql://admin:pw@127.0.0.1:5/",
    ).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        (
            "offload_testbed_replicas = many",
            "offload_testbed_replicas (ini): 'many' is not a number of replicas; use 1 or more",
        ),
        (
            "offload_testbed = vagrant",
            "offload_testbed (ini): 'vagrant' is not a testbed; use one of native, compose, "
            "external",
        ),
        ("offload_testbed_flavor = oracle", "offload_testbed_flavor (ini): "),
        ("offload_testbed_schema = keystone", "offload_testbed_schema (ini): unknown schema"),
        ("offload_testbed_tls = maybe", "offload_testbed_tls (ini): TLS must be on or off"),
    ],
)
def test_a_bad_ini_value_stops_the_run_in_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ini: str, message: str
) -> None:
    monkeypatch.delenv("OFFLOAD_FLAVOR", raising=False)
    monkeypatch.delenv("OFFLOAD_SCHEMA", raising=False)
    monkeypatch.delenv("OFFLOAD_TLS", raising=False)
    pytester.makepyfile(test_nothing="def test_nothing() -> None:\n    pass\n")
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: {message}"), errors
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
