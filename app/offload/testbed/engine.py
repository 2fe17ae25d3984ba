"""The Docker engine, through the Docker SDK for Python (``offload[compose]``).

Everything offload asks the engine goes through this module: containers of a
compose project (inspect, health, logs, exec, stop, start) and local images
(labels, ids, import of a root file system, build, prune).  ``docker compose`` /
``docker-compose`` stays the compose CLI (:mod:`offload.testbed.compose`), as
pytest-docker drives it.

The SDK is imported when a client is first asked for, so the library and the
native testbed need neither it nor an engine; without it, the compose testbed
stops with one line naming the extra.  The SDK's errors become ``TestbedError``
here, once.  SDK 7.x negotiates the API version with the engine (Debian 12's
dockerd 20.10 speaks API 1.41).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from offload.errors import TestbedError
from offload.extras import require

if TYPE_CHECKING:
    from docker import DockerClient

__all__ = [
    "build_image",
    "client",
    "container_logs",
    "exec_in",
    "image_id",
    "image_label",
    "import_image",
    "project_containers",
    "prune_images",
    "start_container",
    "stop_container",
]

#: seconds one engine call may take: the default, and image work (import, build)
DEFAULT_TIMEOUT = 60
IMAGE_TIMEOUT = 1800
#: the label docker compose puts on every container of a project
PROJECT_LABEL = "com.docker.compose.project"

T = TypeVar("T")


def _sdk() -> Any:
    return require("docker", purpose="the compose testbed (the Docker SDK)")


@functools.cache
def client(*, timeout: int = DEFAULT_TIMEOUT) -> DockerClient:
    """A client of the environment's engine (``DOCKER_HOST``, else the local socket).

    TestbedError (one line, what to do) when no engine answers; MissingExtra when
    the SDK is not installed.
    """
    docker = _sdk()
    refused = _unix_socket_refuses(os.environ.get("DOCKER_HOST") or _DEFAULT_HOST)
    try:
        if refused:
            raise docker.errors.DockerException(refused)
        found: DockerClient = docker.from_env(timeout=timeout)
        found.ping()
    except docker.errors.DockerException as exc:
        raise TestbedError(
            f"no Docker engine answers ({_first_line(exc)})",
            hint="start one (`dockerd`, or Docker Desktop), or use the native "
            "backend (--backend native, --testbed=native)",
        ) from None
    return found


_DEFAULT_HOST = "unix:///var/run/docker.sock"


def _unix_socket_refuses(host: str) -> str | None:
    """Why a ``unix://`` engine socket takes no connection, or None (it does, or it is TCP).

    Knocked with a socket of our own: the SDK leaves its socket open when a
    Unix-socket connect fails (a ResourceWarning later).
    """
    if not host.startswith("unix://"):
        return None
    path = host.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as knock:
        try:
            knock.connect(path)
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
    return None


def _first_line(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)  # APIError: the engine's own words
    text = str(explanation or exc).strip()
    return (text.splitlines() or ["no answer"])[-1]


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """The SDK's errors (and a lost connection) as one TestbedError line."""
    docker = _sdk()
    try:
        yield
    except docker.errors.DockerException as exc:
        raise TestbedError(f"{what} failed: {_first_line(exc)}") from None


def _or_none(read: Callable[[], T]) -> T | None:
    """``read()``, or None when the engine has no such object (it went away)."""
    docker = _sdk()
    try:
        return read()
    except docker.errors.NotFound:
        return None


# --- containers -------------------------------------------------------------------


def project_containers(project: str) -> list[dict[str, Any]]:
    """``docker inspect`` of every container of a compose project, running or not."""
    with _translated(f"listing the containers of {project}"):
        found = client().containers.list(
            all=True, filters={"label": f"{PROJECT_LABEL}={project}"}, ignore_removed=True
        )
        return [dict(container.attrs) for container in found]


