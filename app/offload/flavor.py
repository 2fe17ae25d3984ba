"""The server family a connection talks to: MariaDB or MySQL, read from ``VERSION()``.

Pure and import-light (the CLI validates ``--flavor`` with it before anything else loads);
the SQL that differs per flavor lives in ``offload.replication``.
"""

from __future__ import annotations

import enum

__all__ = ["Flavor", "describe_server", "detect_flavor"]


class Flavor(enum.Enum):
    """Which server family a connection talks to."""

    MARIADB = "mariadb"
    MYSQL = "mysql"


def detect_flavor(version: str) -> Flavor:
    """The flavor behind a ``VERSION()`` string.

    MariaDB always names itself ('10.11.6-MariaDB-0+deb12u1-log'); MySQL and
    its builds (Ubuntu, Percona) do not ('8.4.3', '8.0.36-0ubuntu0.22.04.1').
    """
    cleaned = version.strip()
    if "mariadb" in cleaned.lower():
        return Flavor.MARIADB
    if cleaned[:1].isdigit():
        return Flavor.MYSQL
    raise ValueError(f"not a MySQL or MariaDB version string: {version!r}")


def describe_server(flavor: Flavor, version: str) -> str:
    """``mysql 9.7.4`` / ``mariadb 10.11.19``: the flavor and the exact server version."""
    return f"{flavor.value} {version.strip().split('-')[0]}".strip()
