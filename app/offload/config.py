"""Settings: one frozen object, built once in ``main()`` from a nova.conf-style file.

Sources, later ones winning:

1. built-in defaults (Nova's and oslo.db's where the option is theirs);
2. the INI file (``--config FILE``, else ``$OFFLOAD_CONFIG``, else
   ``.testbed/offload.conf`` when a testbed wrote one);
3. environment variables ``OFFLOAD_<SECTION>__<KEY>`` (``OFFLOAD_REPLICA__MAX_LAG=0.05``).

A real nova.conf is accepted unchanged: in Nova's own sections (``[DEFAULT]``,
``[database]``) options offload does not use are ignored, because such a file
holds hundreds of them.  In offload's own sections an unknown option is an
error, and so is an unknown environment override anywhere — both are typos.
"""

from __future__ import annotations

import configparser
import math
import os
import re
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.errors import ConfigError
from offload.urls import parse_url

if TYPE_CHECKING:
    from sqlalchemy import URL

__all__ = [
    "DEFAULT_TESTBED_CONFIG",
    "ComputeSettings",
    "DatabaseSettings",
    "LagPolicy",
    "ReplicaSettings",
    "ServiceSettings",
    "Settings",
    "TestbedSettings",
    "find_config_file",
    "load_settings",
]

#: where ``offload testbed up`` writes the config every later command reads
DEFAULT_TESTBED_CONFIG = Path(".testbed") / "offload.conf"
ENV_PREFIX = "OFFLOAD_"


class LagPolicy(StrEnum):
    """What a task does when no replica is fit to read from."""

    PRIMARY = "primary"  # read from the primary instead
    SKIP = "skip"  # skip this run of the task
    STALE = "stale"  # read the replica anyway, counted and logged


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """``[database]``: Nova's connection options (oslo.db names and defaults)."""

    connection: URL | None = None
    #: empty: every read goes to the primary, exactly as in Nova
    slave_connections: tuple[URL, ...] = ()
    max_pool_size: int = 5
    max_overflow: int = 50
    pool_timeout: int = 30
    connection_recycle_time: int = 3600
    mysql_sql_mode: str = "TRADITIONAL"


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """``[replica]``: offload's lag awareness (an extension to Nova)."""

    max_lag: float = 1.0
    lag_policy: LagPolicy = LagPolicy.PRIMARY
    causal_reads: bool = True
    causal_timeout: float = 0.5
    heartbeat_interval: float = 0.1
    heartbeat_table: str = "heartbeat"
    heartbeat_source: str = "offload"
    #: how long Database.wait_for_replicas (offload_wait_for_replication) waits before
    #: ReplicationTimeout
    wait_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class ComputeSettings:
    """nova-compute's periodic-task options: Nova's names and defaults.

    Read from ``[compute]``, else from ``[DEFAULT]`` where Juno-era nova.conf
    files keep them.  Interval semantics are oslo.service's: a negative
    spacing disables the task, 0 runs it at the default interval
    (``periodic_interval_max``); options that gate a task inside it (timeouts,
    ``volume_usage_poll_interval``, ``instance_usage_audit``) are off at 0/false.
    """

    periodic_interval_max: int = 60
    update_resources_interval: int = 0
    instance_delete_interval: int = 300
    maximum_instance_delete_attempts: int = 5
    instance_usage_audit: bool = False
    instance_usage_audit_period: str = "month"
    bandwidth_poll_interval: int = 600
    volume_usage_poll_interval: int = 0
    sync_power_state_interval: int = 600
    heal_instance_info_cache_interval: int = 60
    reboot_timeout: int = 0
    rescue_timeout: int = 0
    resize_confirm_window: int = 0
    shelved_poll_interval: int = 3600
    shelved_offload_time: int = 0
    reclaim_instance_interval: int = 0
    running_deleted_instance_poll_interval: int = 1800
    running_deleted_instance_action: str = "reap"
    running_deleted_instance_timeout: int = 0
    reserved_host_memory_mb: int = 512
    reserved_host_disk_mb: int = 0


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """``[service]``: how ``offload serve`` runs (offload's own section)."""

    #: HTTP /healthz /metrics /status; 0 turns the endpoint off
    http_host: str = "127.0.0.1"
    http_port: int = 0
    #: JSON lines of every statement (empty: off)
    trace_file: str = ""
    #: JSON lines of usage notifications (empty: kept in memory, counted)
    notifications_file: str = ""
    #: seed of the simulated hypervisor
    driver_seed: int = 0
    #: scheduled runs are delayed by up to this fraction of their spacing
    jitter: float = 0.1
    #: `offload status` and /status report health degraded when a server's TLS
    #: certificate expires within this many days
    cert_warning_days: float = 14.0


