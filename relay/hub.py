"""Tunnels of every connected node, and the streams piped between them.

The relay speaks the sans-I/O protocol on each node's WebSocket (one
``Link`` per connection) and joins a stream a node opens to a stream it opens
on the target node (a ``Pipe``). Rules:

- A stream may only reach a node of the opener's own cluster; anything else,
  an unknown or a departed node, is reset NO_ROUTE.
- One live link per (cluster, node id): a newer connection replaces the older
  one, which gets GOAWAY(REPLACED) and is closed.
- Credit: bytes taken from one side are granted back (``consumed``) only
  once the other side's connection accepted them, so the relay holds at
  most one window per stream direction, and a frozen reader stops its writer
  without slowing any other stream.
- Presence: each node's model list is forwarded to every other node of its
  cluster, the known ones are replayed to a newcomer, and a departure is
  announced with ``online=False``. Each heartbeat is stamped ``last_seen``
  (the injected wall clock) and handed to ``on_presence`` for the store.
- The relay opens streams of its own on a link (``open_local``, even ids) to
  serve its public ``/v1``; their events go to a ``LocalStream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from quorum.errors import LocalProtocolError, RemoteProtocolError
from quorum.protocol import (
    Connection,
    DataReceived,
    Event,
    GoAwayReason,
    GoAwayReceived,
    HelloReceived,
    Limits,
    Liveness,
    PongReceived,
    Presence,
    PresenceReceived,
    RequestHead,
    ResetCode,
    ResponseReceived,
    Role,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamWritable,
)
from relay.local import LocalStream, LocalStreams, StreamRefused

log = logging.getLogger("relay.hub")

Send = Callable[[bytes], Awaitable[None]]
Close = Callable[[], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(eq=False)
class Link:
    """One node's tunnel: its protocol state and what the relay knows of it."""

    cluster_id: str
    conn: Connection
    send: Send
    close: Close
    remote: str
    node_id: str | None = None
    name: str = ""
    presence: Presence | None = None
    last_seen: float | None = None
    """Wall-clock time of the last heartbeat (PRESENCE), by the hub's clock."""
    connected_at: float = field(default_factory=time.time)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    draining: bool = False

    def flush(self) -> None:
        self.dirty.set()


@dataclass(eq=False)
class Half:
    """One direction of a pipe: bytes received on ``src`` waiting to go out on ``dst``."""

    src: Link
    src_sid: int
    dst: Link
    dst_sid: int
    pending: deque[bytes] = field(default_factory=deque)
    ended: bool = False


