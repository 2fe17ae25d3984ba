"""Testbeds: a primary and GTID replicas, natively or with Docker Compose."""

from offload.testbed.topology import Credentials, TestbedInfo, Topology, write_config

__all__ = ["Credentials", "TestbedInfo", "Topology", "write_config"]
