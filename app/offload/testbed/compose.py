"""The compose testbed: docker-compose.yml's primary, replica, link and compute containers.

``ComposeTopology`` has the shape of ``NativeTopology``: ``up()`` returns a
``TestbedInfo`` once the containers are healthy and the replica applied the
primary's position, and writes ``DIR/offload.conf`` with 127.0.0.1 URLs, so every
command after ``up`` is the same for both backends.  Layout of the directory::

    DIR/state.json         backend, compose project and command, ports (0600)
    DIR/credentials.json   generated passwords (0600), as the native backend
    DIR/compose.env        what docker-compose.yml interpolates: passwords,
                           images, host ports (0600; `--env-file` for your own
                           `docker-compose` commands)
    DIR/offload.conf       the config every later command reads (0600)

The compose project is named after the directory (``offload-<hash>``), so two
testbeds never share containers.  Compose v2 (``docker compose``) or v1
(``docker-compose``), whichever exists, is run with argument lists.  Waiting
uses one monotonic deadline; a timeout error carries the containers' states,
the replica's status and the end of the logs.  A stack that did not come up is
taken down (with its volumes when it was new) before ``up()`` raises;
``down()`` removes containers, network and volumes.

The replica replicates through its link (the ``link`` service: offload's proxy,
:mod:`offload.link.proxy`, run from the compute image), always; :meth:`links` gives its
control API, published on the host's 127.0.0.1, to ``offload link`` and the injector.

Clients (the compute service, the host's primary and replica ports, so offload.conf's
URLs) reach the servers through two endpoints, the same proxy: the ``endpoint`` service
leads to the acting primary, ``replica-endpoint`` to the acting replica.  The servers
keep their service names (``primary``, ``replica``) whatever role they have; a role
change (:mod:`offload.testbed.roles`, through the ``RoleTopology`` methods below)
moves the endpoints and the link's upstream, and records the roles in ``state.json``.
Admin work reaches each server on its own published port.

The compute container: ``up()`` starts it with the servers unless
``start_compute=False`` — ``make up`` starts it after the seed
(``offload service start`` → :meth:`ComposeTopology.start_compute`), as the
native backend starts its service, so that the service's first look at the
hypervisor sees the seeded instances and the seed does not race its first runs.

TLS (on by default, as natively; ``tls=False``, ``--tls off``, ``$OFFLOAD_TLS=off``):
``_prepare`` makes the testbed's CA and server certificate (:mod:`offload.testbed.tls`),
valid for 127.0.0.1/localhost (the host's URLs) and the service names ``primary``,
``replica`` and ``link`` (the name the replica dials), and ``DIR/tls/server.cnf``, the
servers' TLS options.  ``DIR/tls`` is mounted read-only into the DB containers, whose
entrypoint copies it to ``/run/offload/tls`` owned by the mysql user (the host's files
stay 0600); the compute container gets the CA certificate (public) base64-encoded in
its environment.  The host's URLs in offload.conf and the compute container's carry the
CA and verify the certificate and its name.

Images: the DB image is ``$OFFLOAD_DB_IMAGE`` (default ``mysql:8.4`` from a
registry).  Offline (``offline=True``, ``$OFFLOAD_OFFLINE=1``, or automatically
when the local ``offload-mariadb`` image exists) the DB and compute images are
the local ones of :mod:`offload.testbed.images`, built first when missing.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, text

from offload import replication
from offload.dberrors import unpooled_engine
from offload.errors import OffloadError, TestbedError
from offload.link.runner import PublishedLinks
from offload.testbed import engine, images
from offload.testbed.files import (
    ComposeState,
    load_credentials,
    read_state_of,
    save_state,
    write_private,
)
from offload.testbed.mysqld import find_mysql_dir, render_sql, split_sql
from offload.testbed.native import NO_REPLICA_CUT, endpoint_name
from offload.testbed.servers import FlavorSpec, default_flavor
from offload.testbed.tls import (
    DEFAULT_SERVER_NAMES,
    TLS_DIR,
    TlsFiles,
    default_tls,
    ensure_certificates,
    replica_tls_placeholders,
)
from offload.testbed.topology import (
    NOVA_DATABASE,
    Credentials,
    TestbedInfo,
    loopback_url,
    write_config,
)
from offload.waiting import Deadline, wait_for

__all__ = [
    "DEFAULT_DB_IMAGE",
    "ComposeCommand",
    "ComposeTopology",
    "compose_command",
    "offline_wanted",
    "project_name",
    "registry_image",
]

DEFAULT_DB_IMAGE = "mysql:8.4"
DEFAULT_PORT = 33061
#: as the native backend: replica on port + 1, the compute service on port + 19
SERVICE_PORT_OFFSET = 19
#: scaled compute containers take the host ports port+19 ... port+19+9
SERVICE_PORT_RANGE = 10
ONLINE_COMPUTE_IMAGE = "offload-compute:latest"
ONLINE_BASE_IMAGE = "python:3.11-slim"
#: the link's control API on the host: port + 2 (after the primary and the replica)
LINK_PORT_OFFSET = 2
DB_PORT = 3306
SERVICE_HTTP_PORT = 8080
LINK_CONTROL_PORT = 8081
#: what offload calls the compose replica (``offload link set replica0``), as natively
REPLICA_NAME = "replica0"
#: the compose services the server certificate is valid for (a client in the network
#: dials them by name: the compute service its endpoints, the replica its ``link``)
TLS_SERVICE_NAMES = ("primary", "replica", "link", "endpoint", "replica-endpoint")
#: where the DB containers' servers read DIR/tls (mysql/entrypoint.sh copies it there)
CONTAINER_TLS_DIR = Path("/run/offload/tls")
#: DIR/tls/server.cnf: the servers' TLS options, included by mysql/entrypoint.sh
SERVER_TLS_INCLUDE = "server.cnf"
#: the endpoints' control APIs on the host: port + 3, + 4; the servers' own ports: + 5, + 6
ENDPOINT_PORT_OFFSETS = {endpoint_name("primary"): 3, endpoint_name(REPLICA_NAME): 4}
SERVER_PORT_OFFSETS = {"primary": 5, "replica": 6}
#: the compose service of each endpoint
ENDPOINT_SERVICES = {
    endpoint_name("primary"): "endpoint",
    endpoint_name(REPLICA_NAME): "replica-endpoint",
}
#: the services that run without the compute containers
SERVERS_AND_PROXIES = ("primary", "link", "replica", *ENDPOINT_SERVICES.values())
_PORT_VARIABLES = {
    endpoint_name("primary"): "OFFLOAD_ENDPOINT_PORT",
    endpoint_name(REPLICA_NAME): "OFFLOAD_REPLICA_ENDPOINT_PORT",
    "primary": "OFFLOAD_PRIMARY_SERVER_PORT",
    "replica": "OFFLOAD_REPLICA_SERVER_PORT",
}
#: what docker-compose.yml interpolates; never taken from the caller's environment
_OWN_VARIABLES = (
    "NOVA_PASSWORD",
    "NOVA_RO_PASSWORD",
    "REPL_PASSWORD",
    "ADMIN_PASSWORD",
    "OFFLOAD_DB_IMAGE",
    "OFFLOAD_COMPUTE_IMAGE",
    "OFFLOAD_BASE_IMAGE",
    "OFFLOAD_WHEELHOUSE",
    "OFFLOAD_PRIMARY_PORT",
    "OFFLOAD_REPLICA_PORT",
    "OFFLOAD_LINK_PORT",
    "OFFLOAD_ENDPOINT_PORT",
    "OFFLOAD_REPLICA_ENDPOINT_PORT",
    "OFFLOAD_PRIMARY_SERVER_PORT",
    "OFFLOAD_REPLICA_SERVER_PORT",
    "OFFLOAD_SERVICE_PORTS",
    "OFFLOAD_COMPUTE_HOST",
    "OFFLOAD_TLS_DIR",
    "OFFLOAD_TLS_ON",
    "OFFLOAD_TLS_CA",
    "OFFLOAD_TLS_CA_PEM",
)
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_STOPPED = frozenset({"exited", "dead"})


def compose_command() -> list[str]:
    """``docker compose`` (v2) when the plugin exists, else ``docker-compose`` (v1)."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is not None:
        return [legacy]
    raise TestbedError(
        "neither `docker compose` (v2) nor `docker-compose` (v1) is installed",
        hint="install Docker Compose (Debian: `apt-get install docker-compose`), "
        "or use --backend native",
    )


