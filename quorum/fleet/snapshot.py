"""Frozen fleet values and the pure ``apply`` (rules in the package docstring)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

from quorum.config.models import EngineKind, ServiceType


class Route(enum.StrEnum):
    """How a holder is reached from this node, cheapest first."""

    LOCAL = "local"
    LAN = "lan"
    RELAY = "relay"


@dataclass(frozen=True, slots=True)
class Load:
    """A service's load as its node reported it (presence, or an answer's header).

    ``service_s`` is one request's run time as that node learned it (0: unknown).
    """

    in_flight: int = 0
    queued: int = 0
    service_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Holder:
    """One model on one service of one node, as seen from this node.

    ``url`` is where this node sends the request: the engine's root for a local
    holder, the peer node's root for a LAN peer. ``upstream_model`` is the name
    the engine itself expects in the body (llama.cpp, for one, names models by
    file path); it differs from ``model`` only for such engines.
    """

    model: str
    type: ServiceType
    node_id: str
    node_name: str
    route: Route
    service: str
    engine: EngineKind
    url: str
    upstream_model: str
    features: frozenset[str] = frozenset()
    loaded: bool | None = None
    online: bool = True
    api_key: str | None = field(default=None, repr=False)
    header_timeout_s: float = 600.0
    down_reason: str | None = None  # why an offline local holder is down, in plain words
    limit: int | None = None  # requests its service takes at once, as published or announced
    load: Load | None = None  # the service's load, as the peer (or engine) last reported it


@dataclass(frozen=True)
class FleetSnapshot:
    node_id: str
    node_name: str
    holders: tuple[Holder, ...] = ()

    @cached_property
    def by_model(self) -> Mapping[str, tuple[Holder, ...]]:
        """Holders grouped by model name, in snapshot order."""
        grouped: dict[str, list[Holder]] = {}
        for holder in self.holders:
            grouped.setdefault(holder.model, []).append(holder)
        return MappingProxyType({name: tuple(hs) for name, hs in grouped.items()})

    def local(self) -> tuple[Holder, ...]:
        return tuple(h for h in self.holders if h.route is Route.LOCAL)


@dataclass(frozen=True, slots=True)
class LocalHoldersChanged:
    """This node's engines now hold exactly these (route ``local``)."""

    holders: tuple[Holder, ...]


@dataclass(frozen=True, slots=True)
class PeerHoldersChanged:
    """Peer ``node_id``, reached by ``route``, now holds exactly these."""

    node_id: str
    holders: tuple[Holder, ...]
    route: Route = Route.LAN


@dataclass(frozen=True, slots=True)
class PeerGone:
    """Peer ``node_id`` can no longer be reached by ``route`` (other routes stay)."""

    node_id: str
    route: Route = Route.LAN


FleetEvent = LocalHoldersChanged | PeerHoldersChanged | PeerGone


def apply(snapshot: FleetSnapshot, event: FleetEvent) -> FleetSnapshot:
    """The snapshot after ``event``; the input is left as it was."""
    match event:
        case LocalHoldersChanged(holders):
            kept = tuple(h for h in snapshot.holders if h.route is not Route.LOCAL)
            return FleetSnapshot(snapshot.node_id, snapshot.node_name, holders + kept)
        case PeerHoldersChanged(node_id, holders, route):
            kept = tuple(
                h for h in snapshot.holders if not (h.node_id == node_id and h.route is route)
            )
            return FleetSnapshot(snapshot.node_id, snapshot.node_name, kept + holders)
        case PeerGone(node_id, route):
            kept = tuple(
                h for h in snapshot.holders if not (h.node_id == node_id and h.route is route)
            )
            return FleetSnapshot(snapshot.node_id, snapshot.node_name, kept)
