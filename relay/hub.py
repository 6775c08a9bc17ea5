"""Tunnels of every connected node, and the streams piped between them.

Each node's WebSocket is one ``Link``: a ``quorum.link.Pump`` over the
sans-I/O protocol, plus what the relay knows of that node. Rules:

- A stream may only reach a node of the opener's own cluster; anything else,
  an unknown or a departed node, is reset NO_ROUTE; a target at its stream
  limit, REFUSED. An accepted stream is joined to one the relay opens on the
  target (a ``pipes.Pipe``: credit granted upstream only after the bytes
  were accepted downstream). Its head loses any relay certificate: only a
  relay names the one a node trusts for the public ``/v1``'s hop (``relay.hop``).
- One live link per (cluster, node id): a newer connection replaces the older
  one, which gets GOAWAY(REPLACED) and is closed.
- Presence: each node's model list is forwarded to every other node of its
  cluster, the known ones are replayed to a newcomer, and a departure is
  announced with ``online=False``. Each heartbeat is stamped ``last_seen``
  (the injected wall clock) and handed to ``on_presence`` for the store.
- The relay opens streams of its own on a link (``open_local``, even ids) to
  serve its public ``/v1``.
- ``drain`` (SIGTERM): GOAWAY to every node, so no new stream starts either
  way, and the running ones may finish (bounded) before the links close.
- With other relays (``mesh``, an ``Elsewhere``; ``relay.mesh``): nodes other
  relays hold are reachable too (``route``, ``reachable``; a ``Link`` with
  ``via``), a stream for one of them is handed to its relay, and a stream
  handed here goes only to a node of this hub (``pipe``): one hop at most.
  Our nodes' comings and goings, removals and revocations are told to the others.
- Revocations (``revoke``): when credentials of a cluster stop counting (a key
  revoked, a member removed, a user disabled), each of its nodes here that
  announced ``revocations`` is sent REVOCATION and drops its cached key checks;
  a suspended cluster (its owner disabled) has its tunnels closed instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from quorum.errors import LocalProtocolError, StreamRefused
from quorum.link import Keepalive, Pump, Transport, TunnelStream
from quorum.protocol import (
    Connection,
    Event,
    GoAwayReason,
    GoAwayReceived,
    HelloReceived,
    Limits,
    Presence,
    PresenceReceived,
    RequestHead,
    ResetCode,
    Revocation,
    Role,
)
from relay.hop import unnamed
from relay.links import Elsewhere, Link
from relay.local import LocalStream
from relay.pipes import Pipe
from relay.refusals import Refusals

__all__ = ["Elsewhere", "Hub", "Link"]  # (the first and last live in relay.links)

log = logging.getLogger("relay.hub")

Clock = Callable[[], float]
REPLACED_CLOSE_DELAY_S = 0.5
"""A replaced link is closed this long after its GOAWAY, so the GOAWAY gets out."""


class Hub:
    def __init__(
        self,
        limits: Limits | None = None,
        ping_interval: float = 10.0,
        *,
        clock: Clock = time.time,
        on_presence: Callable[[Link], None] | None = None,
    ) -> None:
        # Per node connection: generous, since one node may carry a whole office's traffic.
        self.limits = limits or Limits(max_streams=512, max_opens_per_second=1000.0)
        self.keepalive = Keepalive(interval=ping_interval, dead_after=ping_interval * 2.5)
        self._links: dict[tuple[str, str], Link] = {}
        # The same links by cluster: a node's presence goes to its cluster's nodes only, so
        # finding them must not cost a pass over every tunnel of the relay.
        self._clusters: dict[str, dict[str, Link]] = {}
        self.bound: set[tuple[str, str]] = set()
        self.refused_ids = 0  # hellos refused: a node id another key owns, or not its own
        self.refusals = Refusals(clock)  # refused joins, for the dashboard (bounded)
        # (cluster, node id) pairs bound to a key: no connection without a proof may use them.
        self._all: set[Link] = set()
        self._pipes: set[Pipe] = set()
        self._local: set[TunnelStream] = set()
        self.clock = clock
        self.on_presence = on_presence
        self.mesh: Elsewhere | None = None
        self.streams_piped = 0
        self.streams_served = 0
        self.draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()  # set whenever no stream is piped or served
        self._idle.set()

    # -- queries ------------------------------------------------------------

    def nodes(self, cluster_id: str | None = None) -> list[Link]:
        if cluster_id is None:
            return [link for _, link in sorted(self._links.items())]
        return [link for _, link in sorted(self._clusters.get(cluster_id, {}).items())]

    def link(self, cluster_id: str, node_id: str) -> Link | None:
        return self._links.get((cluster_id, node_id))

    def route(self, cluster_id: str, node_id: str) -> Link | None:
        """The node's link here, else through the relay that holds it."""
        link = self._links.get((cluster_id, node_id))
        if link is None and self.mesh is not None:
            return self.mesh.link(cluster_id, node_id)
        return link

    def reachable(self, cluster_id: str) -> list[Link]:
        """The cluster's nodes here, then those other relays hold."""
        here = self.nodes(cluster_id)
        return here if self.mesh is None else here + self.mesh.links(cluster_id)

    @property
    def open_streams(self) -> int:
        return len(self._pipes) + len(self._local)

    @property
    def connections(self) -> int:
        return len(self._all)

    @property
    def buffered_bytes(self) -> int:
        """Bytes received from one side and not yet accepted by the other (bounded by credit)."""
        return sum(pipe.buffered for pipe in self._pipes)

    # -- one connection -----------------------------------------------------

    def new_link(
        self,
        cluster_id: str,
        transport: Transport,
        remote: str,
        *,
        proven: str | None = None,
        fingerprint: str | None = None,
        ca_id: str = "",
    ) -> Link:
        """A link for a node's freshly upgraded WebSocket; ``serve`` runs it. ``proven``: the
        node id its certificate names (its hello must say the same); ``fingerprint`` and
        ``ca_id``: its key, and the CA it joined with."""
        conn = Connection(Role.RELAY, self.limits)
        conn.send_hello("relay", capabilities=("presence", "streams"))
        link: Link

        def on_event(event: Event) -> None:
            self._event(link, event)

        def on_stream(stream: TunnelStream) -> None:
            self._open(link, stream)

        pump = Pump(
            conn,
            transport,
            on_event=on_event,
            on_stream=on_stream,
            peer=f"the node at {remote}",
            keepalive=self.keepalive,
            name=f"relay-link-{remote}",
        )
        link = Link(cluster_id, pump, remote, proven=proven, fingerprint=fingerprint, ca_id=ca_id)
        self._all.add(link)
        return link

    async def serve(self, link: Link) -> None:
        """Pump one link until it ends, then let its node go."""
        try:
            ended = await link.pump.run()
            log.info("node %s: %s", link.label, ended.message)
        finally:
            self._lost(link)

    # -- events -------------------------------------------------------------

    def _event(self, link: Link, event: Event) -> None:
        match event:
            case HelloReceived(hello):
                link.capabilities = tuple(hello.capabilities)
                self._register(link, hello.node_id)
            case PresenceReceived(presence):
                self._presence(link, presence)
            case GoAwayReceived():
                link.draining = True

    def drop(self, cluster_id: str, node_id: str, why: str, *, broadcast: bool = True) -> bool:
        """Close ``node_id``'s tunnel (a removed node); False if it is not connected here.
        ``broadcast``: other relays close it too, wherever it is."""
        if broadcast and self.mesh is not None:
            self.mesh.dropped(cluster_id, node_id, why)
        link = self._links.get((cluster_id, node_id))
        if link is None:
            return False  # (its end, in _lost, tells the others it is gone)
        log.warning("closing node %s's tunnel: %s", link.label, why)
        link.pump.send_goaway(GoAwayReason.PROTOCOL_ERROR, why)
        self._spawn(_close_after(link, 0.0), "relay-close-removed")
        return True

    def revoke(
        self,
        cluster_ids: Iterable[str],
        why: str,
        *,
        suspend: bool = False,
        broadcast: bool = True,
    ) -> int:
        """Credentials of these clusters stopped counting: each of their nodes here that can
        hear it drops its cached key checks (REVOCATION), or, with ``suspend`` (the owner is
        disabled), has its tunnel closed, joined or not. ``broadcast``: every other relay
        does the same. How many nodes here were told (or closed)."""
        clusters = tuple(dict.fromkeys(cluster_ids))
        if not clusters:
            return 0
        if broadcast and self.mesh is not None:
            self.mesh.revoked(clusters, why, suspend=suspend)
        wanted = set(clusters)
        done = 0
        for link in [link for link in self._all if link.cluster_id in wanted]:
            if suspend:
                log.warning("closing node %s's tunnel: %s", link.label, why)
                link.pump.send_goaway(GoAwayReason.PROTOCOL_ERROR, why)
                self._spawn(_close_after(link, 0.0, why), "relay-close-suspended")
                done += 1
            elif link.node_id is not None and link.conn.can_revoke():
                with contextlib.suppress(LocalProtocolError):  # (closed meanwhile)
                    link.conn.send_revocation(Revocation(why))
                    link.pump.flush()
                    done += 1
        if done:
            log.info("%s: told %d node(s) of %d cluster(s)", why, done, len(clusters))
        return done

    async def revocations_sent(self, cluster_ids: Iterable[str], within_s: float = 1.0) -> None:
        """Wait (at most ``within_s``) until the links of these clusters handed what ``revoke``
        queued to their sockets: an API call that revoked answers once its nodes were told."""
        wanted = set(cluster_ids)
        step = 0.002  # (the pump has no "written" signal: its writer is looked at in turns)
        for _ in range(max(1, int(within_s / step))):
            if not any(link.conn.control_queued for link in self._all if link.cluster_id in wanted):
                return
            await asyncio.sleep(step)

    def _register(self, link: Link, node_id: str) -> None:
        key = (link.cluster_id, node_id)
        why = None
        if link.proven is not None and node_id != link.proven:
            why = "its hello names another node than its certificate"
        elif link.proven is None and key in self.bound:
            why = "this node id is bound to a key: only a connection proving it may use it"
        if why is not None:
            self.refused_ids += 1
            self.refusals.add(link.cluster_id, node_id, link.fingerprint, link.remote, why)
            log.warning("refused node id %s from %s: %s", node_id, link.remote, why)
            link.pump.send_goaway(GoAwayReason.PROTOCOL_ERROR, why)
            self._spawn(_close_after(link, 0.0), "relay-close-refused")
            return
        old = self._links.get(key)
        if old is not None and old is not link:
            log.info("node %s reconnected: the newer connection wins", old.name or node_id)
            old.pump.send_goaway(GoAwayReason.REPLACED, "a newer connection replaced this one")
            self._spawn(_close_after(old, REPLACED_CLOSE_DELAY_S), "relay-close-replaced")
        link.node_id = node_id
        link.pump.peer = f"node {node_id}"
        self._links[key] = link
        self._clusters.setdefault(link.cluster_id, {})[node_id] = link
        for other in self.nodes(link.cluster_id):
            if other is not link and other.presence is not None:
                link.pump.send_presence(other.presence)
        if self.mesh is not None:
            for presence in self.mesh.presences(link.cluster_id):
                link.pump.send_presence(presence)

    def _presence(self, link: Link, presence: Presence) -> None:
        if link.node_id is None:
            return
        link.name = presence.name or link.name
        link.pump.peer = f"node {link.label}"
        # A node speaks only for itself, whatever id it put in the frame.
        link.presence = Presence(link.node_id, presence.models, True, 0, presence.name)
        link.last_seen = self.clock()
        if self.on_presence is not None:
            self.on_presence(link)
        if self.mesh is not None:
            self.mesh.announce(link)
        for other in self.nodes(link.cluster_id):
            if other is not link:
                other.pump.send_presence(link.presence)

    # -- streams --------------------------------------------------------------

    def _open(self, link: Link, stream: TunnelStream) -> None:
        """A node opened a stream: join it to one on the node it is addressed to."""
        stream.head = unnamed(stream.head)
        target_id = stream.head.node
        here = (link.cluster_id, target_id or "") in self._links
        if self.mesh is not None and target_id and not here and not self.draining:
            try:
                elsewhere = self.mesh.open(
                    link.cluster_id, target_id, stream.head, end_stream=stream.at_eof
                )
            except StreamRefused:
                stream.reset(ResetCode.REFUSED, "the relay holding the node cannot take it")
                return
            if elsewhere is not None:
                self._join(stream, elsewhere)
                return
        self.pipe(stream, link.cluster_id, target_id or "", opener=link)

    def pipe(
        self, stream: TunnelStream, cluster_id: str, target_id: str, *, opener: Link | None = None
    ) -> None:
        """Join ``stream`` to a new one on ``target_id``'s link here (never further)."""
        target = self._links.get((cluster_id, target_id))
        if target is None or target is opener or target.draining or self.draining:
            why = (
                "the relay is shutting down"
                if self.draining
                else f"node {target_id} is not connected"
            )
            stream.reset(ResetCode.NO_ROUTE, why)
            return
        try:
            onward = target.pump.open_stream(
                stream.head, end_stream=stream.at_eof, peer=f"node {target.label}"
            )
        except StreamRefused:
            stream.reset(ResetCode.REFUSED, "the target node is at its stream limit")
            return
        self._join(stream, onward)

    def _join(self, stream: TunnelStream, onward: TunnelStream) -> None:
        self._pipes.add(Pipe(stream, onward, self._pipe_done))
        self._idle.clear()
        self.streams_piped += 1

    def _pipe_done(self, pipe: Pipe) -> None:
        self._pipes.discard(pipe)
        self._check_idle()

    def open_local(self, link: Link, head: RequestHead, *, end_stream: bool) -> LocalStream:
        """Open a stream of the relay's own on ``link`` (raises ``StreamRefused``)."""
        if self.draining or link.draining or not link.pump.can_open_stream():
            raise StreamRefused(f"node {link.label} takes no new requests now.")
        elsewhere = None
        if link.via is not None and self.mesh is not None and link.node_id:
            elsewhere = self.mesh.open(link.cluster_id, link.node_id, head, end_stream=end_stream)
        elif self._links.get((link.cluster_id, link.node_id or "")) is link:
            elsewhere = link.pump.open_stream(
                head, end_stream=end_stream, peer=f"node {link.label}"
            )
        if elsewhere is None:
            raise StreamRefused(f"node {link.label} is not connected.")
        stream = elsewhere
        stream.on_close = self._local_done
        self._local.add(stream)
        self._idle.clear()
        self.streams_served += 1
        return LocalStream(stream, link.name or link.node_id or "?")

    def _local_done(self, stream: TunnelStream) -> None:
        self._local.discard(stream)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._pipes and not self._local:
            self._idle.set()

    # -- endings ----------------------------------------------------------------

    def _lost(self, link: Link) -> None:
        """The link ended (its streams, and the pipes through them, failed already):
        forget the node and announce its departure."""
        self._all.discard(link)
        if link.node_id is not None and self._links.get((link.cluster_id, link.node_id)) is link:
            del self._links[(link.cluster_id, link.node_id)]
            cluster = self._clusters[link.cluster_id]
            del cluster[link.node_id]
            if not cluster:
                del self._clusters[link.cluster_id]
            if link.presence is not None:  # only a node others learned of needs a goodbye
                gone = Presence(link.node_id, (), False, 0, link.name)
                for other in self.nodes(link.cluster_id):
                    other.pump.send_presence(gone)
                if self.mesh is not None:
                    self.mesh.withdraw(link)
            log.info("node %s disconnected", link.label)
        self._check_idle()

    async def drain(self, timeout_s: float) -> None:
        """Refuse new streams, tell every node, wait for running streams (bounded)."""
        self.draining = True
        if self.mesh is not None:
            self.mesh.draining()  # the others: its running streams go on while its nodes move
        for link in list(self._all):
            link.pump.send_goaway(GoAwayReason.SHUTDOWN, "the relay is restarting")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        await asyncio.gather(*(link.pump.close("the relay stopped") for link in list(self._all)))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _close_after(
    link: Link, delay: float, why: str = "a newer connection of the node replaced this one"
) -> None:
    """Close a link once its GOAWAY has had a moment to go out."""
    await asyncio.sleep(delay)
    await link.pump.close(why)
