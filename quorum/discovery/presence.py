"""Which peers are online: a pure state machine over events and a clock reading.

Everything that decides whether a peer is online lives here. Time is always
an argument (seconds from a monotonic clock); nothing here reads a clock,
sleeps or does I/O.

Rules
-----

1. A peer is *known* from the first event that names it until a goodbye.
2. A known peer is *online* while its last answer is under
   :data:`ONLINE_WINDOW_S` (60 s) old: ``now - last_answer < 60``. An answer
   is a heartbeat received from it or a successful fetch from it
   (:class:`Answered`). Being seen over mDNS is not an answer: a peer found
   but never reached is known and offline.
3. A heartbeat to a known peer is *due* when neither an answer from it nor a
   heartbeat to it (:class:`HeartbeatSent`) happened in the last
   :data:`HEARTBEAT_INTERVAL_S` (30 s), or when rule 4 asks for one. The
   caller sends it and applies :class:`HeartbeatSent`, then
   :class:`Answered` or :class:`Refused` (or nothing, on a time-out:
   silence expires by rule 2).
4. :class:`Seen` (found or changed over mDNS) makes a heartbeat due at once,
   however recent the last answer, until :class:`HeartbeatSent`: a new or
   changed peer is fetched without waiting 30 s.
5. :class:`Refused` (connection refused) takes the peer offline at once; it
   stays known, so heartbeats keep probing it every 30 s and one answer
   brings it back.
6. :class:`Goodbye` (mDNS goodbye, zeroconf's ``Removed``) forgets the peer
   at once: it is neither online nor heartbeated until an event names it
   again.
7. Events are idempotent where that makes sense: an older timestamp never
   replaces a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

HEARTBEAT_INTERVAL_S = 30.0
ONLINE_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Seen:
    """The peer was found, or its advert changed, over mDNS."""

    node_id: str


@dataclass(frozen=True, slots=True)
class Answered:
    """A heartbeat came from the peer, or a request to it succeeded."""

    node_id: str


@dataclass(frozen=True, slots=True)
class HeartbeatSent:
    """We sent the peer a heartbeat (or started a fetch from it)."""

    node_id: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A connection to the peer was refused."""

    node_id: str


@dataclass(frozen=True, slots=True)
class Goodbye:
    """The peer said goodbye over mDNS (its service was removed)."""

    node_id: str


PresenceEvent = Seen | Answered | HeartbeatSent | Refused | Goodbye


@dataclass(frozen=True, slots=True)
class PeerPresence:
    """What presence knows of one peer; times are the caller's monotonic seconds."""

    node_id: str
    last_answer: float | None = None
    last_heartbeat: float | None = None
    refresh: bool = False  # rule 4: a heartbeat is due now, whatever the times say


@dataclass(frozen=True, slots=True)
class Presence:
    """Presence of every known peer, sorted by node id. Build one with ``Presence()``."""

    peers: tuple[PeerPresence, ...] = ()

    def get(self, node_id: str) -> PeerPresence | None:
        """The entry for ``node_id``, or None when it is not known."""
        for peer in self.peers:
            if peer.node_id == node_id:
                return peer
        return None

    def known(self) -> frozenset[str]:
        """Node ids of every known peer, online or not."""
        return frozenset(peer.node_id for peer in self.peers)


def apply(state: Presence, event: PresenceEvent, now: float) -> Presence:
    """The presence after ``event`` happened at ``now``."""
    node_id = event.node_id
    if isinstance(event, Goodbye):
        return Presence(tuple(p for p in state.peers if p.node_id != node_id))
    peer = state.get(node_id) or PeerPresence(node_id)
    if isinstance(event, Seen):
        peer = replace(peer, refresh=True)
    elif isinstance(event, Answered):
        peer = replace(peer, last_answer=_latest(peer.last_answer, now))
    elif isinstance(event, HeartbeatSent):
        peer = replace(peer, last_heartbeat=_latest(peer.last_heartbeat, now), refresh=False)
    else:  # Refused
        peer = replace(peer, last_answer=None)
    return _put(state, peer)


def is_online(state: Presence, node_id: str, now: float) -> bool:
    """True when ``node_id`` is known and answered less than 60 s before ``now``."""
    peer = state.get(node_id)
    return peer is not None and _online(peer, now)


def online(state: Presence, now: float) -> frozenset[str]:
    """Node ids of the peers online at ``now``."""
    return frozenset(p.node_id for p in state.peers if _online(p, now))


def due_heartbeats(state: Presence, now: float) -> frozenset[str]:
    """Node ids of the known peers to send a heartbeat to at ``now``."""
    return frozenset(p.node_id for p in state.peers if _next_heartbeat(p) <= now)


def next_change(state: Presence, now: float) -> float | None:
    """The earliest time after ``now`` at which ``online`` or ``due_heartbeats`` may change.

    None when nothing will change without a new event. Heartbeats already
    due at ``now`` are not counted: the caller handles them first.
    """
    times: list[float] = []
    for peer in state.peers:
        beat = _next_heartbeat(peer)
        if beat > now:
            times.append(beat)
        if peer.last_answer is not None and _online(peer, now):
            times.append(peer.last_answer + ONLINE_WINDOW_S)
    return min(times, default=None)


def _online(peer: PeerPresence, now: float) -> bool:
    return peer.last_answer is not None and now - peer.last_answer < ONLINE_WINDOW_S


def _next_heartbeat(peer: PeerPresence) -> float:
    if peer.refresh:
        return float("-inf")
    last = _latest(peer.last_answer, peer.last_heartbeat)
    return float("-inf") if last is None else last + HEARTBEAT_INTERVAL_S


def _latest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _put(state: Presence, peer: PeerPresence) -> Presence:
    others = [p for p in state.peers if p.node_id != peer.node_id]
    return Presence(tuple(sorted([*others, peer], key=lambda p: p.node_id)))
