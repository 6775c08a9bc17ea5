"""The other nodes the relay announces, turned into fleet events (``route=relay`` holders)."""

from __future__ import annotations

from collections.abc import Callable

from quorum.config.models import EngineKind, ServiceType
from quorum.fleet import FleetEvent, Holder, PeerGone, PeerHoldersChanged, Route
from quorum.protocol import ModelInfo, Presence


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
        holders = tuple(_holder(presence, m) for m in presence.models if _known_type(m.type))
        self._on_fleet(PeerHoldersChanged(node_id, holders, Route.RELAY))

    def forget_all(self) -> None:
        for node_id in list(self._peers):
            self._on_fleet(PeerGone(node_id, Route.RELAY))
        self._peers.clear()


def _known_type(value: str) -> bool:
    return value in ServiceType._value2member_map_


def _holder(presence: Presence, model: ModelInfo) -> Holder:
    return Holder(
        model=model.id,
        type=ServiceType(model.type),
        node_id=presence.node_id,
        node_name=presence.name or presence.node_id[:8],
        route=Route.RELAY,
        service=model.service,
        engine=EngineKind.OPENAI,
        url=f"relay://{presence.node_id}",
        upstream_model=model.id,
        features=frozenset(model.features),
    )
