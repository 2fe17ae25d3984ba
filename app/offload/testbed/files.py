"""A testbed directory's private files: state, credentials, config (all mode 0600)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from offload.errors import TestbedError
from offload.testbed.topology import Credentials, write_private

__all__ = ["load_credentials", "read_state", "write_private"]


def read_state(directory: Path) -> dict[str, Any]:
    """``state.json`` of a testbed directory ({} when there is none)."""
    path = directory / "state.json"
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise TestbedError(
            f"{path} is unreadable ({exc})",
            hint=f"remove {directory} (`make clean`) and run up again",
        ) from None
    return state


def load_credentials(directory: Path) -> Credentials:
    """The testbed's passwords: generated on first use, then kept in credentials.json."""
    path = directory / "credentials.json"
    if path.exists():
        return Credentials(**json.loads(path.read_text(encoding="utf-8")))
    creds = Credentials.generate()
    write_private(path, json.dumps(asdict(creds), indent=2))
    return creds
