"""Fixtures shared by the integration tests."""

from tests.chain_rig import rig

__all__ = ["rig"]
