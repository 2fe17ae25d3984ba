"""The nova-compute analogue: periodic tasks, a simulated hypervisor, notifications."""

__all__: list[str] = []
