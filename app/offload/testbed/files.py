"""A testbed directory's private files: state, credentials, config (all mode 0600).

``state.json`` is one of two typed documents, by its ``backend``: :class:`NativeState`
(servers as local processes) or :class:`ComposeState` (docker-compose's stack).  Both
are frozen: a change is a new value (``dataclasses.replace``) that is saved.  The JSON
keeps the keys earlier versions wrote, so their files load (missing optional keys take
their defaults; a file without ``backend`` is a native testbed's); unknown keys are
ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from offload.errors import TestbedError
from offload.testbed.topology import Credentials, write_private

__all__ = [
    "LOOPBACK",
    "STATE_FILE",
    "ComposeState",
    "NativeState",
    "NovaSchemaRecord",
    "ServerRecord",
    "load_credentials",
    "read_state",
    "read_state_of",
    "save_state",
    "write_private",
]

STATE_FILE = "state.json"
#: where a native testbed's servers listen
LOOPBACK = "127.0.0.1"

T = TypeVar("T")


def _replicas(
    names: list[str], primary: str, departed: tuple[str, ...], diverged: tuple[str, ...]
) -> list[str]:
    """The servers acting as replicas, in order: neither primary, departed nor diverged."""
    out = (primary, *departed, *diverged)
    return [n for n in names if n not in out]


def _role(name: str, primary: str, departed: tuple[str, ...], diverged: tuple[str, ...]) -> str:
    """primary | replica | departed | diverged."""
    if name == primary:
        return "primary"
    if name in departed:
        return "departed"
    return "diverged" if name in diverged else "replica"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerRecord:
    """One server process of a native testbed."""

    port: int
    server_id: int
    #: its my.cnf: the process's command line carries it, so a reused pid is never ours
    defaults_file: str
    #: the process group leader while it runs; None when stopped
    pid: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NovaSchemaRecord:
    """What ``nova-manage db sync`` made of a schema=nova testbed's nova database."""

    revision: str
    tables: int
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NativeState:
    """``state.json`` of a native testbed: the server, its ports, each process."""

    backend: Literal["native"] = "native"
    flavor: str
    version: str = ""
    #: the server binary that made the data dirs
    server: str = ""
    #: the flavor asked for ("" when none was)
    spec: str = ""
    host: str = LOOPBACK
    #: the ports clients use: the endpoints' when there are endpoints, else the servers'
    primary_port: int
    replica_ports: tuple[int, ...]
    service_port: int = 0
    #: True once the bootstrap finished (a data dir without it is deleted)
    initialised: bool = False
    servers: Mapping[str, ServerRecord] = field(default_factory=dict)
    #: what makes the nova database: offload (its tables, `offload db sync`) or nova
    schema: str = "offload"
    #: schema nova: set once nova-manage db sync made the nova database
    nova_schema: NovaSchemaRecord | None = None
    #: the servers require TLS and clients verify them (testbed/tls.py); False in files
    #: written before TLS existed
    tls: bool = False
    #: the server acting as primary (a switchover or failover moves it)
    primary: str = "primary"
    #: primaries a failover left: they rejoin as replicas when they run again
    departed: tuple[str, ...] = ()
    #: servers that hold transactions the primary lacks: kept out, never rejoined silently
    diverged: tuple[str, ...] = ()
    #: True when clients reach the servers through the testbed's endpoints (link proxies
    #: ``primary-endpoint``, ``replicaN-endpoint``) that a role change moves
    endpoints: bool = False

    @property
    def source_port(self) -> int:
        """The acting primary's own port (what replicas replicate from)."""
        return self.servers[self.primary].port

    def server_names(self) -> list[str]:
        return list(self.servers)

    def replicas(self) -> list[str]:
        """The servers acting as replicas, in name order (neither primary nor diverged)."""
        return _replicas(self.server_names(), self.primary, self.departed, self.diverged)

    def role(self, name: str) -> str:
        """primary | replica | departed | diverged."""
        return _role(name, self.primary, self.departed, self.diverged)

    def with_pid(self, name: str, pid: int | None) -> NativeState:
        servers = dict(self.servers)
        servers[name] = replace(servers[name], pid=pid)
        return replace(self, servers=servers)

    def without_pids(self) -> NativeState:
        return replace(self, servers={n: replace(r, pid=None) for n, r in self.servers.items()})


@dataclass(frozen=True, slots=True, kw_only=True)
class ComposeState:
    """``state.json`` of a compose testbed: the project, its command, ports and images."""

    backend: Literal["compose"] = "compose"
    project: str
    #: the compose program: ``[docker, compose]`` or ``[docker-compose]``
    compose: tuple[str, ...]
    compose_file: str
    env_file: str
    #: the port asked for (0: Docker picks)
    port: int
    compute_scale: int = 1
    #: what docker-compose.yml interpolates for the images (OFFLOAD_DB_IMAGE, ...)
    images: Mapping[str, str] = field(default_factory=dict)
    #: the compute container(s) run with the stack
    compute: bool = False
    initialised: bool = False
    flavor: str = ""
    #: the host ports Docker bound (known once the containers run)
    primary_port: int = 0
    replica_port: int = 0
    service_port: int = 0
    #: the control API of the replica's link (the ``link`` service)
    link_port: int = 0
    #: the servers require TLS and clients verify them (testbed/tls.py); False in files
    #: written before the compose testbed had TLS
    tls: bool = False
    #: the control APIs of the clients' endpoints (``primary-endpoint``:
    #: the ``endpoint`` service, ``replica0-endpoint``: ``replica-endpoint``); empty in
    #: a stack made before endpoints (its roles cannot move)
    endpoint_ports: Mapping[str, int] = field(default_factory=dict)
    #: the compose service acting as primary (a switchover or failover moves it)
    primary: str = "primary"
    #: as NativeState's: left by a failover / kept out
    departed: tuple[str, ...] = ()
    diverged: tuple[str, ...] = ()

    def server_names(self) -> list[str]:
        """The DB services (the servers keep their service names whatever their role)."""
        return ["primary", "replica"]

    def replicas(self) -> list[str]:
        return _replicas(self.server_names(), self.primary, self.departed, self.diverged)

    def role(self, name: str) -> str:
        return _role(name, self.primary, self.departed, self.diverged)


