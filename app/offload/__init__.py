"""offload: nova-compute's periodic-task reads on a MySQL/MariaDB replica, writes on the primary."""

from offload.errors import OffloadError

__all__ = ["OffloadError", "__version__"]

__version__ = "0.1.0"
