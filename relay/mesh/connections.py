"""This relay's connections to the other relays of the mesh: one tunnel connection to each,
its frames carried by the bus (``peers.PeerTransport``), numbered by session.

``Connections.connect`` starts a connection to a relay (ending the one in use; ``fresh``
when we start it, else in answer to the peer's). ``frame`` delivers what is heard on this
relay's inbox to the connection it belongs to, dropping an older session's frames and
following a peer that started its side over. A connection that ended starts again after
``RECONNECT_AFTER_S`` while its relay is still in the directory; ``forget`` ends the one to
a relay that left. Streams another relay hands us go to ``on_stream``. Its tasks are
spawned through the mesh's ``spawn``: the mesh owns and ends them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from quorum.errors import RemoteProtocolError
from quorum.link import Keepalive, Pump, TunnelStream
from quorum.protocol import Connection, Event, HelloReceived, Limits, Role
from relay.mesh.bus import Bus
from relay.mesh.directory import Directory
from relay.mesh.peers import PIECES, PeerTransport
from relay.mesh.wire import Sessions, Subjects

log = logging.getLogger("relay.mesh")

RECONNECT_AFTER_S = 1.0
Spawn = Callable[[Coroutine[Any, Any, None], str], object]


@dataclass(eq=False)
class _Peer:
    relay: str
    sessions: Sessions = field(default_factory=Sessions)
    session: int = 0  # our latest connection's number
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
        if peer is None:
            peer = self._peers[sender] = _Peer(sender)
        match peer.sessions.heard(session):
            case "drop":
                return
            case "restart":
                log.info("relay %s started its connection over", sender)
                self.connect(sender, fresh=False)
            case _ if peer.transport is None:
                self.connect(sender, fresh=False)
        assert peer.transport is not None
        peer.transport.deliver(data)

    def connect(self, relay: str, *, fresh: bool) -> None:
        """A new connection to ``relay`` (ending the one in use). ``fresh``: we start it
        (the peer's side of it comes under its next session)."""
        peer = self._peers.get(relay)
        if peer is None:
            peer = self._peers[relay] = _Peer(relay)
        if peer.pump is not None:
            self._spawn(peer.pump.close("a newer connection replaced it"), "relay-mesh-replaced")
        if fresh:
            peer.sessions.fresh()
        self._sessions_started += 1
        peer.session = self._sessions_started
        subject = self.subjects.frames(relay, self.id, peer.session)

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
        if not self.closing and peer.relay in self.directory.relays():
            await asyncio.sleep(RECONNECT_AFTER_S)
            if peer.pump is None and not self.closing and self._peers.get(peer.relay) is peer:
                self.connect(peer.relay, fresh=True)

    def forget(self, relay: str) -> None:
        """``relay`` left the mesh (or died): its connection ends."""
        peer = self._peers.pop(relay, None)
        if peer is not None and peer.pump is not None:
            self._spawn(peer.pump.close(f"relay {relay} left the mesh"), "relay-mesh-gone")
