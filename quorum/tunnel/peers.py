"""The other nodes the relay announces, turned into fleet events (``route=relay`` holders)."""

from __future__ import annotations

from collections.abc import Callable

from quorum.fleet import FleetEvent, PeerGone, PeerHoldersChanged, Route
from quorum.fleet.remote import peer_holders
from quorum.protocol import Presence


class RelayPeers:
    """Presence of the cluster's other nodes, as heard through the relay.

    A presence with ``online`` replaces the node's holders; one without (the
    relay's goodbye) removes them; ``forget_all`` removes every peer when the
    tunnel is lost. This node's own presence, echoed back, is ignored.
    """

    def __init__(self, own_id: str, on_fleet: Callable[[FleetEvent], None]) -> None:
        self._own_id = own_id
        self._on_fleet = on_fleet
        self._peers: dict[str, Presence] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def heard(self, presence: Presence) -> None:
        node_id = presence.node_id
        if node_id == self._own_id:
            return
        if not presence.online:
            if self._peers.pop(node_id, None) is not None:
                self._on_fleet(PeerGone(node_id, Route.RELAY))
            return
        self._peers[node_id] = presence
        holders = peer_holders(
            node_id, presence.name, Route.RELAY, f"relay://{node_id}", presence.models
        )
        self._on_fleet(PeerHoldersChanged(node_id, holders, Route.RELAY))

    def forget_all(self) -> None:
        for node_id in list(self._peers):
            self._on_fleet(PeerGone(node_id, Route.RELAY))
        self._peers.clear()
