"""LAN discovery: advertise this node over mDNS/DNS-SD and find peers of its cluster.

- :mod:`~quorum.discovery.txt`: the advert and its TXT encoding (pure);
- :mod:`~quorum.discovery.presence`: which peers are online (pure, clock injected);
- :mod:`~quorum.discovery.interfaces`: which addresses discovery uses;
- :mod:`~quorum.discovery.events`: what :class:`Discovery` reports (frozen values);
- :mod:`~quorum.discovery.mdns`: the python-zeroconf adapter, :class:`Discovery`.
"""

from quorum.discovery.errors import BadAdvert, DiscoveryError, NoInterface
from quorum.discovery.events import DiscoveryEvent, PeerFound, PeerRemoved, PeerUpdated
from quorum.discovery.mdns import Discovery
from quorum.discovery.txt import (
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    Advert,
    decode_txt,
    encode_txt,
    models_digest,
)
from quorum.secure.cluster import cluster_discriminator

__all__ = [
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Advert",
    "BadAdvert",
    "Discovery",
    "DiscoveryError",
    "DiscoveryEvent",
    "NoInterface",
    "PeerFound",
    "PeerRemoved",
    "PeerUpdated",
    "cluster_discriminator",
    "decode_txt",
    "encode_txt",
    "models_digest",
]
