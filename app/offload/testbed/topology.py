"""What every testbed backend provides, and what it hands back when it is up."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import URL

from offload.config import Settings, TestbedSettings
from offload.flavor import Flavor, describe_server
from offload.urls import with_database

if TYPE_CHECKING:
    from offload.testbed.tls import TlsFiles

__all__ = [
    "PLAIN_QUERY",
    "Credentials",
    "TestbedInfo",
    "Topology",
    "loopback_url",
    "write_config",
    "write_private",
]

NOVA_DATABASE = "nova"
#: the query of a testbed URL without TLS (``--tls off``)
PLAIN_QUERY = {"ssl_disabled": "true"}


@dataclass(frozen=True, slots=True)
class Credentials:
    """Passwords of the testbed's accounts: generated per testbed, never in the repo."""

    nova: str
    nova_ro: str
    repl: str
    admin: str

    @classmethod
    def generate(cls) -> Credentials:
        return cls(*(secrets.token_urlsafe(18) for _ in range(4)))

    def placeholders(self) -> dict[str, str]:
        """Values for the ``${NAME}`` placeholders of mysql/bootstrap/*.sql."""
        return {
            "NOVA_PASSWORD": self.nova,
            "NOVA_RO_PASSWORD": self.nova_ro,
            "REPL_PASSWORD": self.repl,
            "ADMIN_PASSWORD": self.admin,
        }


def loopback_url(
    user: str,
    password: str,
    port: int,
    database: str | None,
    host: str = "127.0.0.1",
    *,
    tls: TlsFiles | None = None,
) -> URL:
    """A PyMySQL URL for one account on one testbed server: verified TLS with ``tls``,
    else plain TCP (``ssl_disabled``: PyMySQL would otherwise try TLS unverified wherever
    the server offers it, as MySQL 8.4+ and MariaDB 11.4+ do with certificates of their own)."""
    return URL.create(
        "mysql+pymysql",
        username=user,
        password=password,
        host=host,
        port=port,
        database=database,
        query=tls.url_query() if tls is not None else PLAIN_QUERY,
    )


@dataclass(frozen=True, slots=True)
class TestbedInfo:
    """A running primary and its replicas: the service's and the admin's URLs.

    ``primary``/``replicas`` are the service's accounts (``nova``, SELECT-only
    ``nova_ro``); ``admin``/``replica_admins`` a privileged account on each
    server, for status, test databases and fault injection.  Every URL names the
    ``nova`` database; the methods give the same server with another one.
    """

    __test__ = False  # not a pytest test class despite its name

    backend: str
    dir: Path | None
    flavor: Flavor
    primary: URL = field(repr=False)
    replicas: tuple[URL, ...] = field(repr=False)
    admin: URL = field(repr=False)
    replica_admins: tuple[URL, ...] = field(repr=False)
    #: the compute service's HTTP port (0: none)
    service_port: int = 0
    #: the server's exact version, as it reports it (``9.7.4-2``, ``10.11.19-MariaDB-...``)
    version: str = ""
    #: what made the ``nova`` database: ``offload`` (``offload db sync``, later) or ``nova``
    #: (``nova-manage db sync`` when the testbed came up)
    schema: str = "offload"

    @property
    def server(self) -> str:
        """``mysql 9.7.4``: flavor and version, for every report that names the server."""
        return describe_server(self.flavor, self.version) if self.version else self.flavor.value

    def primary_url(self, database: str | None = NOVA_DATABASE) -> URL:
        return with_database(self.primary, database)

    def replica_urls(self, database: str | None = NOVA_DATABASE) -> tuple[URL, ...]:
        return tuple(with_database(url, database) for url in self.replicas)

    def admin_url(self, database: str | None = None) -> URL:
        return with_database(self.admin, database)

    def replica_admin_urls(self, database: str | None = None) -> tuple[URL, ...]:
        return tuple(with_database(url, database) for url in self.replica_admins)

    def settings(
        self,
        *,
        database: str = NOVA_DATABASE,
        with_replica: bool = True,
        base: Settings | None = None,
    ) -> Settings:
        """Settings pointing at this testbed (optionally without slave_connection)."""
        base = base or Settings()
        return replace(
            base,
            database=replace(
                base.database,
                connection=self.primary_url(database),
                slave_connections=self.replica_urls(database) if with_replica else (),
            ),
            testbed=TestbedSettings(
                backend=self.backend,
                dir=str(self.dir or ""),
                admin_connection=self.admin_url(),
                replica_admin_connections=self.replica_admin_urls(),
            ),
        )


class Topology(Protocol):
    """A primary with GTID replicas that can be brought up and taken down."""

    def up(self) -> TestbedInfo:
        """Start (or find running) and return only when replication runs."""
        ...

    def down(self) -> None:
        """Stop everything this topology started."""
        ...


def _plain(url: URL) -> str:
    return url.render_as_string(hide_password=False)


#: the testbed turns every task on, with short intervals, so that all of them
#: have run within a minute of `make up` (Nova's defaults are minutes to hours)
TESTBED_COMPUTE_OPTIONS = {
    "periodic_interval_max": "10",
    "update_resources_interval": "10",
    "instance_delete_interval": "15",
    "instance_usage_audit": "true",
    "bandwidth_poll_interval": "10",
    "volume_usage_poll_interval": "10",
    "sync_power_state_interval": "20",
    "heal_instance_info_cache_interval": "5",
    "reboot_timeout": "60",
    "rescue_timeout": "3600",
    "resize_confirm_window": "3600",
    "shelved_poll_interval": "20",
    "shelved_offload_time": "86400",
    "reclaim_instance_interval": "86400",
    "running_deleted_instance_poll_interval": "20",
}


def write_config(info: TestbedInfo, path: Path, *, host: str = "compute-1") -> Path:
    """Write the offload.conf every command after ``up`` reads (mode 0600: it holds passwords)."""
    service_dir = info.dir or path.parent
    lines = [
        "# Written by `offload testbed up`; every offload command reads it.",
        "# It holds this testbed's generated passwords: keep it private (mode 0600).",
        "[DEFAULT]",
        f"host = {host}",
        "",
        "[database]",
        f"connection = {_plain(info.primary_url())}",
        f"slave_connection = {', '.join(_plain(u) for u in info.replica_urls())}",
        "",
        "[testbed]",
        f"backend = {info.backend}",
        f"dir = {info.dir or ''}",
        f"admin_connection = {_plain(info.admin_url())}",
        f"replica_admin_connections = {', '.join(_plain(u) for u in info.replica_admin_urls())}",
        "",
        "[compute]",
        *(f"{key} = {value}" for key, value in TESTBED_COMPUTE_OPTIONS.items()),
        "",
        "[service]",
        "http_host = 127.0.0.1",
        f"http_port = {info.service_port}",
        f"notifications_file = {service_dir / 'notifications.jsonl'}",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, "\n".join(lines))
    return path


def write_private(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` readable by its owner only (it may hold passwords)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(content)
    path.chmod(0o600)
