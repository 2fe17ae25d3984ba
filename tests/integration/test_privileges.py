"""Least privilege on the testbed: each account can do what it is for, and no more."""

from __future__ import annotations

import stat
from pathlib import Path

from sqlalchemy import Engine, text

from offload.testbed import TestbedInfo


def _grants(engine: Engine, user: str) -> list[str]:
    with engine.connect() as conn:
        return [str(row[0]) for row in conn.execute(text(f"SHOW GRANTS FOR '{user}'@'%'"))]


def _privileges(grants: list[str], on: str) -> set[str]:
    found: set[str] = set()
    for grant in grants:
        head, _, rest = grant.partition(" ON ")
        if rest.split(" TO ")[0].replace("`", "") == on:
            found |= {p.strip() for p in head.removeprefix("GRANT ").split(",")}
    return found


def test_service_account_has_only_the_dml_and_ddl_it_needs(offload_primary_admin: Engine) -> None:
    grants = _grants(offload_primary_admin, "nova")
    assert _privileges(grants, "nova.*") == {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "CREATE",
        "DROP",
        "REFERENCES",
        "INDEX",
        "ALTER",
    }
    assert _privileges(grants, "*.*") == {"USAGE"}


def test_replica_account_is_select_only(
    offload_primary_admin: Engine, offload_replica_admin: list[Engine]
) -> None:
    for engine in (offload_primary_admin, offload_replica_admin[0]):  # created once, replicated
        grants = _grants(engine, "nova_ro")
        assert _privileges(grants, "nova.*") == {"SELECT"}
        assert _privileges(grants, "*.*") == {"USAGE"}


def test_replication_account_may_only_replicate(offload_primary_admin: Engine) -> None:
    assert _privileges(_grants(offload_primary_admin, "repl"), "*.*") == {"REPLICATION SLAVE"}


def test_testbed_secrets_are_private_and_generated(offload_testbed: TestbedInfo) -> None:
    assert offload_testbed.dir is not None
    for name in ("credentials.json", "offload.conf", "state.json"):
        assert stat.S_IMODE((offload_testbed.dir / name).stat().st_mode) == 0o600
    passwords = {
        u.password or ""
        for u in (offload_testbed.primary, *offload_testbed.replicas, offload_testbed.admin)
    }
    assert len(passwords) == 3 and all(p and len(p) >= 20 for p in passwords)
    bootstrap = Path(__file__).resolve().parents[2] / "mysql" / "bootstrap"
    scripts = [path.read_text() for path in bootstrap.glob("*.sql")]
    assert scripts and all("IDENTIFIED BY '${" in s or "PASSWORD = '${" in s for s in scripts)
    assert not any(p in s for p in passwords for s in scripts)