@dataclass(eq=False)
class Pipe:
    up: Half  # opener -> target (the request)
    down: Half  # target -> opener (the response)


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
        self.ping_interval = ping_interval
        self.dead_after = ping_interval * 2.5
        self._links: dict[tuple[str, str], Link] = {}
        self._all: set[Link] = set()
        self._halves: dict[tuple[int, int], Half] = {}  # (id(link), sid) -> half *from* it
        self._pipes: dict[tuple[int, int], Pipe] = {}
        self._local = LocalStreams()
        self.clock = clock
        self.on_presence = on_presence
        self.streams_piped = 0
        self.streams_served = 0
        self.draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()  # set whenever no stream is piped
        self._idle.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name="relay-close-replaced")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- queries ------------------------------------------------------------

    def nodes(self, cluster_id: str | None = None) -> list[Link]:
        return [
            link
            for (cid, _), link in sorted(self._links.items())
            if cluster_id is None or cid == cluster_id
        ]

    def link(self, cluster_id: str, node_id: str) -> Link | None:
        return self._links.get((cluster_id, node_id))

    @property
    def open_streams(self) -> int:
        return len(self._pipes) // 2 + len(self._local)

    @property
    def connections(self) -> int:
        return len(self._all)

    @property
    def buffered_bytes(self) -> int:
        """Bytes received from one side and not yet accepted by the other (bounded by credit)."""
        return sum(len(c) for half in self._halves.values() for c in half.pending)

    # -- one connection -----------------------------------------------------

    def new_link(self, cluster_id: str, send: Send, close: Close, remote: str) -> Link:
        link = Link(cluster_id, Connection(Role.RELAY, self.limits), send, close, remote)
        link.conn.send_hello("relay", capabilities=("presence", "streams"))
        link.flush()
        self._all.add(link)
        return link

    async def serve(self, link: Link, frames: asyncio.Queue[bytes | None]) -> None:
        """Pump one link until its socket closes: frames in, events handled, frames out."""
        loop = asyncio.get_running_loop()
        liveness = Liveness(loop.time(), interval=self.ping_interval, dead_after=self.dead_after)
        writer = asyncio.create_task(self._writer(link), name=f"relay-writer-{link.remote}")
        try:
            while True:
                now = loop.time()
                due = min(liveness.next_ping_due(now, random.uniform(-1, 1)), liveness.dead_at())
                try:
                    async with asyncio.timeout(max(0.0, due - now)):
                        data = await frames.get()
                except TimeoutError:
                    now = loop.time()
                    if liveness.is_dead(now):
                        log.info("node %s silent for %.0f s: closing", link.name, self.dead_after)
                        return
                    link.conn.send_ping(os.urandom(8))
                    liveness.on_ping_sent(now)
                    link.flush()
                    continue
                if data is None:
                    return
                liveness.on_frame_received(loop.time())
                try:
                    events = link.conn.receive_frame(data, loop.time())
                except RemoteProtocolError as exc:
                    log.warning("node %s broke the protocol: %s", link.name or link.remote, exc)
                    link.flush()
                    await self._drain_writer(link)
                    return
                self._handle(link, events)
        finally:
            writer.cancel()
            # The writer may have died on its own (a write to a closing socket): whatever
            # it ended with, the link is gone and must be cleaned up.
            await asyncio.gather(writer, return_exceptions=True)
            self._lost(link)

    async def _writer(self, link: Link) -> None:
        while True:
            await link.dirty.wait()
            link.dirty.clear()
            for frame in link.conn.data_to_send():
                await link.send(frame)

    async def _drain_writer(self, link: Link) -> None:
        with contextlib.suppress(Exception):
            for frame in link.conn.data_to_send():
                await link.send(frame)

    # -- events -------------------------------------------------------------

    def _handle(self, link: Link, events: list[Event]) -> None:
        touched = {link}
        for event in events:
            try:
                self._event(link, event, touched)
            except LocalProtocolError as exc:
                # A stream closed under us (a reset crossed our frame): nothing to do.
                log.debug("node %s: %s", link.name, exc)
        for other in touched:
            for late in other.conn.take_events():
                if other is not link:
                    self._event(other, late, touched)
            other.flush()

    def _event(self, link: Link, event: Event, touched: set[Link]) -> None:
        if self._local and self._local.dispatch(id(link), event):
            self._check_idle()
            return
        match event:
            case HelloReceived(hello):
                self._register(link, hello.node_id, touched)
            case PresenceReceived(presence):
                self._presence(link, presence, touched)
            case StreamOpened(sid, head, end_stream):
                self._open(link, sid, head.node, end_stream, event, touched)
            case DataReceived(sid, data):
                half = self._halves.get((id(link), sid))
                if half is not None:
                    half.pending.append(data)
                    self._pump(half, touched)
            case StreamEnded(sid):
                half = self._halves.get((id(link), sid))
                if half is not None:
                    half.ended = True
                    self._pump(half, touched)
            case StreamWritable(sid):
                back = self._halves.get((id(link), sid))
                if back is not None:  # the half flowing *into* this stream is the reverse
                    pipe = self._pipes.get((id(link), sid))
                    if pipe is not None:
                        self._pump(pipe.down if back is pipe.up else pipe.up, touched)
            case ResponseReceived(sid, head, end_stream):
                pipe = self._pipes.get((id(link), sid))
                if pipe is not None:
                    down = pipe.down
                    down.dst.conn.send_response_head(down.dst_sid, head, end_stream=end_stream)
                    touched.add(down.dst)
                    if end_stream:
                        down.ended = True
                        self._finish(pipe)
            case StreamReset(sid, code, message, _):
                pipe = self._pipes.get((id(link), sid))
                if pipe is not None:
                    half = self._halves[(id(link), sid)]
                    with contextlib.suppress(LocalProtocolError):
                        half.dst.conn.reset_stream(half.dst_sid, code, message)
                    touched.add(half.dst)
                    self._forget(pipe)
            case GoAwayReceived():
                link.draining = True
            case PongReceived():
                pass

    def _check_idle(self) -> None:
        if not self._pipes and not self._local:
            self._idle.set()

    def open_local(self, link: Link, head: RequestHead, *, end_stream: bool) -> LocalStream:
        """Open a stream of the relay's own on ``link`` (raises ``StreamRefused``)."""
        if self.draining or link.draining or not link.conn.can_open_stream():
            raise StreamRefused(f"node {link.name or link.node_id} takes no new requests now.")
        if self._links.get((link.cluster_id, link.node_id or "")) is not link:
            raise StreamRefused(f"node {link.name or link.node_id} is not connected.")
        sid = link.conn.open_stream(head, end_stream=end_stream)
        stream = LocalStream(link.conn, sid, link.flush, link.name or link.node_id or "?")
        self._local.add(id(link), stream)
        self._idle.clear()
        self.streams_served += 1
        link.flush()
        return stream

    def _register(self, link: Link, node_id: str, touched: set[Link]) -> None:
        key = (link.cluster_id, node_id)
        old = self._links.get(key)
        if old is not None and old is not link:
            log.info("node %s reconnected: the newer connection wins", old.name or node_id)
            with contextlib.suppress(LocalProtocolError):
                old.conn.send_goaway(GoAwayReason.REPLACED, "a newer connection replaced this one")
            old.flush()
            self._links.pop(key)
            self._spawn(_close_after(old, 0.5))
        link.node_id = node_id
        self._links[key] = link
        for other in self.nodes(link.cluster_id):
            if other is not link and other.presence is not None:
                link.conn.send_presence(other.presence)

    def _presence(self, link: Link, presence: Presence, touched: set[Link]) -> None:
        if link.node_id is None:
            return
        link.name = presence.name or link.name
        # A node speaks only for itself, whatever id it put in the frame.
        link.presence = Presence(link.node_id, presence.models, True, 0, presence.name)
        link.last_seen = self.clock()
        if self.on_presence is not None:
            self.on_presence(link)
        for other in self.nodes(link.cluster_id):
            if other is not link:
                other.conn.send_presence(link.presence)
                touched.add(other)

    def _open(
        self,
        link: Link,
        sid: int,
        target_id: str | None,
        end_stream: bool,
        event: StreamOpened,
        touched: set[Link],
    ) -> None:
        target = self._links.get((link.cluster_id, target_id or ""))
        if target is None or target is link or target.draining or self.draining:
            why = (
                "the relay is shutting down"
                if self.draining
                else f"node {target_id} is not connected"
            )
            link.conn.reset_stream(sid, ResetCode.NO_ROUTE, why)
            return
        if not target.conn.can_open_stream():
            link.conn.reset_stream(sid, ResetCode.REFUSED, "the target node is at its stream limit")
            return
        tsid = target.conn.open_stream(event.head, end_stream=end_stream)
        up = Half(link, sid, target, tsid, ended=end_stream)
        down = Half(target, tsid, link, sid)
        pipe = Pipe(up, down)
        self._halves[(id(link), sid)] = up
        self._halves[(id(target), tsid)] = down
        self._pipes[(id(link), sid)] = pipe
        self._pipes[(id(target), tsid)] = pipe
        self._idle.clear()
        self.streams_piped += 1
        touched.add(target)

    def _pump(self, half: Half, touched: set[Link]) -> None:
        """Move what the destination's credit allows; grant the source only that much."""
        touched.add(half.dst)
        touched.add(half.src)
        while half.pending:
            chunk = half.pending[0]
            try:
                n = half.dst.conn.send_data(half.dst_sid, chunk)
            except LocalProtocolError:
                return  # the destination stream is gone; its reset will clean up
            if n:
                half.src.conn.consumed(half.src_sid, n)
            if n < len(chunk):
                half.pending[0] = chunk[n:]
                return
            half.pending.popleft()
        if half.ended:
            with contextlib.suppress(LocalProtocolError):
                half.dst.conn.end_stream(half.dst_sid)
            pipe = self._pipes.get((id(half.src), half.src_sid))
            if pipe is not None:
                self._finish(pipe)

    def _finish(self, pipe: Pipe) -> None:
        if pipe.up.ended and pipe.down.ended and not pipe.up.pending and not pipe.down.pending:
            self._forget(pipe)

    def _forget(self, pipe: Pipe) -> None:
        for half in (pipe.up, pipe.down):
            self._halves.pop((id(half.src), half.src_sid), None)
            self._pipes.pop((id(half.src), half.src_sid), None)
        self._check_idle()

    def _lost(self, link: Link) -> None:
        """The socket is gone: fail its streams on the other side, announce the departure."""
        self._all.discard(link)
        touched: set[Link] = set()
        for event in link.conn.connection_lost():
            if isinstance(event, StreamReset) and self._local.dispatch(id(link), event):
                continue
            if isinstance(event, StreamReset):
                pipe = self._pipes.get((id(link), event.stream_id))
                if pipe is not None:
                    half = self._halves[(id(link), event.stream_id)]
                    with contextlib.suppress(LocalProtocolError):
                        half.dst.conn.reset_stream(
                            half.dst_sid, ResetCode.PEER_GONE, "the serving node disconnected"
                        )
                    touched.add(half.dst)
                    self._forget(pipe)
        if link.node_id is not None and self._links.get((link.cluster_id, link.node_id)) is link:
            del self._links[(link.cluster_id, link.node_id)]
            if link.presence is not None:  # only a node others learned of needs a goodbye
                gone = Presence(link.node_id, (), False, 0, link.name)
                for other in self.nodes(link.cluster_id):
                    other.conn.send_presence(gone)
                    touched.add(other)
            log.info("node %s disconnected", link.name or link.node_id)
        self._check_idle()
        for other in touched:
            other.flush()

    async def drain(self, timeout_s: float) -> None:
        """Refuse new streams, tell every node, wait for running streams (bounded)."""
        self.draining = True
        for link in list(self._all):
            with contextlib.suppress(LocalProtocolError):
                link.conn.send_goaway(GoAwayReason.SHUTDOWN, "the relay is restarting")
            link.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        for link in list(self._all):
            await link.close()


async def _close_after(link: Link, delay: float) -> None:
    """Close a replaced link once its GOAWAY has had a moment to go out."""
    await asyncio.sleep(delay)
    await link.close()
