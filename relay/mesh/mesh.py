"""The mesh as the hub sees it: nodes other relays hold, streams handed to them, and
this relay's own nodes announced to the others (rules: the package docstring).

``Mesh`` implements ``relay.hub.Elsewhere``: the hub calls it when a node of
its own comes, heartbeats or goes, and when a stream or a public request is
for a node it does not hold. Everything it sends goes through an injected
``Bus`` (NATS in service, an in-memory one in tests), and its clock is
injected too.

The connections to the other relays are ``connections.Connections``'s (the mesh
owns their tasks); which streams went to which relay is kept by ``handoffs``. Owned
tasks: the sender (announcements, in order), the alive beat (which also expires silent
relays), the probes, and one pump per peer relay. ``close`` says goodbye and ends them
all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from quorum.errors import RemoteProtocolError, StreamRefused, TransportClosed
from quorum.link import Keepalive, TunnelStream
from quorum.protocol import Limits, Presence, RequestHead, ResetCode
from relay.hub import Hub, Link
from relay.mesh import revocations
from relay.mesh.bus import Bus
from relay.mesh.connections import Connections
from relay.mesh.directory import ALIVE_EVERY_S, Change, Directory, Held
from relay.mesh.handoffs import HandOffs
from relay.mesh.wire import (
    Announcement,
    NodeAnnounced,
    NodeDropped,
    RelayAlive,
    RelayDraining,
    RelayGone,
    RelayHello,
    Subjects,
    decode,
    destination,
    encode,
    tag,
    untagged,
)

log = logging.getLogger("relay.mesh")

# Between two relays: every stream of every node of theirs may cross.
MESH_LIMITS = Limits(max_streams=8192, max_opens_per_second=10_000.0)
PROBE_FRESH_S = 0.5
"""A peer heard from (or probed) this recently is taken to live: a stream to it waits for
no probe."""
PROBE_WAIT_S = 0.5
"""How often a stream handed to a peer, with no answer yet, has that peer probed."""
PROBE_TIMEOUT_S = 2.0
PROBE_AFTER_REJOIN_S = 5.0
"""After NATS came back, a peer may not have subscribed again yet: for this long "nobody
listens" proves nothing."""
Clock = Callable[[], float]


