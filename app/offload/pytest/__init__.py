"""offload for pytest: fixtures over a real primary and its replicas.

Installing offload registers :mod:`offload.pytest.plugin` (entry point
``pytest11``): options, ini settings and the default ``offload_*`` fixtures.
:mod:`offload.pytest.factories` declares more (another testbed, a database on
it); the types below annotate the fixtures that are callables.
"""

from offload.pytest import factories
from offload.pytest.factories import ComputeFactory, DbFactory, WaitForReplication
from offload.pytest.options import RunOptions
from offload.testbed.own import OwnTestbed

__all__ = [
    "ComputeFactory",
    "DbFactory",
    "OwnTestbed",
    "RunOptions",
    "WaitForReplication",
    "factories",
]
