"""Errors of the discovery layer.

::

    QuorumError
    └── DiscoveryError          discovery could not do what was asked
        ├── BadAdvert           a TXT record (ours or a peer's) is missing or has a bad field
        └── NoInterface         no network interface fits the configuration

These live here until ``quorum.errors`` draws ``DiscoveryError`` in its tree;
callers should catch ``DiscoveryError``, which will keep its name.
"""

from __future__ import annotations

from quorum.errors import QuorumError


class DiscoveryError(QuorumError):
    """Discovery (mDNS advertising or browsing) failed."""


class BadAdvert(DiscoveryError):
    """An advert is malformed; ``field`` names the TXT key at fault ('' if the whole record)."""

    def __init__(self, message: str, *, field: str = "") -> None:
        self.field = field
        at = f" (key {field!r})" if field else ""
        super().__init__(f"bad advert{at}: {message}")


class NoInterface(DiscoveryError):
    """No usable network interface: none configured matches, or the machine has none."""
