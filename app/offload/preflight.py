"""Checks before the service trusts its configuration: is each replica really a replica?

A ``slave_connection`` that names the primary itself would make every
"offloaded" read a primary read while the traces say "replica": refused.  A
replica that is not ``read_only``, or a replica account that may write, would
let a mistaken write diverge the replica: warned about, loudly.
"""

from __future__ import annotations

import logging
import re

from sqlalchemy import URL, text

from offload.config import Settings
from offload.dberrors import unpooled_engine
from offload.errors import ConfigError
from offload.urls import masked

__all__ = ["preflight"]

log = logging.getLogger("offload.preflight")
_WRITE_PRIVILEGES = re.compile(
    r"\b(ALL PRIVILEGES|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|SUPER|READ_ONLY ADMIN)\b"
)


def _identity(url: URL, name: str) -> tuple[int, str, bool, list[str]]:
    engine = unpooled_engine(url, name=name)
    try:
        with engine.connect() as conn:
            version = str(conn.execute(text("SELECT VERSION()")).scalar_one())
            # server_uuid is MySQL's; MariaDB has only server_id
            uuid_sql = "''" if "mariadb" in version.lower() else "@@GLOBAL.server_uuid"
            server_id, uuid, read_only = conn.execute(
                text(f"SELECT @@server_id, {uuid_sql}, @@read_only")
            ).one()
            grants = [str(row[0]) for row in conn.execute(text("SHOW GRANTS FOR CURRENT_USER()"))]
    finally:
        engine.dispose()
    return int(server_id), str(uuid), bool(read_only), grants


def preflight(settings: Settings) -> list[str]:
    """Warnings about the replicas; ConfigError when one of them is the primary."""
    primary = settings.require_connection()
    primary_id, primary_uuid, _, _ = _identity(primary, "primary")
    warnings = []
    for index, url in enumerate(settings.database.slave_connections):
        name = f"replica{index}"
        server_id, uuid, read_only, grants = _identity(url, name)
        same = uuid == primary_uuid if uuid and primary_uuid else server_id == primary_id
        if same:
            raise ConfigError(
                f"[database] slave_connection {name} ({masked(url)}) is the primary itself "
                f"(server_id {server_id})",
                hint="point it at a replica, or leave slave_connection empty to read from "
                "the primary",
            )
        if not read_only:
            warnings.append(
                f"{name} ({masked(url)}) is not read_only: a write sent there "
                "by mistake would succeed and diverge it; set read_only=ON"
            )
        writable = sorted(
            {m.group(1) for g in grants for m in _WRITE_PRIVILEGES.finditer(g.split(" TO ")[0])}
        )
        if writable:
            warnings.append(
                f"{name}'s account {url.username!r} may write "
                f"({', '.join(writable)}); give it SELECT only"
            )
    for warning in warnings:
        log.warning("%s", warning)
    return warnings
