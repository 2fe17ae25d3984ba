"""Optional dependencies: imported where they are used, named by their extra when missing.

The library needs only its core dependencies.  ``offload[lab]`` (matplotlib) plots
experiments; ``offload[compose]`` (the Docker SDK) drives the compose testbed.  A
command that needs one the environment lacks stops with one line naming the extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from offload.errors import MissingExtra

__all__ = ["EXTRAS", "require"]

#: module → (the extra that installs it, its distribution on PyPI)
EXTRAS = {
    "matplotlib": ("lab", "matplotlib"),
    "docker": ("compose", "docker"),
}


def require(module: str, *, purpose: str) -> ModuleType:
    """``module`` imported, or MissingExtra: "<purpose> needs <dist>; pip install 'offload[X]'"."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra, distribution = EXTRAS[module]
        raise MissingExtra(
            f"{purpose} needs {distribution}, which is not installed",
            hint=f"pip install 'offload[{extra}]' (the {extra} extra)",
        ) from None
