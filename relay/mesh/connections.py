"""This relay's connections to the other relays of the mesh: one tunnel connection to each,
its frames carried by the bus (``peers.PeerTransport``), numbered by session.

``Connections.connect`` starts a connection to a relay (ending the one in use; ``fresh``
when we start it over by ourselves, else in answer to the peer's latest session). ``frame``
delivers what is heard on this relay's inbox to the connection paired with its session,
following the rules of ``sessions``: a connection takes one peer session from its start,
or nothing. A connection that ended starts again after ``RECONNECT_AFTER_S`` while its
relay is still in the directory; ``forget`` ends the one to a relay that left. Streams
another relay hands us go to ``on_stream``. Its tasks are spawned through the mesh's
``spawn``: the mesh owns and ends them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from quorum.errors import RemoteProtocolError
from quorum.link import Keepalive, Pump, TunnelStream
from quorum.protocol import Connection, Event, HelloReceived, Limits, Role
from relay.mesh.bus import Bus
from relay.mesh.directory import Directory
from relay.mesh.peers import PIECES, PeerTransport
from relay.mesh.sessions import Heard, Sessions
from relay.mesh.wire import Subjects

log = logging.getLogger("relay.mesh")

RECONNECT_AFTER_S = 1.0
Spawn = Callable[[Coroutine[Any, Any, None], str], object]


@dataclass(eq=False)
class _Peer:
    relay: str
    sessions: Sessions
    pump: Pump | None = None
    transport: PeerTransport | None = None


class Connections:
    def __init__(
        self,
        relay_id: str,
        bus: Bus,
        subjects: Subjects,
        directory: Directory,
        *,
        limits: Limits,
        keepalive: Keepalive,
        on_stream: Callable[[TunnelStream], None],
        spawn: Spawn,
    ) -> None:
        self.id = relay_id
        self.bus = bus
        self.subjects = subjects
        self.directory = directory
        self.limits = limits
        self.keepalive = keepalive
        self._on_stream = on_stream
        self._spawn = spawn
        self.closing = False  # the mesh stops: nothing starts again, nothing more is heard
        self._peers: dict[str, _Peer] = {}
        # Connections started, to any peer: a session number never repeats, even to a peer
        # forgotten and found again (its side drops an older session's frames).
        self._sessions_started = 0

    def __contains__(self, relay: object) -> bool:
        return relay in self._peers

    def relays(self) -> list[str]:
        """The relays we have (or are starting) a connection to."""
        return list(self._peers)

    def pump(self, relay: str) -> Pump | None:
        """The pump of the connection to ``relay``; None while there is none."""
        peer = self._peers.get(relay)
        return None if peer is None else peer.pump

    def pumps(self) -> list[Pump]:
        return [p.pump for p in self._peers.values() if p.pump is not None]

    def frame(self, subject: str, data: bytes) -> None:
        """A frame heard on this relay's inbox: to the connection with its sender."""
        try:
            sender, session = self.subjects.parse_frames(subject)
        except RemoteProtocolError as exc:
            log.warning("%s", exc)
            return
        if self.closing or sender == self.id:
            return
        peer = self._peers.get(sender)
        known = peer is not None
        if peer is None:
            peer = self._peers[sender] = self._peer(sender)
        match peer.sessions.heard(session):
            case Heard.DELIVER if peer.transport is not None:
                peer.transport.deliver(data)
            case Heard.ANSWER:
                if known:
                    log.info("relay %s started its connection over", sender)
                self.connect(sender, fresh=False)
                assert peer.transport is not None
                peer.transport.deliver(data)
            case Heard.START:
                log.info("relay %s started over as we did, maybe unheard: starting again", sender)
                self.connect(sender, fresh=True)
            case _ if not known:  # it talks to us, and we have no connection: start one
                self.connect(sender, fresh=True)

    def _peer(self, relay: str) -> _Peer:
        return _Peer(relay, Sessions(wins=self.id < relay))

    def rejoined(self) -> None:
        """The bus is back after a loss: every connection starts over, and its start may be
        lost (a peer that did not subscribe again yet)."""
        for relay in self.relays():
            self.connect(relay, fresh=True, sure=False)

    def connect(self, relay: str, *, fresh: bool, sure: bool = True) -> None:
        """A new connection to ``relay`` (ending the one in use). ``fresh``: we start it
        over by ourselves (the peer's side of it is its session answering it); else it
        answers the peer's latest session, heard just now."""
        peer = self._peers.get(relay)
        if peer is None:
            peer = self._peers[relay] = self._peer(relay)
        if peer.pump is not None:
            self._spawn(peer.pump.close("a newer connection replaced it"), "relay-mesh-replaced")
        self._sessions_started += 1
        number = self._sessions_started
        sessions = peer.sessions
        session = sessions.started(number, sure=sure) if fresh else sessions.answering(number)
        subject = self.subjects.frames(relay, self.id, session)

        async def publish(frame: bytes) -> None:
            await self.bus.publish(subject, frame)

        conn = Connection(Role.NODE if self.id < relay else Role.RELAY, self.limits)
        conn.send_hello(self.id, capabilities=("streams", PIECES))
        transport = PeerTransport(publish)

        def heard(event: Event) -> None:
            if isinstance(event, HelloReceived) and PIECES in event.hello.capabilities:
                transport.peer_joins_pieces()

        pump = Pump(
            conn,
            transport,
            on_event=heard,
            on_stream=self._on_stream,
            peer=f"relay {relay}",
            keepalive=self.keepalive,
            name=f"relay-mesh-{relay}",
        )
        peer.pump, peer.transport = pump, transport
        self._spawn(self._run(peer, pump), f"relay-mesh-{relay}")

    async def _run(self, peer: _Peer, pump: Pump) -> None:
        ended = await pump.run()
        log.info("connection to relay %s: %s", peer.relay, ended.message)
        if peer.pump is not pump:
            return  # replaced already
        peer.pump = peer.transport = None
        peer.sessions.ended()
        if not self.closing and peer.relay in self.directory.relays():
            await asyncio.sleep(RECONNECT_AFTER_S)
            if peer.pump is None and not self.closing and self._peers.get(peer.relay) is peer:
                self.connect(peer.relay, fresh=True)

    def forget(self, relay: str) -> None:
        """``relay`` left the mesh (or died): its connection ends."""
        peer = self._peers.pop(relay, None)
        if peer is not None and peer.pump is not None:
            self._spawn(peer.pump.close(f"relay {relay} left the mesh"), "relay-mesh-gone")