#: registry images by flavor spec (where a registry answers)
REGISTRY_IMAGES = {
    "mysql": DEFAULT_DB_IMAGE,
    "mysql-9.7": "mysql:9.7",
    "mariadb": "mariadb:11.4",
    "mariadb-11.8": "mariadb:11.8",
    "mariadb-10.11": "mariadb:10.11",
}


def registry_image(flavor: FlavorSpec | None) -> str:
    """The registry's DB image for a flavor (``mysql:8.4`` when none is asked for)."""
    if flavor is None:
        return DEFAULT_DB_IMAGE
    return REGISTRY_IMAGES.get(str(flavor), f"{flavor.flavor.value}:{flavor.series}")


def _require_engine() -> None:
    """TestbedError (one line) unless a Docker engine answers (MissingExtra without the SDK)."""
    engine.client()


def offline_wanted(environ: Mapping[str, str]) -> bool:
    """$OFFLOAD_OFFLINE when set; otherwise True when the local base image exists."""
    chosen = environ.get("OFFLOAD_OFFLINE", "").strip().lower()
    if chosen:
        return chosen in _TRUE
    return images.image_exists(images.BASE_IMAGE)


def project_name(directory: Path) -> str:
    """``offload-<8 hex>``: one compose project per testbed directory."""
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:8]
    return f"offload-{digest}"


@dataclass(frozen=True, slots=True)
class ComposeCommand:
    """How to run compose on this testbed: ``[*program, "-f", file, "-p", project, ...]``."""

    program: list[str]
    file: str
    project: str

    def argv(self, *subcommand: str) -> list[str]:
        return [*self.program, "-f", self.file, "-p", self.project, *subcommand]


