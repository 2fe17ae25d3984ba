"""``offload fleet``: many simulated compute hosts against one testbed (docs/fleet.md)."""

__all__: list[str] = []
