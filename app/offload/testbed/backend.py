"""Which backend a testbed directory holds, and which one ``testbed up`` takes.

``auto`` keeps the backend of the testbed already in the directory; else native when
something only the native backend does is asked for (several replicas, a server binary, a
flavor by name); else compose where Docker Compose and an engine answer; else native.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from offload.errors import OffloadError
from offload.testbed.servers import FLAVOR_VARIABLE

__all__ = ["BACKENDS", "choose_backend", "compose_available", "recorded_backend"]

#: what ``testbed up --backend`` accepts besides ``auto``
BACKENDS: Final = ("native", "compose")
log = logging.getLogger("offload.testbed")


def recorded_backend(directory: Path) -> str | None:
    """The backend of the testbed in ``directory`` (its state.json), None when there is none."""
    from offload.testbed.files import read_state  # noqa: PLC0415 - loads the topology

    state = read_state(directory)
    return None if state is None else state.backend


def compose_available() -> bool:
    """Docker Compose is installed and a Docker engine answers.

    The engine's client is kept for the process once it answered, so the compose testbed
    that ``testbed up`` then starts does not ask the engine a second time.
    """
    from offload.testbed import engine  # noqa: PLC0415
    from offload.testbed.compose import compose_command  # noqa: PLC0415

    try:
        compose_command()
        engine.client()
    except OffloadError:  # no compose, no engine, or no Docker SDK (offload[compose])
        return False
    return True


def choose_backend(
    asked: str,
    directory: Path,
    *,
    replicas: int = 1,
    mysqld: str | None = None,
    flavor: str | None = None,
    schema: str | None = None,
    environ: Mapping[str, str] | None = None,
    compose_answers: Callable[[], bool] = compose_available,
) -> str:
    """native | compose: ``asked``; else the existing testbed's; else as the module says.

    ``schema="nova"`` (Nova's migrations, run from this machine) means native too.
    """
    if asked != "auto":
        return asked
    recorded = recorded_backend(directory)
    if recorded is not None:
        return recorded
    env = os.environ if environ is None else environ
    if replicas != 1 or mysqld or env.get("OFFLOAD_MYSQLD") or flavor or env.get(FLAVOR_VARIABLE):
        return "native"
    if schema == "nova":
        return "native"
    if compose_answers():
        log.info(
            "a Docker engine answers: using the compose backend (--backend native "
            "to run the servers as local processes)"
        )
        return "compose"
    return "native"