class ComposeTopology:
    """docker-compose.yml's stack, driven like the native testbed."""

    backend = "compose"

    def __init__(
        self,
        directory: Path,
        *,
        port: int = DEFAULT_PORT,
        replicas: int = 1,
        project: str | None = None,
        offline: bool | None = None,
        compute_scale: int = 1,
        start_compute: bool = True,
        start_timeout: float = 300.0,
        compose_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        flavor: FlavorSpec | None = None,
        tls: bool | None = None,
    ) -> None:
        if replicas != 1:
            raise TestbedError(
                f"the compose testbed has one replica, asked for {replicas}",
                hint="use --backend native for more replicas",
            )
        if not 0 <= port <= 65535 - SERVICE_PORT_OFFSET - SERVICE_PORT_RANGE:
            raise TestbedError(
                f"port {port} is out of range", hint="use 1024-65000, or 0 for ports Docker picks"
            )
        if not 1 <= compute_scale <= SERVICE_PORT_RANGE:
            raise TestbedError(
                f"1 to {SERVICE_PORT_RANGE} compute containers, asked for {compute_scale}"
            )
        if project is not None and not _PROJECT.match(project):
            raise TestbedError(
                f"{project!r} is not a compose project name",
                hint="use lower-case letters, digits, - and _",
            )
        self.dir = directory.resolve()
        self.port = port
        self.project = project
        self.offline = offline
        self.compute_scale = compute_scale
        self.start_compute_now = start_compute
        self.start_timeout = start_timeout
        self.compose_file = compose_file
        self.environ = dict(os.environ if environ is None else environ)
        self.flavor = flavor if flavor is not None else default_flavor()
        #: TLS required by the servers and verified by clients (testbed/tls.py);
        #: None: $OFFLOAD_TLS, else the existing testbed's, else on
        self.tls_asked = tls if tls is not None else default_tls()
        self.tls = True if self.tls_asked is None else self.tls_asked

    # --- files --------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def config_path(self) -> Path:
        return self.dir / "offload.conf"

    @property
    def env_path(self) -> Path:
        return self.dir / "compose.env"

    def _load_state(self) -> ComposeState | None:
        return read_state_of(self.dir, ComposeState)

    def _state(self) -> ComposeState:
        state = self._load_state()
        if state is None:
            raise TestbedError(f"no compose testbed in {self.dir}", hint="run up first")
        return state

    def _save_state(self, state: ComposeState) -> None:
        save_state(self.dir, state)

    def _credentials(self) -> Credentials:
        return load_credentials(self.dir)

    # --- the compose command --------------------------------------------------

    def _command(self, state: ComposeState) -> ComposeCommand:
        return ComposeCommand(
            program=[*state.compose, "--env-file", str(self.env_path)],
            file=state.compose_file,
            project=state.project,
        )

    def _compose(
        self, state: ComposeState, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # the env file decides what the compose file interpolates, not the caller's shell
        env = {k: v for k, v in os.environ.items() if k not in _OWN_VARIABLES}
        try:
            result = subprocess.run(
                self._command(state).argv(*args),
                capture_output=True,
                text=True,
                check=False,
                timeout=max(timeout, 1.0),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise TestbedError(
                f"`compose {' '.join(args)}` did not finish within {timeout:.0f}s"
            ) from None
        if check and result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
            raise TestbedError(
                f"`compose {' '.join(args)}` failed (exit {result.returncode}):\n{tail}"
            )
        return result

    def command_line(self) -> str:
        """The compose command a person runs on this testbed by hand (then ``ps``, ``logs``...)."""
        state = self._state()
        program = [Path(part).name for part in state.compose]
        return " ".join([*program, "-p", state.project, "--env-file", str(self.env_path)])

    def run(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``compose ARGS`` on this testbed (``stop replica``, ``ps``, ``config -q`` ...)."""
        return self._compose(self._state(), *args, timeout=timeout, check=check)

    def _images(self) -> dict[str, str]:
        offline = self.offline if self.offline is not None else offline_wanted(self.environ)
        chosen_db = self.environ.get("OFFLOAD_DB_IMAGE", "").strip()
        if offline:
            images.ensure_images(flavors=[self.flavor] if self.flavor else None)
            return {
                "OFFLOAD_DB_IMAGE": chosen_db or images.db_image(self.flavor),
                "OFFLOAD_COMPUTE_IMAGE": images.COMPUTE_IMAGE,
                "OFFLOAD_BASE_IMAGE": images.BASE_IMAGE,
                "OFFLOAD_WHEELHOUSE": str(images.WHEELHOUSE),
            }
        return {
            "OFFLOAD_DB_IMAGE": chosen_db or registry_image(self.flavor),
            "OFFLOAD_COMPUTE_IMAGE": ONLINE_COMPUTE_IMAGE,
            "OFFLOAD_BASE_IMAGE": ONLINE_BASE_IMAGE,
            "OFFLOAD_WHEELHOUSE": "",
        }

    @staticmethod
    def _ports(port: int, scale: int = 1) -> dict[str, str]:
        """Host ports: fixed ones, or 0 (Docker picks); a range for scaled compute containers."""
        if port == 0:
            return {
                "OFFLOAD_PRIMARY_PORT": "0",
                "OFFLOAD_REPLICA_PORT": "0",
                "OFFLOAD_LINK_PORT": "0",
                **{variable: "0" for variable in _PORT_VARIABLES.values()},
                "OFFLOAD_SERVICE_PORTS": "0",
            }
        first = port + SERVICE_PORT_OFFSET
        # one compute container: exactly port+19; scaled: Docker hands out the range
        service = str(first) if scale == 1 else f"{first}-{first + SERVICE_PORT_RANGE - 1}"
        return {
            "OFFLOAD_PRIMARY_PORT": str(port),
            "OFFLOAD_REPLICA_PORT": str(port + 1),
            "OFFLOAD_LINK_PORT": str(port + LINK_PORT_OFFSET),
            **{
                _PORT_VARIABLES[name]: str(port + offset)
                for name, offset in {**ENDPOINT_PORT_OFFSETS, **SERVER_PORT_OFFSETS}.items()
            },
            "OFFLOAD_SERVICE_PORTS": service,
        }

    def _tls_files(self, state: ComposeState) -> TlsFiles | None:
        return TlsFiles.in_dir(self.dir) if state.tls else None

    def _tls_env(self, state: ComposeState) -> dict[str, str]:
        """What docker-compose.yml interpolates for TLS: the directory the DB containers
        mount, the replica's channel (``${TLS_ON}``/``${TLS_CA}`` as it sees the CA) and
        the CA for the compute container (a public certificate, base64: one line)."""
        files = self._tls_files(state)
        placeholders = replica_tls_placeholders(files, CONTAINER_TLS_DIR)
        return {
            "OFFLOAD_TLS_DIR": str(self.dir / TLS_DIR),
            "OFFLOAD_TLS_ON": placeholders["TLS_ON"],
            "OFFLOAD_TLS_CA": placeholders["TLS_CA"],
            "OFFLOAD_TLS_CA_PEM": base64.b64encode(files.ca.read_bytes()).decode()
            if files is not None and files.ca.is_file()
            else "",
        }

    def _ensure_tls(self, state: ComposeState) -> None:
        """DIR/tls (mounted even when empty): with TLS, the certificates and server.cnf."""
        home = self.dir / TLS_DIR
        home.mkdir(mode=0o700, exist_ok=True)
        files = self._tls_files(state)
        if files is None:
            return
        ensure_certificates(self.dir, names=(*DEFAULT_SERVER_NAMES, *TLS_SERVICE_NAMES))
        lines = [
            "# Written by `offload testbed up --backend compose`: the servers' TLS, as they",
            f"# see the files ({CONTAINER_TLS_DIR}: mysql/entrypoint.sh copies them there).",
            "[mysqld]",
            *files.server_options(CONTAINER_TLS_DIR),
            "",
        ]
        write_private(home / SERVER_TLS_INCLUDE, "\n".join(lines))

    def _write_env(self, state: ComposeState, creds: Credentials) -> None:
        values = {
            **creds.placeholders(),
            **state.images,
            **self._ports(state.port, state.compute_scale),
            "OFFLOAD_COMPUTE_HOST": self.environ.get("OFFLOAD_COMPUTE_HOST", ""),
            **self._tls_env(state),
        }
        lines = [
            "# Written by `offload testbed up --backend compose`: what docker-compose.yml",
            "# interpolates. It holds this testbed's passwords: keep it private (0600).",
            *(f"{key}={value}" for key, value in values.items()),
            "",
        ]
        write_private(self.env_path, "\n".join(lines))

    def prepare(self) -> ComposeCommand:
        """Directory, credentials, images and compose.env; the compose command to run.

        ``up()`` calls it; the pytest plugin calls it and lets pytest-docker run ``up``.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        return self._command(self._prepare())

    def _prepare(self) -> ComposeState:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        old = self._load_state()
        if old is not None and old.initialised and old.port != self.port:
            raise TestbedError(
                f"the compose testbed in {self.dir} runs on port {old.port}, asked for {self.port}",
                hint="take it down first (`make down`) to change its ports",
            )
        if old is not None and old.initialised:
            if self.tls_asked is None:
                self.tls = old.tls  # not asked for: the testbed's own
            if old.tls != self.tls:
                made, asked = ("on" if v else "off" for v in (old.tls, self.tls))
                raise TestbedError(
                    f"the compose testbed in {self.dir} was made with TLS {made}, "
                    f"asked for TLS {asked}",
                    hint="take it down first (`make down`) to change TLS",
                )
        _require_engine()  # after the checks of what was asked against what was made
        creds = self._credentials()
        project = self.project or (old.project if old else "") or project_name(self.dir)
        compose_file = str(
            self.compose_file.resolve()
            if self.compose_file
            else images.find_repo() / "docker-compose.yml"
        )
        fresh = ComposeState(
            project=project,
            compose=(old.compose if old else ()) or tuple(compose_command()),
            compose_file=compose_file,
            env_file=str(self.env_path),
            port=self.port,
            compute_scale=self.compute_scale,
            images=self._images(),
            tls=self.tls,
        )
        state = (
            fresh
            if old is None
            else dataclasses.replace(
                old,
                project=fresh.project,
                compose=fresh.compose,
                compose_file=fresh.compose_file,
                env_file=fresh.env_file,
                port=fresh.port,
                compute_scale=fresh.compute_scale,
                images=fresh.images,
                tls=fresh.tls,
            )
        )
        state = dataclasses.replace(state, compute=state.compute or self.start_compute_now)
        self._ensure_tls(state)
        self._write_env(state, creds)
        self._save_state(state)
        if not state.images["OFFLOAD_WHEELHOUSE"]:
            # online: compose builds the compute image from the repository (layer-cached)
            self._compose(state, "build", "compute", timeout=1800)
        return state

    # --- up -----------------------------------------------------------------

    def _scale_args(self, state: ComposeState) -> list[str]:
        scale = state.compute_scale
        return ["--scale", f"compute={scale}"] if scale != 1 else []

    def up(self) -> TestbedInfo:
        """Start (or find running) the stack; return when it is healthy and replicating."""
        state = self._prepare()
        deadline = Deadline(self.start_timeout)
        services = [] if state.compute else [*SERVERS_AND_PROXIES]
        try:
            scale = self._scale_args(state) if state.compute else []
            result = self._compose(
                state,
                "up",
                "-d",
                "--remove-orphans",
                *scale,
                *services,
                timeout=deadline.remaining(),
                check=False,
            )
            if result.returncode != 0:
                output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
                hint = ""
                if any(w in output.lower() for w in ("pull", "not found", "no such image")):
                    hint = (
                        "\n(no image registry? `make images` builds local images, which "
                        "the compose testbed then uses; or set OFFLOAD_OFFLINE=1)"
                    )
                raise TestbedError(
                    f"`compose up` failed (exit {result.returncode}):\n"
                    f"{output}{hint}\n{self.diagnostics(state)}"
                )
        except BaseException:
            self._take_down(state)
            raise
        return self.await_up(timeout=deadline.remaining())

    def await_up(self, *, timeout: float | None = None) -> TestbedInfo:
        """Wait for healthy containers and replication; write state and offload.conf.

        A stack that does not get there is taken down before this raises.
        """
        state = self._state()
        deadline = Deadline(self.start_timeout if timeout is None else max(timeout, 1.0))
        try:
            info = self._settle(state, deadline)
        except BaseException:
            self._take_down(state)
            raise
        return info

    def _settle(self, state: ComposeState, deadline: Deadline) -> TestbedInfo:
        containers = self._await_healthy(state, deadline)
        state = self._published_ports(state, containers)
        info = self._info(state, self._credentials())
        state = dataclasses.replace(state, flavor=info.flavor.value)
        self._await_replication(info, deadline)
        state = dataclasses.replace(state, initialised=True)
        self._save_state(state)
        write_config(info, self.config_path)
        return info

    def _take_down(self, state: ComposeState) -> None:
        """Stop a stack that did not come up; its volumes too unless it was up before."""
        args = ["down", "--remove-orphans", "--timeout", "10"]
        if not state.initialised:
            args.append("--volumes")
        with contextlib.suppress(OffloadError, OSError):
            self._compose(state, *args, timeout=120, check=False)

    def _inspect(self, state: ComposeState) -> list[dict[str, Any]]:
        """``docker inspect`` of every container of this project."""
        return engine.project_containers(state.project)

    @staticmethod
    def _service(container: Mapping[str, Any]) -> str:
        return str(container["Config"]["Labels"].get("com.docker.compose.service", ""))

    @staticmethod
    def _health(container: Mapping[str, Any]) -> str:
        state = container["State"]
        if state.get("Status") != "running":
            return str(state.get("Status", "?"))
        return str(state.get("Health", {}).get("Status", "running"))

    def _await_healthy(self, state: ComposeState, deadline: Deadline) -> list[dict[str, Any]]:
        wanted = dict.fromkeys(SERVERS_AND_PROXIES, 1)
        if state.compute:
            wanted["compute"] = state.compute_scale
        last: list[list[dict[str, Any]]] = [[]]

        def healthy() -> bool:
            containers = self._inspect(state)
            last[0] = containers
            by_service: dict[str, list[str]] = {}
            for container in containers:
                by_service.setdefault(self._service(container), []).append(self._health(container))
            for service in wanted:
                if any(s in _STOPPED for s in by_service.get(service, [])):
                    raise TestbedError(
                        f"the {service} container stopped while starting\n"
                        f"{self.diagnostics(state, containers)}"
                    )
            return all(
                len(by_service.get(service, [])) >= count
                and all(s == "healthy" for s in by_service[service])
                for service, count in wanted.items()
            )

        if not wait_for(healthy, deadline, interval=1.0):
            raise TestbedError(
                f"the compose testbed was not healthy within {deadline.seconds:.0f}s\n"
                f"{self.diagnostics(state, last[0])}",
                hint="a first start initialises the data dirs; `make logs` shows more",
            )
        return last[0]

    @staticmethod
    def _host_port(container: Mapping[str, Any], port: int) -> int:
        bindings = (container["NetworkSettings"].get("Ports") or {}).get(f"{port}/tcp") or []
        for binding in bindings:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        raise TestbedError(f"container {container['Name']} publishes no host port for {port}")

    def _published_ports(
        self, state: ComposeState, containers: Sequence[Mapping[str, Any]]
    ) -> ComposeState:
        """The state with the host ports Docker bound (ports 0 and ranges are only known now)."""

        def first(service: str) -> Mapping[str, Any] | None:
            mine = [
                c
                for c in containers
                if self._service(c) == service and self._health(c) not in _STOPPED
            ]
            mine.sort(
                key=lambda c: int(
                    c["Config"]["Labels"].get("com.docker.compose.container-number", "1")
                )
            )
            return mine[0] if mine else None

        ports = {}
        for key, service, port in (
            # clients' ports: the endpoints'
            ("primary_port", "endpoint", DB_PORT),
            ("replica_port", "replica-endpoint", DB_PORT),
            ("link_port", "link", LINK_CONTROL_PORT),
            *((name, service, LINK_CONTROL_PORT) for name, service in ENDPOINT_SERVICES.items()),
            ("service_port", "compute", SERVICE_HTTP_PORT),
        ):
            container = first(service)
            if container is not None:
                ports[key] = self._host_port(container, port)
        if "service_port" not in ports:  # not started yet: where it will listen, if known
            configured = self._ports(state.port, state.compute_scale)["OFFLOAD_SERVICE_PORTS"]
            ports["service_port"] = int(configured) if configured.isdigit() else 0
        return dataclasses.replace(
            state,
            primary_port=ports.get("primary_port", state.primary_port),
            replica_port=ports.get("replica_port", state.replica_port),
            link_port=ports.get("link_port", state.link_port),
            service_port=ports["service_port"],
            endpoint_ports={name: ports[name] for name in ENDPOINT_SERVICES if name in ports},
        )

    def _info(self, state: ComposeState, creds: Credentials) -> TestbedInfo:
        primary, replica, tls = state.primary_port, state.replica_port, self._tls_files(state)

        def url(user: str, password: str, port: int, database: str | None) -> URL:
            return loopback_url(user, password, port, database, tls=tls)

        admin = url("offload_admin", creds.admin, primary, None)
        engine = unpooled_engine(admin, name="primary")
        try:
            with engine.connect() as conn:
                version = str(conn.execute(text("SELECT VERSION()")).scalar_one())
        finally:
            engine.dispose()
        return TestbedInfo(
            backend=self.backend,
            dir=self.dir,
            flavor=replication.detect_flavor(version),
            primary=url("nova", creds.nova, primary, NOVA_DATABASE),
            replicas=(url("nova_ro", creds.nova_ro, replica, NOVA_DATABASE),),
            admin=admin,
            replica_admins=(url("offload_admin", creds.admin, replica, None),),
            service_port=state.service_port,
            version=version,
        )

    @staticmethod
    def _await_replication(info: TestbedInfo, deadline: Deadline) -> None:
        """The replica applied the primary's current position (asked from the host)."""
        engines = [
            unpooled_engine(url, name=name)
            for name, url in zip(
                ("primary", "replica"), (info.admin_url(), *info.replica_admin_urls()), strict=False
            )
        ]
        try:
            with engines[0].connect() as conn:
                position = replication.gtid_position(conn, info.flavor)
            with engines[1].connect() as conn:
                replication.wait_for_gtid(
                    conn, position, max(deadline.remaining(), 1.0), info.flavor, replica="replica"
                )
        finally:
            for engine in engines:
                engine.dispose()

    # --- what went wrong ------------------------------------------------------

    def diagnostics(
        self,
        state: ComposeState | None = None,
        containers: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Containers' states, the replica's status, the end of the logs (for errors)."""
        lines: list[str] = []
        try:
            listed = (
                list(containers)
                if containers is not None
                else self._inspect(state if state is not None else self._state())
            )
        except OffloadError:
            listed = []
        lines.append(
            "containers: "
            + (", ".join(f"{c['Name'].lstrip('/')}={self._health(c)}" for c in listed) or "none")
        )
        for container in listed:
            if self._service(container) == "replica" and self._health(container) not in _STOPPED:
                try:
                    _, output = engine.exec_in(
                        container["Id"],
                        ["/bin/sh", "/etc/offload/mysql/healthcheck.sh", "replica", "-v"],
                    )
                except OffloadError as exc:
                    output = str(exc)
                wanted = ("Running", "Error", "Gtid", "Master_Host", "Source_Host")
                picked = [
                    ln.strip()
                    for ln in output.splitlines()
                    if any(w in ln for w in wanted) and ln.strip()
                ]
                lines.append("replica status: " + ("; ".join(picked) or output.strip()))
        try:
            logs = engine.container_logs(listed, tail=25)
            lines.append("logs (last 25 lines per container):")
            lines.append(logs)
        except OffloadError as exc:
            lines.append(f"logs unavailable: {exc}")
        return "\n".join(lines)

    # --- the compute containers, logs, down ------------------------------------

    def _require_up(self) -> ComposeState:
        state = self._load_state()
        if state is None or not state.initialised:
            raise TestbedError(
                f"the compose testbed in {self.dir} is not up", hint="run `make up` first"
            )
        return state

    def start_compute(self) -> TestbedInfo:
        """Start the compute container(s), or restart them (init_host sees new data)."""
        state = self._require_up()
        running = [
            c
            for c in self._inspect(state)
            if self._service(c) == "compute" and self._health(c) not in _STOPPED
        ]
        state = dataclasses.replace(state, compute=True)
        self._save_state(state)
        if running:
            self._compose(state, "restart", "compute", timeout=120)
        else:
            self._compose(
                state,
                "up",
                "-d",
                "--no-recreate",
                *self._scale_args(state),
                "compute",
                timeout=self.start_timeout,
            )
        return self._settle(state, Deadline(self.start_timeout))

    def stop_compute(self) -> bool:
        """Stop the compute container(s); False when the testbed is not up."""
        state = self._load_state()
        if state is None or not state.initialised:
            return False
        self._compose(state, "stop", "compute", timeout=120)
        self._save_state(dataclasses.replace(state, compute=False))
        return True

    def logs(self, *, tail: int = 30, service: str | None = None) -> str:
        """The last ``tail`` lines of each container (of ``service``), ``name | line``."""
        state = self._load_state()
        if state is None:
            return ""
        return engine.container_logs(self._containers(state, service), tail=tail)

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        """``docker inspect`` of this testbed's containers (of one compose service)."""
        state = self._load_state()
        return [] if state is None else self._containers(state, service)

    def _containers(self, state: ComposeState, service: str | None) -> list[dict[str, Any]]:
        found = self._inspect(state)
        return [c for c in found if service is None or self._service(c) == service]

    def stop(self, service: str, *, timeout: int = 30) -> None:
        """Stop every container of a compose service (``docker stop``: SIGTERM, then SIGKILL)."""
        state = self._require_up()
        for container in self._containers(state, service):
            engine.stop_container(container["Id"], timeout=timeout)

    def start(self, service: str) -> None:
        """Start the stopped containers of a compose service again (same containers); a
        DB server's in its recorded role, once it answers (:meth:`_start_server`)."""
        state = self._require_up()
        if service in state.server_names():
            self._start_server(state, service)
            return
        for container in self._containers(state, service):
            engine.start_container(container["Id"])

    # --- the replica's link (offload.link) ----------------------------------------

    def links(self) -> PublishedLinks:
        """The replica's link: the ``link`` service's control API on 127.0.0.1."""
        return PublishedLinks({REPLICA_NAME: self._require_up().link_port})

    def attach_link(self, name: str) -> None:
        """The compose replica replicates through its link from its bootstrap on: only
        the name is checked (and that the stack is up), nothing to start or re-point."""
        if name != REPLICA_NAME:
            raise TestbedError(
                f"there is no replica {name!r}", hint=f"the compose testbed has {REPLICA_NAME}"
            )
        self._require_up()

    def detach_link(self, name: str) -> None:
        raise TestbedError(
            f"{name} of a compose testbed always replicates through its link service",
            hint=f"`offload link clear {name}` takes every toxic off (the link then relays "
            "at once); use a native testbed to compare with a direct link",
        )

    # --- role changes (testbed/roles.py's RoleTopology) -------------------------

    def state(self) -> ComposeState:
        """The state of this stack, up (one line when it is not)."""
        return self._require_up()

    def movable(self) -> ComposeState:
        state = self._require_up()
        if not state.endpoint_ports:
            raise TestbedError(
                f"the compose testbed in {self.dir} was made without endpoints: its clients "
                "hold the servers' own ports, which a role change cannot move",
                hint="make it again: `make down && make up`",
            )
        return state

    def _server(self, state: ComposeState, name: str) -> dict[str, Any]:
        if name not in state.server_names():
            raise TestbedError(
                f"there is no server {name!r}", hint=f"one of: {', '.join(state.server_names())}"
            )
        found = self._containers(state, name)
        if not found:
            raise TestbedError(
                f"the {name} container is gone", hint="`make down && make up` makes the stack again"
            )
        return found[0]

    def running(self, name: str) -> bool:
        return self._health(self._server(self._require_up(), name)) not in _STOPPED

    @contextlib.contextmanager
    def connect(self, name: str) -> Iterator[Connection]:
        """An autocommit admin connection to server ``name`` on its own published port (a
        restarted container may have another one: asked of Docker each time)."""
        state = self._require_up()
        port = self._host_port(self._server(state, name), DB_PORT)
        url = loopback_url(
            "offload_admin", self._credentials().admin, port, None, tls=self._tls_files(state)
        )
        admin = unpooled_engine(url, name=name, connect_timeout=2)
        try:
            with admin.connect() as conn:
                yield conn.execution_options(isolation_level="AUTOCOMMIT")
        finally:
            admin.dispose()

    def kill(self, name: str) -> None:
        """SIGKILL server ``name``'s container (``docker kill``), then wait until it stopped."""
        state = self._require_up()
        engine.kill_container(self._server(state, name)["Id"])
        if not wait_for(lambda: not self.running(name), Deadline(30), interval=0.05):
            raise TestbedError(f"the {name} container still runs 30s after SIGKILL")

    def _start_server(self, state: ComposeState, name: str) -> None:
        """Start server ``name``'s stopped container, in its recorded role: the entrypoint
        starts it as its compose service says (``primary`` writable), so anything but the
        acting primary is set read-only as soon as it answers."""
        engine.start_container(self._server(state, name)["Id"])
        deadline = Deadline(self.start_timeout)

        def answers() -> bool:
            try:
                with self.connect(name) as conn:
                    conn.execute(text("SELECT 1"))
            except OffloadError:
                return False
            return True

        if not wait_for(answers, deadline, interval=0.2):
            raise TestbedError(
                f"the {name} container did not answer within {deadline.seconds:.0f}s\n"
                f"{self.diagnostics(state)}"
            )
        with self.connect(name) as conn:
            replication.set_read_only(
                conn, replication.Flavor(state.flavor), on=name != state.primary
            )

    def record_roles(
        self,
        *,
        primary: str | None = None,
        departed: tuple[str, ...] | None = None,
        diverged: tuple[str, ...] | None = None,
    ) -> ComposeState:
        state = self._require_up()
        state = dataclasses.replace(
            state,
            primary=state.primary if primary is None else primary,
            departed=state.departed if departed is None else departed,
            diverged=state.diverged if diverged is None else diverged,
        )
        self._save_state(state)
        return state

    def _relay_to_primary(self, state: ComposeState) -> None:
        """The replica's link relays to the acting primary (its connections reset)."""
        self.links().control(
            REPLICA_NAME, "POST", "/upstream", {"host": state.primary, "port": DB_PORT}
        )

    def follow(self, name: str) -> None:
        """``name`` replicates from the acting primary through the link, by GTID (its
        flavor's bootstrap, replica-<flavor>.sql, as the replica's first start runs it)."""
        state = self._require_up()
        self._relay_to_primary(state)
        values = {
            **self._credentials().placeholders(),
            "PRIMARY_HOST": "link",
            "PRIMARY_PORT": str(DB_PORT),
            # over TLS as the replica's first start: the primary verified as `link`
            **replica_tls_placeholders(self._tls_files(state), CONTAINER_TLS_DIR),
        }
        template = find_mysql_dir() / "bootstrap" / f"replica-{state.flavor}.sql"
        with self.connect(name) as conn:
            cursor = conn.connection.cursor()
            for statement in split_sql(render_sql(template, values)):
                cursor.execute(statement)  # no parameters: '%' is literal

    def repoint(self, name: str) -> None:
        """A replica replicates through the link: the link moves, not its source."""
        self._relay_to_primary(self._require_up())

    def await_replicas(self) -> None:
        state = self._require_up()
        flavor = replication.Flavor(state.flavor)
        with self.connect(state.primary) as conn:
            position = replication.gtid_position(conn, flavor)
        deadline = Deadline(self.start_timeout)
        for name in state.replicas():
            with self.connect(name) as conn:
                last: list[replication.ReplicaStatus | None] = [None]

                def threads_run(c: Connection = conn, box: list[Any] = last) -> bool:
                    box[0] = replication.replica_status(c, flavor)
                    return box[0] is not None and box[0].threads_running

                if not wait_for(threads_run, deadline, interval=0.05):
                    status = last[0].describe() if last[0] else "not configured as a replica"
                    raise TestbedError(f"replication on {name} does not run ({status})")
                replication.wait_for_gtid(
                    conn, position, max(deadline.remaining(), 1.0), flavor, replica=name
                )

    def _endpoints(self, state: ComposeState) -> PublishedLinks:
        return PublishedLinks(dict(state.endpoint_ports))

    def endpoint_targets(self) -> dict[str, str]:
        state = self._require_up()
        endpoints = self._endpoints(state)
        return {
            name: str(endpoints.control(name, "GET", "/link")["upstream"]).rpartition(":")[0]
            for name in endpoints.names()
        }

    def move_endpoint(self, endpoint: str, server: str | None) -> None:
        endpoints = self._endpoints(self._require_up())
        if server is None:
            endpoints.control(endpoint, "POST", "/cut", {"seconds": NO_REPLICA_CUT})
        else:
            endpoints.control(endpoint, "POST", "/upstream", {"host": server, "port": DB_PORT})

    def server_log(self, name: str) -> str:
        return f"`{self.command_line()} logs {name}`"

    def down(self) -> None:
        """Remove the stack's containers, network and volumes (credentials are kept; the
        roles start afresh)."""
        state = self._load_state()
        if state is None:
            return
        if not self.env_path.exists():  # compose needs its variables even to take down
            self._write_env(state, self._credentials())
        self._compose(
            state, "down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=300
        )
        # the volumes went with it: the next stack starts with its services' own roles
        self._save_state(
            dataclasses.replace(
                state, initialised=False, compute=False, primary="primary", departed=(), diverged=()
            )
        )

    def __enter__(self) -> TestbedInfo:
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()
