"""What the cluster holds, as one immutable snapshot, and the pure ``apply`` that updates it.

Rules:
- A snapshot is never mutated; every change is ``apply(snapshot, event) -> snapshot``.
- A node's holders on one route are replaced whole by the event that reports
  them, so a model that went away from an engine simply is not in the next
  list. A peer seen both on the LAN and through the relay has holders on both
  routes; losing one route leaves the other.
- Holders of this node have route ``local``; peers' holders carry the route
  by which that peer is reached (``lan`` or ``relay``).
- ``online`` is a property of the holder: an engine that is configured but
  down keeps its models listed with ``online=False`` so clients get 503
  ("known, unreachable") instead of 404 ("unknown").
"""

from quorum.fleet.snapshot import (
    FleetEvent,
    FleetSnapshot,
    Holder,
    Load,
    LocalHoldersChanged,
    PeerGone,
    PeerHoldersChanged,
    Route,
    apply,
)

__all__ = [
    "FleetEvent",
    "FleetSnapshot",
    "Holder",
    "Load",
    "LocalHoldersChanged",
    "PeerGone",
    "PeerHoldersChanged",
    "Route",
    "apply",
]