@dataclass(frozen=True, slots=True)
class TestbedSettings:
    """``[testbed]``: written by ``offload testbed up``; empty outside a testbed."""

    __test__ = False  # not a pytest test class despite its name

    backend: str = ""
    dir: str = ""
    #: privileged account on the primary (status, test databases)
    admin_connection: URL | None = None
    #: privileged accounts on each replica, in the order of slave_connections
    replica_admin_connections: tuple[URL, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything offload is configured with; immutable once loaded."""

    host: str = field(default_factory=socket.gethostname)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    replica: ReplicaSettings = field(default_factory=ReplicaSettings)
    testbed: TestbedSettings = field(default_factory=TestbedSettings)
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    #: the file the settings came from, if any
    source: Path | None = None

    @property
    def has_replica(self) -> bool:
        return bool(self.database.slave_connections)

    def require_connection(self) -> URL:
        """The primary URL, or a ConfigError saying how to get one."""
        if self.database.connection is None:
            where = f" in {self.source}" if self.source else ""
            raise ConfigError(
                f"no [database] connection is configured{where}",
                hint="run `make up` (it writes .testbed/offload.conf) or pass --config FILE",
            )
        return self.database.connection


# --- option table --------------------------------------------------------

Parser = Callable[[str, str], Any]


def _text(value: str, option: str) -> str:
    return value.strip()


def _int(minimum: int) -> Parser:
    def parse(value: str, option: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ConfigError(f"{option} must be a whole number, got {value.strip()!r}") from None
        if number < minimum:
            raise ConfigError(f"{option} must be >= {minimum}, got {number}")
        return number

    return parse


def _float(minimum: float, *, exclusive: bool = False, unit: str = "seconds") -> Parser:
    def parse(value: str, option: str) -> float:
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigError(
                f"{option} must be a number of {unit}, got {value.strip()!r}"
            ) from None
        if not math.isfinite(number):
            raise ConfigError(f"{option} must be a finite number, got {value.strip()!r}")
        if number < minimum or (exclusive and number == minimum):
            bound = ">" if exclusive else ">="
            raise ConfigError(f"{option} must be {bound} {minimum}, got {number}")
        return number

    return parse


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _bool(value: str, option: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"{option} must be true or false, got {value.strip()!r}")


def _choice(enum: type[Enum]) -> Parser:
    def parse(value: str, option: str) -> Enum:
        word = value.strip().lower()
        for member in enum:
            if member.value == word:
                return member
        allowed = " | ".join(str(m.value) for m in enum)
        raise ConfigError(f"{option} must be one of {allowed}, got {value.strip()!r}")

    return parse


def _words(*allowed: str) -> Parser:
    def parse(value: str, option: str) -> str:
        word = value.strip().lower()
        if word not in allowed:
            raise ConfigError(
                f"{option} must be one of {' | '.join(allowed)}, got {value.strip()!r}"
            )
        return word

    return parse


def _optional_url(value: str, option: str) -> URL | None:
    return parse_url(value, option=option) if value.strip() else None


#: a comma that starts the next URL of a list: one followed by "scheme://"
_URL_SEPARATOR = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")


def _split_urls(value: str) -> list[str]:
    # A comma is legal unescaped in a URL's userinfo (RFC 3986 sub-delims), so
    # a nova.conf password may hold one: split only where a new URL begins.
    return [p for p in (s.strip().strip(",").strip() for s in _URL_SEPARATOR.split(value)) if p]


def _url_list(value: str, option: str) -> tuple[URL, ...]:
    # Nova takes one URL; a comma-separated list is offload's extension for
    # several replicas.
    return tuple(parse_url(p, option=option) for p in _split_urls(value))


def _server_url(value: str, option: str) -> URL | None:
    return parse_url(value, option=option, need_database=False) if value.strip() else None


def _server_url_list(value: str, option: str) -> tuple[URL, ...]:
    return tuple(parse_url(p, option=option, need_database=False) for p in _split_urls(value))


@dataclass(frozen=True, slots=True)
class _Option:
    section: str
    key: str
    attribute: str
    parse: Parser
    #: a section read when ``section`` does not set the option
    fallback: str | None = None


def _opt(section: str, key: str, parse: Parser, attribute: str | None = None) -> _Option:
    return _Option(section, key, attribute or key, parse)


_ANY_INT = _int(-(2**31))


def _nova(key: str, parse: Parser) -> _Option:
    """A nova-compute option: ``[compute]``, else ``[DEFAULT]`` (Juno's place for it)."""
    return _Option("compute", key, key, parse, fallback="DEFAULT")


_OPTIONS: tuple[_Option, ...] = (
    _opt("DEFAULT", "host", _text),
    _opt("database", "connection", _optional_url),
    _opt("database", "slave_connection", _url_list, "slave_connections"),
    _opt("database", "max_pool_size", _int(1)),
    _opt("database", "max_overflow", _int(0)),
    _opt("database", "pool_timeout", _int(1)),
    # oslo.db's deprecated name first, so that the current name wins when both are set
    _opt("database", "idle_timeout", _int(1), "connection_recycle_time"),
    _opt("database", "connection_recycle_time", _int(1)),
    _opt("database", "mysql_sql_mode", _text),
    _opt("replica", "max_lag", _float(0.0, exclusive=True)),
    _opt("replica", "lag_policy", _choice(LagPolicy)),
    _opt("replica", "causal_reads", _bool),
    _opt("replica", "causal_timeout", _float(0.0)),
    _opt("replica", "heartbeat_interval", _float(0.0, exclusive=True)),
    _opt("replica", "heartbeat_table", _text),
    _opt("replica", "heartbeat_source", _words("offload", "pt-heartbeat")),
    _opt("replica", "wait_timeout", _float(0.0, exclusive=True)),
    _nova("periodic_interval_max", _int(1)),
    _nova("update_resources_interval", _ANY_INT),
    _nova("instance_delete_interval", _ANY_INT),
    _nova("maximum_instance_delete_attempts", _int(1)),
    _nova("instance_usage_audit", _bool),
    _nova("instance_usage_audit_period", _words("hour", "day", "month", "year")),
    _nova("bandwidth_poll_interval", _ANY_INT),
    _nova("volume_usage_poll_interval", _ANY_INT),
    _nova("sync_power_state_interval", _ANY_INT),
    _nova("heal_instance_info_cache_interval", _ANY_INT),
    _nova("reboot_timeout", _int(0)),
    _nova("rescue_timeout", _int(0)),
    _nova("resize_confirm_window", _int(0)),
    _nova("shelved_poll_interval", _ANY_INT),
    _nova("shelved_offload_time", _ANY_INT),
    _nova("reclaim_instance_interval", _ANY_INT),
    _nova("running_deleted_instance_poll_interval", _ANY_INT),
    _nova("running_deleted_instance_action", _words("noop", "log", "shutdown", "reap")),
    _nova("running_deleted_instance_timeout", _int(0)),
    _nova("reserved_host_memory_mb", _int(0)),
    _nova("reserved_host_disk_mb", _int(0)),
    _opt("service", "http_host", _text),
    _opt("service", "http_port", _int(0)),
    _opt("service", "trace_file", _text),
    _opt("service", "notifications_file", _text),
    _opt("service", "driver_seed", _int(0)),
    _opt("service", "jitter", _float(0.0)),
    _opt("service", "cert_warning_days", _float(0.0, unit="days")),
    _opt("testbed", "backend", _words("native", "compose", "external")),
    _opt("testbed", "dir", _text),
    _opt("testbed", "admin_connection", _server_url),
    _opt("testbed", "replica_admin_connections", _server_url_list),
)
#: sections that belong to Nova/oslo: options offload does not know are ignored
_FOREIGN_SECTIONS = frozenset({"DEFAULT", "database", "compute"})
_SECTIONS: dict[str, type[Any]] = {
    "database": DatabaseSettings,
    "replica": ReplicaSettings,
    "testbed": TestbedSettings,
    "compute": ComputeSettings,
    "service": ServiceSettings,
}


_REFERENCE = re.compile(r"\$(?:(\$)|\{(\w+)\}|(\w+))")


def _substitute(raw: str, section: str, file_values: dict[str, dict[str, str]], option: str) -> str:
    """oslo.config's substitution: ``$$`` is a literal ``$``, ``$name`` another option."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(3)
        for where in (section, "DEFAULT"):
            if name in file_values.get(where, {}):
                return file_values[where][name]
        raise ConfigError(
            f"{option} refers to ${name}, which is not set",
            hint="write a literal $ as $$ (as oslo.config wants)",
        )

    return _REFERENCE.sub(replace, raw)


def _known(section: str) -> dict[str, _Option]:
    return {o.key: o for o in _OPTIONS if o.section == section}


def _read_file(path: Path) -> dict[str, dict[str, str]]:
    # [DEFAULT] must be a section like any other, not configparser's
    # inherit-into-every-section default; no %-interpolation (nova.conf
    # values contain %); repeated keys (oslo MultiStrOpt) keep the last one.
    parser = configparser.ConfigParser(default_section="\0none", interpolation=None, strict=False)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist",
            hint="run `make up` to create .testbed/offload.conf, or pass --config FILE",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except configparser.Error as exc:
        # Only line numbers: the offending line itself may hold a password.
        first = str(exc).splitlines()[0].split(":")[0].rstrip(".")
        lines = _error_lines(exc)
        where = f" at line {', '.join(map(str, lines))}" if lines else ""
        raise ConfigError(
            f"{path} is not an INI file ({first}{where})",
            hint="every option must sit under a [section] header as `name = value`",
        ) from None
    return {name: dict(parser.items(name)) for name in parser.sections()}


def _error_lines(exc: configparser.Error) -> list[int]:
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return [exc.lineno]
    if isinstance(exc, configparser.ParsingError):
        return [lineno for lineno, _line in exc.errors]
    lineno = getattr(exc, "lineno", None)
    return [lineno] if isinstance(lineno, int) else []


def _env_values(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        section = "DEFAULT" if section.upper() == "DEFAULT" else section.lower()
        if key.lower() not in _known(section):
            known = ", ".join(
                sorted(f"{ENV_PREFIX}{o.section.upper()}__{o.key.upper()}" for o in _OPTIONS)
            )
            raise ConfigError(
                f"environment variable {name} names no offload option",
                hint=f"known: {known}",
            )
        found.setdefault(section, {})[key.lower()] = value
    return found


def find_config_file(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str], cwd: Path | None = None
) -> Path | None:
    """The config file to use: --config, then $OFFLOAD_CONFIG, then the testbed's."""
    if explicit:
        return Path(explicit)
    if environ.get("OFFLOAD_CONFIG"):
        return Path(environ["OFFLOAD_CONFIG"])
    candidate = (cwd or Path.cwd()) / DEFAULT_TESTBED_CONFIG
    return candidate if candidate.is_file() else None


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    sections: Collection[str] | None = None,
) -> Settings:
    """Build the one Settings object from ``path`` (may be None) and ``environ``.

    ``sections`` (e.g. ``("compute",)``) reads only those sections' values, the others
    keep their defaults: for a command that needs no more (``offload tasks`` parses no
    database URL, so it does not load SQLAlchemy).  Unknown options are refused in every
    section all the same.
    """
    file_values = _read_file(path) if path is not None else {}
    env_values = _env_values(os.environ if environ is None else environ)

    for section, values in file_values.items():
        if section in _FOREIGN_SECTIONS or section not in _SECTIONS:
            continue  # nova's own, or a section offload has no business with
        unknown = sorted(set(values) - set(_known(section)))
        if unknown:
            raise ConfigError(
                f"unknown option [{section}] {unknown[0]} in {path}",
                hint=f"known options there: {', '.join(sorted(_known(section)))}",
            )

    parsed: dict[str, dict[str, Any]] = {}
    for option in _OPTIONS:
        if sections is not None and option.section not in sections:
            continue
        name = f"[{option.section}] {option.key}"
        raw = env_values.get(option.section, {}).get(option.key)
        if raw is None:
            for where in filter(None, (option.section, option.fallback)):
                raw = file_values.get(where, {}).get(option.key)
                if raw is not None:
                    name = f"[{where}] {option.key}"
                    raw = _substitute(raw, where, file_values, name)
                    break
        if raw is None:
            continue
        value = option.parse(raw, name)
        parsed.setdefault(option.section, {})[option.attribute] = value

    top: dict[str, Any] = {name: cls(**parsed.get(name, {})) for name, cls in _SECTIONS.items()}
    host = parsed.get("DEFAULT", {}).get("host")
    if host:
        top["host"] = host
    return Settings(source=path, **top)
