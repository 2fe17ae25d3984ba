"""A native testbed of one's own: free ports, bound to this process, gone afterwards.

What the pytest fixtures, ``offload lag`` and ``offload bench`` start when they
are not given a testbed, and what tests that kill servers start beside the
session's::

    with OwnTestbed(replicas=2) as own:
        own.info        # TestbedInfo: URLs of every account
        own.topology    # NativeTopology: kill(), start(), up() of single servers

The servers run in a temporary directory (``prefix``), removed afterwards, or in
``directory``, kept (its logs, for a look after a failure).  They are bound to
this process (``PR_SET_PDEATHSIG``): a killed run takes them with it.  A failed
start stops what was started and removes the temporary directory before
``__enter__`` raises.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from offload.errors import TestbedError
from offload.testbed.native import NativeTopology
from offload.testbed.servers import FlavorSpec
from offload.testbed.topology import TestbedInfo

__all__ = ["OwnTestbed"]


class OwnTestbed:
    """A primary and ``replicas`` GTID replicas on free ports, for the ``with`` block."""

    def __init__(
        self,
        *,
        replicas: int = 1,
        flavor: FlavorSpec | None = None,
        directory: Path | None = None,
        prefix: str = "offload-testbed-",
        start_timeout: float = 60.0,
        endpoints: bool = False,
    ) -> None:
        self.replicas = replicas
        #: clients through endpoints a role change moves (testbed/roles.py)
        self.endpoints = endpoints
        self.flavor = flavor
        self.directory = directory
        self.prefix = prefix
        self.start_timeout = start_timeout
        self._temporary: Path | None = None
        self._topology: NativeTopology | None = None
        self._info: TestbedInfo | None = None

    @property
    def topology(self) -> NativeTopology:
        """The running servers (kill, start, up), between ``__enter__`` and ``__exit__``."""
        if self._topology is None:
            raise TestbedError("this testbed is not up", hint="use it inside `with OwnTestbed()`")
        return self._topology

    @property
    def info(self) -> TestbedInfo:
        """The URLs of every account, between ``__enter__`` and ``__exit__``."""
        if self._info is None:
            raise TestbedError("this testbed is not up", hint="use it inside `with OwnTestbed()`")
        return self._info

    def __enter__(self) -> OwnTestbed:
        where = self.directory
        if where is None:
            where = self._temporary = Path(tempfile.mkdtemp(prefix=self.prefix))
        try:
            topology = NativeTopology(
                where,
                port=0,
                replicas=self.replicas,
                flavor=self.flavor,
                bind_to_parent=True,
                start_timeout=self.start_timeout,
                endpoints=self.endpoints,
            )
            self._topology = topology
            self._info = topology.up()  # stops what it started before it raises
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the servers; remove the temporary directory."""
        try:
            if self._topology is not None:
                self._topology.down()
        finally:
            self._topology = None
            self._info = None
            if self._temporary is not None:
                shutil.rmtree(self._temporary, ignore_errors=True)
                self._temporary = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
