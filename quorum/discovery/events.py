"""What discovery reports: frozen values handed to ``Discovery``'s ``on_event`` callback."""

from __future__ import annotations

from dataclasses import dataclass

from quorum.discovery.txt import Advert


@dataclass(frozen=True, slots=True)
class PeerFound:
    """A peer of our cluster appeared; ``addresses`` are its IPv4 addresses."""

    advert: Advert
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PeerUpdated:
    """A known peer changed its advert or addresses; carries the new values."""

    advert: Advert
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PeerRemoved:
    """A known peer is gone (goodbye, expiry, or its advert became unusable)."""

    node_id: str
    instance: str


DiscoveryEvent = PeerFound | PeerUpdated | PeerRemoved
