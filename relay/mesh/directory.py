"""Which relay holds which node's tunnel, as this relay hears the others. Pure: the caller
passes each announcement and the time.

Rules (see the package docstring): the latest relay to announce a node online holds
it; an offline counts only from that holder; a relay that says it is gone, or is
silent for ``RELAY_EXPIRES_S``, holds nothing. Our own announcements are not ours
to learn from (a node here is on the hub). Each call returns what the nodes of this
relay should hear: ``(cluster id, Presence)`` for each node that came, changed or left.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from quorum.protocol import Presence
from relay.mesh.wire import (
    Announcement,
    NodeAnnounced,
    NodeDropped,
    RelayAlive,
    RelayDraining,
    RelayGone,
    RelayHello,
)

ALIVE_EVERY_S = 2.0
RELAY_EXPIRES_S = 6.0

Change = tuple[str, Presence]


@dataclass(frozen=True, slots=True)
class Held:
    """A node another relay holds, as it last announced it."""

    relay: str
    cluster_id: str
    presence: Presence
    seen: float
    fingerprint: str | None = None
    """The node's key, as its relay announced it (to be checked against the store)."""
    capabilities: tuple[str, ...] = ()

    def presence_at(self, now: float) -> Presence:
        """Its presence as a node should hear it at ``now`` (aged since the heartbeat)."""
        return replace(self.presence, age_ms=max(0, min(int((now - self.seen) * 1000), 2**31)))


class Directory:
    def __init__(self, me: str, *, expires_after: float = RELAY_EXPIRES_S) -> None:
        self.me = me
        self.expires_after = expires_after
        self._held: dict[tuple[str, str], Held] = {}
        self._clusters: dict[str, dict[str, Held]] = {}  # the same, by cluster
        self._heard: dict[str, float] = {}  # relay -> when we last heard from it
        self.draining: set[str] = set()  # relays whose streams run on while their nodes move

    def holder(self, cluster_id: str, node_id: str) -> Held | None:
        return self._held.get((cluster_id, node_id))

    def held(self, cluster_id: str) -> list[Held]:
        return [h for _, h in sorted(self._clusters.get(cluster_id, {}).items())]

    def heard(self, relay: str) -> float | None:
        """When ``relay`` was last heard from (None: not lately)."""
        return self._heard.get(relay)

    def relays(self) -> list[str]:
        """The other relays heard from lately."""
        return sorted(self._heard)

    def __len__(self) -> int:
        return len(self._held)

    def apply(self, message: Announcement, now: float) -> list[Change]:
        if message.relay == self.me:
            return []
        self._heard[message.relay] = now
        match message:
            case NodeAnnounced(relay, cluster, presence, seen, _, fingerprint, capabilities):
                key = (cluster, presence.node_id)
                if presence.online:
                    self._put(Held(relay, cluster, presence, seen, fingerprint, capabilities))
                    return [(cluster, presence)]
                current = self._held.get(key)
                if current is None or current.relay != relay:
                    return []  # it moved already: its new relay holds it
                self._pop(key)
                return [(cluster, presence)]
            case RelayGone(relay):
                del self._heard[relay]
                self.draining.discard(relay)
                return self._forget(relay)
            case RelayDraining(relay):
                self.draining.add(relay)
                return []
            case RelayAlive() | RelayHello() | NodeDropped():
                return []

    def expire(self, now: float) -> list[Change]:
        """Forget the relays silent for ``expires_after``, and their nodes."""
        changes: list[Change] = []
        for relay, heard in list(self._heard.items()):
            if now - heard >= self.expires_after:
                del self._heard[relay]
                self.draining.discard(relay)
                changes += self._forget(relay)
        return changes

    def _put(self, held: Held) -> None:
        self._held[(held.cluster_id, held.presence.node_id)] = held
        self._clusters.setdefault(held.cluster_id, {})[held.presence.node_id] = held

    def _pop(self, key: tuple[str, str]) -> Held:
        held = self._held.pop(key)
        cluster = self._clusters[key[0]]
        del cluster[key[1]]
        if not cluster:
            del self._clusters[key[0]]
        return held

    def _forget(self, relay: str) -> list[Change]:
        gone = [key for key, held in self._held.items() if held.relay == relay]
        changes = []
        for key in gone:
            held = self._pop(key)
            changes.append((held.cluster_id, replace(held.presence, models=(), online=False)))
        return changes