def exec_in(container: str, argv: Sequence[str]) -> tuple[int, str]:
    """(exit code, stdout and stderr) of ``argv`` run in a container."""
    with _translated(f"exec in {container[:12]}"):
        result = client().containers.get(container).exec_run(list(argv))
    output = result.output if isinstance(result.output, bytes) else b""
    return int(result.exit_code or 0), output.decode(errors="replace")


def container_logs(containers: Iterable[Mapping[str, Any]], *, tail: int) -> str:
    """The last ``tail`` lines of each container, as compose prints them: ``name | line``."""
    lines: list[str] = []
    for attrs in containers:
        name = str(attrs.get("Name", attrs["Id"][:12])).lstrip("/")
        with _translated(f"the logs of {name}"):
            found = _or_none(functools.partial(client().containers.get, attrs["Id"]))
            if found is None:  # removed meanwhile
                continue
            text = found.logs(tail=tail).decode(errors="replace")
        lines += [f"{name} | {line}" for line in text.rstrip().splitlines()]
    return "\n".join(lines)


def stop_container(container: str, *, timeout: int = 30) -> None:
    """Stop a container (SIGTERM, SIGKILL after ``timeout`` seconds), as ``docker stop``."""
    with _translated(f"stopping {container[:12]}"):
        client(timeout=DEFAULT_TIMEOUT + timeout).containers.get(container).stop(timeout=timeout)


def kill_container(container: str) -> None:
    """SIGKILL a container's main process (``docker kill``): no clean shutdown."""
    with _translated(f"killing {container[:12]}"):
        client().containers.get(container).kill()


def start_container(container: str) -> None:
    with _translated(f"starting {container[:12]}"):
        client().containers.get(container).start()


# --- images -----------------------------------------------------------------------


def image_label(image: str, label: str) -> str | None:
    """A label of a local image ('' when the image lacks it); None when there is no image."""
    with _translated(f"inspecting {image}"):
        found = _or_none(lambda: client().images.get(image))
    if found is None:
        return None
    return str((found.labels or {}).get(label, ""))


def image_id(image: str) -> str:
    with _translated(f"inspecting {image}"):
        return str(client().images.get(image).id)


def import_image(chunks: Iterable[bytes], name: str, *, changes: Sequence[str]) -> None:
    """``docker import - NAME`` of a tar stream, with Dockerfile ``changes`` (LABEL, ENV, CMD)."""
    repository, _, tag = name.rpartition(":") if ":" in name else (name, "", "latest")
    with _translated(f"docker import {name}"):
        answer = client(timeout=IMAGE_TIMEOUT).api.import_image_from_stream(
            chunks, repository=repository, tag=tag, changes=list(changes)
        )
    if '"error' in str(answer):
        raise TestbedError(f"docker import {name} failed: {str(answer).strip()[-300:]}")


def build_image(
    context: Path,
    *,
    dockerfile: str,
    tag: str,
    buildargs: Mapping[str, str],
    labels: Mapping[str, str],
) -> None:
    """``docker build`` of ``context`` (its .dockerignore applies); the log's end on failure."""
    docker = _sdk()
    try:
        client(timeout=IMAGE_TIMEOUT).images.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=tag,
            buildargs=dict(buildargs),
            labels=dict(labels),
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        log = "".join(str(step.get("stream", "")) for step in exc.build_log).rstrip()
        tail = "\n".join(log.splitlines()[-15:])
        raise TestbedError(f"docker build {tag} failed: {exc.msg}\n{tail}") from None
    except docker.errors.DockerException as exc:
        raise TestbedError(f"docker build {tag} failed: {_first_line(exc)}") from None


def prune_images(label: str) -> None:
    """Drop dangling images carrying ``label`` (what earlier builds left untagged)."""
    with _translated(f"pruning images labelled {label}"):
        client(timeout=IMAGE_TIMEOUT).images.prune(filters={"label": label, "dangling": True})