def _parsed(path: Path, parse: Callable[[], T]) -> T:
    try:
        return parse()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TestbedError(
            f"{path} is not a testbed's state ({type(exc).__name__}: {exc})",
            hint=f"remove {path.parent} (`make clean`) and run up again",
        ) from None


def _native(data: Mapping[str, Any]) -> NativeState:
    return NativeState(
        flavor=str(data["flavor"]),
        version=str(data.get("version", "")),
        server=str(data.get("server", "")),
        spec=str(data.get("spec", "")),
        host=str(data.get("host", LOOPBACK)),
        primary_port=int(data["primary_port"]),
        replica_ports=tuple(int(p) for p in data["replica_ports"]),
        service_port=int(data.get("service_port", 0)),
        initialised=bool(data.get("initialised", False)),
        servers={
            str(name): ServerRecord(
                port=int(record["port"]),
                server_id=int(record["server_id"]),
                defaults_file=str(record["defaults_file"]),
                pid=int(record["pid"]) if record.get("pid") else None,
            )
            for name, record in data.get("servers", {}).items()
        },
        schema=str(data.get("schema") or "offload"),
        nova_schema=(
            NovaSchemaRecord(
                revision=str(data["nova_schema"]["revision"]),
                tables=int(data["nova_schema"]["tables"]),
                seconds=float(data["nova_schema"]["seconds"]),
            )
            if data.get("nova_schema")
            else None
        ),
        tls=bool(data.get("tls", False)),
        primary=str(data.get("primary") or "primary"),
        departed=tuple(str(n) for n in data.get("departed", ())),
        diverged=tuple(str(n) for n in data.get("diverged", ())),
        endpoints=bool(data.get("endpoints", False)),
    )


def _compose(data: Mapping[str, Any]) -> ComposeState:
    return ComposeState(
        project=str(data["project"]),
        compose=tuple(str(p) for p in data["compose"]),
        compose_file=str(data["compose_file"]),
        env_file=str(data.get("env_file", "")),
        port=int(data["port"]),
        compute_scale=int(data.get("compute_scale", 1)),
        images={str(k): str(v) for k, v in data.get("images", {}).items()},
        compute=bool(data.get("compute", False)),
        initialised=bool(data.get("initialised", False)),
        flavor=str(data.get("flavor") or ""),
        primary_port=int(data.get("primary_port", 0)),
        replica_port=int(data.get("replica_port", 0)),
        service_port=int(data.get("service_port", 0)),
        link_port=int(data.get("link_port", 0)),
        tls=bool(data.get("tls", False)),
        endpoint_ports={str(k): int(v) for k, v in data.get("endpoint_ports", {}).items()},
        primary=str(data.get("primary") or "primary"),
        departed=tuple(str(n) for n in data.get("departed", ())),
        diverged=tuple(str(n) for n in data.get("diverged", ())),
    )


def _raw(directory: Path) -> dict[str, Any] | None:
    path = directory / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise TestbedError(
            f"{path} is unreadable ({exc})",
            hint=f"remove {directory} (`make clean`) and run up again",
        ) from None
    if not isinstance(data, dict):
        raise TestbedError(
            f"{path} is not a testbed's state",
            hint=f"remove {directory} (`make clean`) and run up again",
        )
    return data


def read_state(directory: Path) -> NativeState | ComposeState | None:
    """``state.json`` of a testbed directory, typed by its backend (None when there is none)."""
    data = _raw(directory)
    if data is None:
        return None
    path = directory / STATE_FILE
    if data.get("backend", "native") == "compose":
        return _parsed(path, lambda: _compose(data))
    return _parsed(path, lambda: _native(data))


StateT = TypeVar("StateT", NativeState, ComposeState)


def read_state_of(directory: Path, kind: type[StateT]) -> StateT | None:
    """The state of ``directory``'s testbed when it is a ``kind`` one; one line if another's."""
    state = read_state(directory)
    if state is not None and not isinstance(state, kind):
        raise TestbedError(
            f"the testbed in {directory} is a {state.backend} testbed",
            hint="take it down first (`make down`), or use another --dir",
        )
    return state


def save_state(directory: Path, state: NativeState | ComposeState) -> None:
    """Write ``state.json`` (0600)."""
    write_private(directory / STATE_FILE, json.dumps(asdict(state), indent=2))


def load_credentials(directory: Path) -> Credentials:
    """The testbed's passwords: generated on first use, then kept in credentials.json."""
    path = directory / "credentials.json"
    if path.exists():
        return Credentials(**json.loads(path.read_text(encoding="utf-8")))
    creds = Credentials.generate()
    write_private(path, json.dumps(asdict(creds), indent=2))
    return creds
