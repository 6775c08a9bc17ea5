"""``choose(snapshot, request)``: the ordered candidates (rules in the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from quorum.config.models import ServiceType
from quorum.errors import ModelNotFound, NoReachableHolder
from quorum.fleet import FleetSnapshot, Holder, Route

_ROUTE_COST = {Route.LOCAL: 0, Route.LAN: 1, Route.RELAY: 2}
_LOADED_RANK = {True: 0, None: 1, False: 2}


@dataclass(frozen=True, slots=True)
class RouteRequest:
    model: str
    types: tuple[ServiceType, ...]
    label: str = "request"
    forwarded: bool = False


def _key(holder: Holder) -> tuple[int, int, str, str, str, str]:
    return (
        _ROUTE_COST[holder.route],
        _LOADED_RANK[holder.loaded],
        holder.node_name,
        holder.node_id,
        holder.service,
        holder.type.value,
    )


def choose(snapshot: FleetSnapshot, request: RouteRequest) -> tuple[Holder, ...]:
    """Holders that may serve ``request``, best first; raises when there are none."""
    named = snapshot.by_model.get(request.model, ())
    if request.forwarded:
        named = tuple(h for h in named if h.route is Route.LOCAL)
    if not named:
        raise ModelNotFound(
            f"The model '{request.model}' does not exist on any node of this cluster.",
            param="model",
        )
    typed = [h for h in named if h.type in request.types]
    if not typed:
        kinds = ", ".join(sorted({h.type.value for h in named}))
        wanted = " or ".join(t.value for t in request.types)
        raise ModelNotFound(
            f"The model '{request.model}' is a {kinds} model; a {request.label} "
            f"needs a {wanted} model.",
            param="model",
        )
    online = [h for h in typed if h.online]
    if not online:
        services = ", ".join(sorted({f"{h.service}@{h.node_name}" for h in typed}))
        raise NoReachableHolder(
            f"The model '{request.model}' is held by {services}, but none of them "
            "can be reached right now."
        )
    online.sort(key=_key)
    return tuple(online)
