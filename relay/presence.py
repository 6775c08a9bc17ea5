"""Who is online, and which connected node should serve a public request. Pure functions.

Rules (DESIGN.md "Presence"): a node heartbeats its model list every 30 s; it
is online while its last heartbeat is under ``ONLINE_FOR_S`` (60 s) old, and
is never routed to after. Among online holders of a model (with a service
type the endpoint accepts) the least busy one goes first, ties broken by node
id so the same inputs always give the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from quorum.protocol import ModelInfo

ONLINE_FOR_S = 60.0


def is_online(last_seen: float | None, now: float, online_for: float = ONLINE_FOR_S) -> bool:
    """Online while the last heartbeat is under ``online_for`` seconds old.

    A heartbeat stamped in the future (a clock stepped back) counts as fresh.
    """
    return last_seen is not None and now - last_seen < online_for


@dataclass(frozen=True, slots=True)
class Candidate:
    """A connected node as routing sees it."""

    node_id: str
    name: str
    models: tuple[ModelInfo, ...]
    last_seen: float | None
    load: int = 0
    draining: bool = False

    def holds(self, model: str, types: Sequence[str]) -> bool:
        return any(m.id == model and (not types or m.type in types) for m in self.models)


def holders(
    candidates: Iterable[Candidate], model: str, types: Sequence[str], now: float
) -> list[Candidate]:
    """Online, non-draining holders of ``model`` for these service types, best first."""
    found = [
        c
        for c in candidates
        if not c.draining and is_online(c.last_seen, now) and c.holds(model, types)
    ]
    return sorted(found, key=lambda c: (c.load, c.node_id))


def online_models(
    candidates: Iterable[Candidate], now: float, allowed: Sequence[str] | None
) -> dict[str, list[Candidate]]:
    """Model id -> online holders, limited to ``allowed`` (None: every model)."""
    out: dict[str, list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: c.node_id):
        if c.draining or not is_online(c.last_seen, now):
            continue
        for m in c.models:
            if allowed is None or m.id in allowed:
                holders_of = out.setdefault(m.id, [])
                if c not in holders_of:
                    holders_of.append(c)
    return dict(sorted(out.items()))
