"""What the hub knows of one node's tunnel (``Link``), and of other relays (``Elsewhere``).

Values and an interface only; ``relay.hub`` runs the links, ``relay.mesh`` is the
``Elsewhere`` of a relay joined to others. (Both names are re-exported by ``relay.hub``.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from quorum.link import Pump, TunnelStream
from quorum.protocol import Connection, Presence, RequestHead


class Elsewhere(Protocol):
    """Other relays, as the hub uses them (``relay.mesh.Mesh``)."""

    def announce(self, link: Link) -> None: ...
    def withdraw(self, link: Link) -> None: ...
    def dropped(self, cluster_id: str, node_id: str, why: str) -> None: ...
    def revoked(self, cluster_ids: tuple[str, ...], why: str, *, suspend: bool) -> None: ...
    def draining(self) -> None: ...
    def counts(self) -> tuple[int, int, int]:
        """(other relays heard lately, nodes they hold, announcements sent)."""
        ...

    def presences(self, cluster_id: str) -> list[Presence]: ...
    def links(self, cluster_id: str) -> list[Link]: ...
    def link(self, cluster_id: str, node_id: str) -> Link | None: ...
    def open(
        self, cluster_id: str, node_id: str, head: RequestHead, *, end_stream: bool
    ) -> TunnelStream | None: ...


@dataclass(eq=False)
class Link:
    """One node's tunnel: its pump and what the relay knows of the node."""

    cluster_id: str
    pump: Pump
    remote: str
    node_id: str | None = None
    name: str = ""
    presence: Presence | None = None
    last_seen: float | None = None
    """Wall-clock time of the last heartbeat (PRESENCE), by the hub's clock."""
    connected_at: float = field(default_factory=time.time)
    draining: bool = False
    proven: str | None = None
    """The node id its certificate names, when it joined with one (``quorum.secure.join``)."""
    via: str | None = None
    """The relay holding this node's tunnel, for a node of another relay (``pump`` is then
    the connection to that relay)."""
    fingerprint: str | None = None
    """Its identity key's fingerprint, when it joined with a certificate."""
    capabilities: tuple[str, ...] = ()
    """What its hello said it can do (``relay-hop``: the public ``/v1``'s hop in TLS)."""
    ca_id: str = ""
    """The cluster CA it joined with (its certificate's, or its token's): after a rotation's
    grace, a link of the previous CA is closed (``relay.revocation``)."""

    @property
    def conn(self) -> Connection:
        return self.pump.conn

    @property
    def label(self) -> str:
        return self.name or self.node_id or self.remote
