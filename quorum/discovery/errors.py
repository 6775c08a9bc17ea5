"""Errors of the discovery layer; they are drawn in ``quorum.errors``, the one tree."""

from quorum.errors import BadAdvert, DiscoveryError, NoInterface

__all__ = ["BadAdvert", "DiscoveryError", "NoInterface"]