class Mesh:
    def __init__(
        self,
        hub: Hub,
        bus: Bus,
        *,
        prefix: str,
        relay_id: str | None = None,
        clock: Clock = time.time,
        limits: Limits = MESH_LIMITS,
        ping_interval: float = 10.0,
        alive_every: float = ALIVE_EVERY_S,
    ) -> None:
        self.hub = hub
        self.bus = bus
        self.id = relay_id or uuid.uuid4().hex[:12]
        self.subjects = Subjects(prefix)
        self.clock = clock
        self.limits = limits
        self.keepalive = Keepalive(interval=ping_interval, dead_after=ping_interval * 2.5)
        self.alive_every = alive_every
        self.directory = Directory(self.id, expires_after=alive_every * 3)
        self.announced = 0  # announcements sent, for /metrics and the bench
        self.connections = Connections(
            self.id,
            bus,
            self.subjects,
            self.directory,
            limits=limits,
            keepalive=self.keepalive,
            on_stream=self._handed,
            spawn=self._spawn,
        )
        # Streams handed to another relay, per node: cut when the node moves (its old
        # tunnel is gone; an end-to-end channel kept over it would wait for nothing).
        self.handoffs = HandOffs()
        self._outbox: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._sender: asyncio.Task[None] | None = None
        self._probing: set[str] = set()  # peers asked now whether they live
        self._lives: dict[str, float] = {}  # peer -> when a probe last found it alive
        self._rejoined_at = float("-inf")  # when NATS last came back

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, say hello (the others announce their nodes again), and hook into the hub."""
        await self.bus.answer(self.subjects.probe(self.id))
        await self.bus.subscribe(self.subjects.presence, self._heard)
        await self.bus.subscribe(self.subjects.drop, self._heard)
        await self.bus.subscribe(revocations.subject(self.subjects.prefix), self._revoked)
        await self.bus.subscribe(self.subjects.inbox(self.id), self.connections.frame)
        self._sender = self._spawn(self._send_loop(), "relay-mesh-sender")
        self._spawn(self._alive_loop(), "relay-mesh-alive")
        self.hub.mesh = self
        self.bus.on_reconnect(self._rejoined)
        self._say(self.subjects.presence, RelayHello(self.id))
        log.info("relay %s joined the mesh %s", self.id, self.subjects.prefix)

    async def close(self) -> None:
        """Tell the others this relay holds nothing any more, then stop."""
        self._closing = True
        self.connections.closing = True
        if self.hub.mesh is self:
            self.hub.mesh = None
        for task in list(self._tasks):
            if task is not self._sender:
                task.cancel()
        self._say(self.subjects.presence, RelayGone(self.id))
        self._outbox.put_nowait(None)  # the sender stops after the goodbye
        pumps = self.connections.pumps()
        await asyncio.gather(*(pump.close("the relay stopped") for pump in pumps))
        if self._sender is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self._sender)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _rejoined(self) -> None:
        """NATS is back: what was sent meanwhile may be lost. The connections to the other
        relays start over (a stream that lost a frame would wait for nothing: it fails
        now, visibly), and everyone says again what it holds."""
        if self._closing:
            return
        self._rejoined_at = self.clock()
        self.connections.rejoined()
        self._say(self.subjects.presence, RelayHello(self.id))
        self._announce_all()

    # -- what the hub calls (relay.hub.Elsewhere) --------------------------------------

    def announce(self, link: Link) -> None:
        """A node of ours heartbeat: the others learn it is here."""
        if link.presence is not None and link.last_seen is not None:
            message = NodeAnnounced(
                self.id,
                link.cluster_id,
                link.presence,
                link.last_seen,
                link.proven is not None,
                link.fingerprint,
                link.capabilities,
            )
            self._say(self.subjects.presence, message)
            self._moved(link.cluster_id, link.presence.node_id, self.id)

    def withdraw(self, link: Link) -> None:
        """A node of ours left (the hub told our other nodes): the others learn it too. If
        another relay holds it already (it moved), our nodes hear where it is again."""
        if link.presence is None or link.node_id is None:
            return
        gone = Presence(link.node_id, (), False, 0, link.name)
        self._say(self.subjects.presence, NodeAnnounced(self.id, link.cluster_id, gone, 0.0))
        held = self.directory.holder(link.cluster_id, link.node_id)
        if held is not None:
            self._tell([(link.cluster_id, held.presence)])

    def counts(self) -> tuple[int, int, int]:
        return len(self.directory.relays()), len(self.directory), self.announced

    def draining(self) -> None:
        """This relay drains: the others let the streams through it finish."""
        self._say(self.subjects.presence, RelayDraining(self.id))

    def dropped(self, cluster_id: str, node_id: str, why: str) -> None:
        self._say(self.subjects.drop, NodeDropped(self.id, cluster_id, node_id, why))

    def revoked(self, cluster_ids: tuple[str, ...], why: str, *, suspend: bool) -> None:
        """Credentials of these clusters stopped counting: every relay tells its nodes of
        them (or, ``suspend``, closes their tunnels), as ``Hub.revoke`` did here."""
        message = revocations.ClustersRevoked(self.id, cluster_ids, why, suspend)
        subject = revocations.subject(self.subjects.prefix)
        self._outbox.put_nowait((subject, revocations.encode(message)))

    def presences(self, cluster_id: str) -> list[Presence]:
        """What a node that just joined here should hear of the nodes others hold."""
        now = self.clock()
        return [h.presence_at(now) for h in self._elsewhere(cluster_id)]

    def links(self, cluster_id: str) -> list[Link]:
        return [link for h in self._elsewhere(cluster_id) if (link := self._link(h)) is not None]

    def link(self, cluster_id: str, node_id: str) -> Link | None:
        held = self.directory.holder(cluster_id, node_id)
        return None if held is None else self._link(held)

    def open(
        self, cluster_id: str, node_id: str, head: RequestHead, *, end_stream: bool
    ) -> TunnelStream | None:
        """A stream to ``node_id`` through the relay holding it; None if no relay does.
        ``StreamRefused`` if that relay cannot take it now."""
        held = self.directory.holder(cluster_id, node_id)
        if held is None:
            return None
        pump = self.connections.pump(held.relay)
        if pump is None:
            raise StreamRefused(f"The relay holding node {held.presence.name} is not reachable.")
        name = held.presence.name or node_id
        stream = pump.open_stream(
            tag(head, cluster_id, node_id), end_stream=end_stream, peer=f"node {name}"
        )
        self.handoffs.add(cluster_id, node_id, held.relay, stream)
        self._watch(held.relay, stream)
        return stream

    def _moved(self, cluster_id: str, node_id: str, relay: str) -> None:
        """``node_id`` is now at ``relay``: cut the streams handed to it elsewhere (a node has
        one tunnel: the old one is dead), unless that relay drains (they finish there)."""
        self.handoffs.moved(cluster_id, node_id, relay, self.directory.draining)

    # -- a peer that died ----------------------------------------------------------------

    def _watch(self, relay: str, stream: TunnelStream) -> None:
        """Until ``stream`` has its answer's head, make sure ``relay`` lives: probed now
        unless heard from lately, and again every ``PROBE_WAIT_S`` while the stream waits."""
        if self._closing or stream.closed or stream.response_head is not None:
            return
        if relay not in self.connections:
            return  # forgotten: the stream was cut with it
        self._check(relay)
        asyncio.get_running_loop().call_later(PROBE_WAIT_S, self._watch, relay, stream)

    def _check(self, relay: str) -> None:
        """Probe ``relay`` in the background unless it was heard from lately."""
        now = self.clock()
        last = max(self._lives.get(relay, 0.0), self.directory.heard(relay) or 0.0)
        if relay in self._probing or now - last < PROBE_FRESH_S:
            return
        self._probing.add(relay)
        self._spawn(self._probe(relay), f"relay-mesh-probe-{relay}")

    async def _probe(self, relay: str) -> None:
        try:
            answered = await self.bus.ask(self.subjects.probe(relay), PROBE_TIMEOUT_S)
        finally:
            self._probing.discard(relay)
        now = self.clock()
        if answered:
            self._lives[relay] = now
            return
        settled = now - self._rejoined_at >= PROBE_AFTER_REJOIN_S
        if answered is False and settled and not self._closing and relay in self.connections:
            self._lost(relay)

    def _lost(self, relay: str) -> None:
        """Nobody listens for ``relay`` on the bus any more: it died (or lost NATS). Each
        stream handed to it without an answer yet is refused, so its caller tries another
        holder at once (the request may have reached the node before its relay died: it is
        tried once more, as a client's retry would be); an answered one is cut. Its nodes
        leave the directory, and our nodes hear so."""
        log.warning("relay %s no longer listens on the mesh: forgetting it and its nodes", relay)
        self.handoffs.lost(relay)
        self._lives.pop(relay, None)
        self._tell(self.directory.apply(RelayGone(relay), self.clock()))
        self.connections.forget(relay)

    # -- what the others say ------------------------------------------------------------

    def _heard(self, subject: str, data: bytes) -> None:
        try:
            message = decode(data)
        except RemoteProtocolError as exc:
            log.warning("ignored on %s: %s", subject, exc)
            return
        if message.relay == self.id:
            return
        self._tell(self.directory.apply(message, self.clock()))
        match message:
            case NodeAnnounced(relay, cluster, presence, _, bound, _, _) if presence.online:
                if bound:  # its id is bound to a key: refused here too without a proof
                    self.hub.bound.add((cluster, presence.node_id))
                self._moved(cluster, presence.node_id, relay)
            case RelayGone(relay):
                self.connections.forget(relay)
                return
            case RelayHello():
                self._announce_all()
            case NodeDropped(_, cluster, node, why):
                self.hub.drop(cluster, node, why, broadcast=False)
        if message.relay not in self.connections and not self._closing:
            self.connections.connect(message.relay, fresh=True)

    def _revoked(self, subject: str, data: bytes) -> None:
        try:
            message = revocations.decode(data)
        except RemoteProtocolError as exc:
            log.warning("ignored on %s: %s", subject, exc)
            return
        if message.relay != self.id:
            self.hub.revoke(message.clusters, message.why, suspend=message.suspend, broadcast=False)

    def _announce_all(self) -> None:
        for link in self.hub.nodes():
            self.announce(link)

    def _tell(self, changes: list[Change]) -> None:
        """Our nodes of each cluster hear of a node elsewhere (unless it is here)."""
        for cluster, presence in changes:
            if self.hub.link(cluster, presence.node_id) is not None:
                continue
            for local in self.hub.nodes(cluster):
                local.pump.send_presence(presence)

    def _elsewhere(self, cluster_id: str) -> list[Held]:
        return [
            h
            for h in self.directory.held(cluster_id)
            if self.hub.link(cluster_id, h.presence.node_id) is None
        ]

    def _link(self, held: Held) -> Link | None:
        pump = self.connections.pump(held.relay)
        if pump is None:
            return None
        return Link(
            held.cluster_id,
            pump,
            f"relay {held.relay}",
            node_id=held.presence.node_id,
            name=held.presence.name,
            presence=held.presence,
            last_seen=held.seen,
            via=held.relay,
            fingerprint=held.fingerprint,
            capabilities=held.capabilities,
        )

    # -- streams other relays hand us -------------------------------------------------

    def _handed(self, stream: TunnelStream) -> None:
        """Another relay hands us a stream for a node of ours: join it to that node's."""
        target = destination(stream.head)
        if target is None:
            stream.reset(ResetCode.NO_ROUTE, "the stream does not say where it goes")
            return
        stream.head = untagged(stream.head)
        self.hub.pipe(stream, *target)

    # -- sending ------------------------------------------------------------------------

    def _say(self, subject: str, message: Announcement) -> None:
        self._outbox.put_nowait((subject, encode(message)))

    async def _send_loop(self) -> None:
        while (item := await self._outbox.get()) is not None:
            try:
                await self.bus.publish(*item)
                self.announced += 1
            except TransportClosed as exc:
                log.warning("an announcement was lost: %s", exc)

    async def _alive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.alive_every)
            self._say(self.subjects.presence, RelayAlive(self.id))
            now = self.clock()
            for relay in self.directory.relays():  # silent for a beat and a half: alive?
                if now - (self.directory.heard(relay) or now) > self.alive_every * 1.5:
                    self._check(relay)
            self._tell(self.directory.expire(now))
            live = set(self.directory.relays())
            for relay in [r for r in self.connections.relays() if r not in live]:
                log.info("relay %s went silent: forgetting its nodes", relay)
                self.connections.forget(relay)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
