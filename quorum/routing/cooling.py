"""Which holders are cooling down, for status and ``/metrics`` (pure; rules in :mod:`.health`)."""

from __future__ import annotations

from dataclasses import dataclass

from quorum.fleet import Route
from quorum.routing.health import Circuit, Health, circuit


@dataclass(frozen=True, slots=True)
class Cooling:
    """A holder whose circuit is not closed, for status and ``/metrics``."""

    node_id: str
    service: str
    route: Route
    circuit: Circuit
    until: float  # when the cooldown ends (in the past once half-open or probing)
    consecutive_failures: int
    cooldown_s: float


def cooling(health: Health, now: float) -> tuple[Cooling, ...]:
    """Holders whose circuit is open, half-open or probing, in key order."""
    out = []
    for key, entry in sorted(health.holders.items()):
        if entry.cooldown_until is None:
            continue
        node_id, service, route = key
        out.append(
            Cooling(
                node_id,
                service,
                route,
                circuit(entry, now),
                entry.cooldown_until,
                entry.consecutive_failures,
                entry.cooldown_s,
            )
        )
    return tuple(out)
