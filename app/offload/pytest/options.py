"""The run's testbed settings: each command-line option, else its ini twin, else the default.

The options and ini settings are declared in :mod:`offload.pytest.plugin`; this
module reads them once per run (validated in ``pytest_configure``, so a bad
value stops the run with one line) into :class:`RunOptions`.

- ``--testbed`` / ``offload_testbed``: native (default), compose or external;
- ``--testbed-dir`` / ``offload_testbed_dir``: the run's native testbed's directory
  (default: a temporary one);
- ``--testbed-replicas`` / ``offload_testbed_replicas``: replicas of a native
  testbed (default 1);
- ``--testbed-flavor`` / ``offload_testbed_flavor``: the server (default
  ``$OFFLOAD_FLAVOR``, else the host's);
- ``--testbed-schema`` / ``offload_testbed_schema``: what makes a native testbed's
  ``nova`` database, offload's tables or Nova's migrations (default
  ``$OFFLOAD_SCHEMA``, else offload);
- ``--testbed-tls`` / ``offload_testbed_tls``: on (default) or off: the testbeds' (native, compose)
  servers require verified TLS (default ``$OFFLOAD_TLS``, else on);
- ``--primary-url`` / ``offload_primary_url``, ``--replica-url`` (repeatable) /
  ``offload_replica_url`` (one per line): the external testbed's privileged URLs.

The flavor's, the schema's and TLS's order is option, environment variable, ini: ``make test
FLAVOR=mysql SCHEMA=nova`` sets the variables, and they name the server and schema of
that run.  An ini
path is relative to the ini file's directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from offload.errors import OffloadError
from offload.testbed.nova import SCHEMA_VARIABLE, parse_schema
from offload.testbed.servers import FLAVOR_VARIABLE, FlavorSpec
from offload.testbed.tls import TLS_VARIABLE, parse_tls

__all__ = ["BACKENDS", "OPTIONS", "RunOptions", "remember_server", "server_ran"]

BACKENDS = ("native", "compose", "external")
#: every command-line option and its ini twin
OPTIONS = {
    "--testbed": "offload_testbed",
    "--testbed-dir": "offload_testbed_dir",
    "--testbed-replicas": "offload_testbed_replicas",
    "--testbed-flavor": "offload_testbed_flavor",
    "--testbed-schema": "offload_testbed_schema",
    "--testbed-tls": "offload_testbed_tls",
    "--primary-url": "offload_primary_url",
    "--replica-url": "offload_replica_url",
}

T = TypeVar("T")
_KEY = pytest.StashKey["RunOptions"]()
_SERVER_KEY = pytest.StashKey[str]()


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def _string(config: pytest.Config, option: str) -> tuple[str | None, str]:
    """The option's value, else its ini twin's; and where it came from (for errors)."""
    value = config.getoption(_dest(option), default=None)
    if value not in (None, ""):
        return str(value), option
    ini = OPTIONS[option]
    raw = config.getini(ini)
    text = str(raw).strip() if raw is not None else ""
    return (text or None), f"{ini} (ini)"


def _variable_first(
    config: pytest.Config, option: str, variable: str, parse: Callable[[str], T]
) -> T | None:
    """The option, else ``$variable``, else the ini twin, parsed (None: none is given);
    ``pytest.UsageError`` naming where a bad value came from."""
    text, source = _string(config, option)
    if config.getoption(_dest(option), default=None) is None and os.environ.get(variable):
        text, source = os.environ[variable], f"${variable}"
    if not text:
        return None
    try:
        return parse(text)
    except OffloadError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Where the run's testbed comes from, as the options (or the ini file) say."""

    backend: str = "native"
    directory: Path | None = None
    replicas: int = 1
    flavor: FlavorSpec | None = None
    #: offload | nova; None: $OFFLOAD_SCHEMA or offload's, as every testbed decides
    schema: str | None = None
    #: TLS on or off; None: $OFFLOAD_TLS or on, as every testbed decides
    tls: bool | None = None
    primary_url: str | None = None
    replica_urls: tuple[str, ...] = ()

    @classmethod
    def of(cls, config: pytest.Config) -> RunOptions:
        """The run's options (read once; ``pytest.UsageError`` on a bad value)."""
        known = config.stash.get(_KEY, None)
        if known is None:
            known = config.stash[_KEY] = cls._read(config)
        return known

    @classmethod
    def _read(cls, config: pytest.Config) -> RunOptions:
        backend, source = _string(config, "--testbed")
        if backend is not None and backend not in BACKENDS:
            raise pytest.UsageError(
                f"{source}: {backend!r} is not a testbed; use one of {', '.join(BACKENDS)}"
            )
        directory, source = _string(config, "--testbed-dir")
        where = None
        if directory is not None:
            where = Path(directory).expanduser()
            if not where.is_absolute() and source.endswith("(ini)") and config.inipath:
                where = config.inipath.parent / where
        replicas_text, source = _string(config, "--testbed-replicas")
        replicas = 1
        if replicas_text is not None:
            try:
                replicas = int(replicas_text)
            except ValueError:
                replicas = 0
            if replicas < 1:
                raise pytest.UsageError(
                    f"{source}: {replicas_text!r} is not a number of replicas; use 1 or more"
                )
        flavor = _variable_first(config, "--testbed-flavor", FLAVOR_VARIABLE, FlavorSpec.parse)
        schema = _variable_first(config, "--testbed-schema", SCHEMA_VARIABLE, parse_schema)
        tls = _variable_first(config, "--testbed-tls", TLS_VARIABLE, parse_tls)
        primary, _ = _string(config, "--primary-url")
        replicas_given = config.getoption("replica_url", default=None) or [
            line.strip() for line in config.getini("offload_replica_url") or [] if line.strip()
        ]
        return cls(
            backend=backend or "native",
            directory=where,
            replicas=replicas,
            flavor=flavor,
            schema=schema,
            tls=tls,
            primary_url=primary,
            replica_urls=tuple(replicas_given),
        )


def remember_server(config: pytest.Config, description: str) -> None:
    """The run's testbed, for the ``offload testbed ran: ...`` line at the end."""
    config.stash[_SERVER_KEY] = description


def server_ran(config: pytest.Config) -> str | None:
    """``native mysql 9.7.4``: the run's testbed, once a test started it."""
    return config.stash.get(_SERVER_KEY, None)
