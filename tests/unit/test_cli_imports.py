"""The CLI answers at once: what a command does not need, it does not import.

Each check runs in a fresh interpreter and reads its ``sys.modules`` (the start-up times
themselves are measured, not asserted: docs/architecture.md, "The command line").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("sqlalchemy", "pymysql", "rich", "matplotlib", "tenacity", "docker", "prometheus_client")
#: offload's own modules that load SQLAlchemy or the testbed's machinery
HEAVY_OWN = ("offload.db", "offload.replication", "offload.testbed.topology", "offload.schema")

_PROBE = """
import json, sys
{code}
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(code: str, cwd: Path) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(code=code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m in names or m.split(".")[0] in names)


@pytest.fixture
def testbed_dir(tmp_path: Path) -> Path:
    """A working directory whose .testbed/offload.conf holds URLs (as after `make up`)."""
    (tmp_path / ".testbed").mkdir()
    (tmp_path / ".testbed" / "offload.conf").write_text(
        "[database]\n"
        "connection = mysql+pymysql://nova:pw@127.0.0.1:1/nova\n"
        "slave_connection = mysql+pymysql://nova_ro:pw@127.0.0.1:2/nova\n"
        "[compute]\nreboot_timeout = 60\n"
    )
    return tmp_path


def test_importing_the_cli_loads_nothing_heavy(tmp_path: Path) -> None:
    modules = _modules_after("import offload.cli", tmp_path)

    assert "offload.cli" in modules
    assert _loaded(modules, HEAVY) == []
    assert _loaded(modules, HEAVY_OWN) == []


def test_help_loads_nothing_heavy(testbed_dir: Path) -> None:
    code = "from offload.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"

    modules = _modules_after(code, testbed_dir)

    assert _loaded(modules, HEAVY) == []


def test_tasks_parses_no_url_and_loads_no_task_body(testbed_dir: Path) -> None:
    code = "from offload.cli import main\nassert main(['tasks']) == 0"

    modules = _modules_after(code, testbed_dir)

    assert "rich" in modules  # the table
    assert _loaded(modules, tuple(m for m in HEAVY if m != "rich")) == []
    assert _loaded(modules, (*HEAVY_OWN, "offload.compute.lifecycle")) == []


def test_the_checks_see_a_heavy_import(tmp_path: Path) -> None:
    """The probe itself: importing the database layer is seen."""
    modules = _modules_after("import offload.db", tmp_path)

    assert "sqlalchemy" in _loaded(modules, HEAVY)
    assert "offload.replication" in _loaded(modules, HEAVY_OWN)
