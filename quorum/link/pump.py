"""One tunnel connection driven over a transport: the reader, the writer and liveness.

``Pump`` owns a :class:`quorum.protocol.Connection` (already given its HELLO
by the caller) and a ``Transport``, and runs two owned tasks and a timer
until the connection ends:

- the **reader** feeds every received message to the protocol and hands the
  events out: stream events to their ``TunnelStream`` (which only buffers and
  wakes, never waits: the reader never waits on a stream's consumer), a new
  stream the peer opened to ``on_stream``, connection events (HELLO,
  PRESENCE, USAGE, GOAWAY) to ``on_event``;
- the **writer** sends what the protocol queued, control frames first: a
  control frame drained while DATA is still waiting for the socket goes out
  ahead of that DATA (unless a REQUEST is waiting: nothing about a stream may
  overtake the frame that opens it);
- and a **heartbeat** (``keepalive``; a timer, not a task) queues a PING
  about every ``interval`` (with jitter, so a relay's many nodes do not ping
  in lockstep) and calls the peer dead after ``dead_after`` without any frame.

The connection ends when the transport closes, the peer goes silent, it
breaks the protocol (its GOAWAY PROTOCOL_ERROR is flushed first), or
``close`` is called. Then every stream still running fails at once, with the
error its reset code maps to (``resets``), and ``run`` returns why it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable

from quorum.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    StreamRefused,
    TransportClosed,
)
from quorum.protocol import (
    Connection,
    ConnectionState,
    DataReceived,
    Event,
    FrameType,
    GoAwayReason,
    Presence,
    RequestHead,
    ResetCode,
    ResponseReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamWritable,
    Usage,
)

from .keepalive import Ended, EndReason, Heartbeat, Keepalive
from .stream import TunnelStream
from .transport import Transport

log = logging.getLogger("quorum.link")

_RNG = random.Random()  # one for all pumps: each instance holds 2.5 KB of state
FAREWELL_TIMEOUT_S = 2.0
"""How long the last frames and the transport's close may take once the connection ended."""
_IN_ORDER = frozenset({FrameType.DATA, FrameType.REQUEST})
_REQUEST = FrameType.REQUEST


OnEvent = Callable[[Event], None]
OnStream = Callable[[TunnelStream], None]


def _ignore(event: Event) -> None:
    pass


class Pump:
    """Runs one tunnel connection; see the module docstring.

    ``on_stream(stream)`` receives each stream the peer opens, its request head
    in ``stream.head`` (and its end already marked if it carried no body).
    It is called from the reader, so it must not wait: it starts a task, or
    joins the stream to another one. Without ``on_stream`` every stream the
    peer opens is refused. ``on_event`` gets the connection's own events. A
    bug in either is logged and does not end the connection.

    ``peer`` names the far end in the errors of its streams ("the relay").
    ``clock`` (default: the loop's) is what the protocol and liveness read.
    """

    def __init__(
        self,
        conn: Connection,
        transport: Transport,
        *,
        on_event: OnEvent = _ignore,
        on_stream: OnStream | None = None,
        peer: str = "the peer",
        keepalive: Keepalive | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        name: str = "tunnel",
    ) -> None:
        self._conn = conn
        self._transport = transport
        self._on_event = on_event
        self._on_stream = on_stream
        self.peer = peer
        self.keepalive = keepalive or Keepalive()
        self._clock = clock
        self._rng = rng or _RNG
        self.name = name
        self.ended: Ended | None = None
        self._streams: dict[int, TunnelStream] = {}
        # Futures made only while someone waits: an idle relay holds thousands of pumps.
        self._dirty = False  # something is queued on the connection
        self._wakeup: asyncio.Future[None] | None = None  # the writer, waiting for _dirty
        self._slot_waiters: list[asyncio.Future[None]] = []
        self._stop: asyncio.Future[Ended] | None = None
        self._stop_early: Ended | None = None
        self._finished: asyncio.Future[None] | None = None
        self._heartbeat: Heartbeat | None = None

    # -- what the owner uses ------------------------------------------------------------

    @property
    def conn(self) -> Connection:
        return self._conn

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    def flush(self) -> None:
        """Something was queued on the connection: wake the writer."""
        self._dirty = True
        if (wakeup := self._wakeup) is not None and not wakeup.done():
            wakeup.set_result(None)

    def can_open_stream(self) -> bool:
        return self.ended is None and self._conn.can_open_stream()

    async def wait_for_slot(self) -> None:
        """Return once ``open_stream`` would succeed (both HELLOs, room under the
        peer's stream limit); ``TransportClosed`` if the connection ends first.
        The caller bounds the wait; ``StreamRefused`` at once if either side
        sent GOAWAY (this connection will take no new stream again)."""
        while not self.can_open_stream():
            if self.ended is not None:
                raise TransportClosed(self.ended.message)
            if self._conn.state is ConnectionState.DRAINING:
                subject = self.peer[:1].upper() + self.peer[1:]
                raise StreamRefused(f"{subject} takes no new requests (going away).")
            waiter = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)

    def open_stream(
        self, head: RequestHead, *, end_stream: bool = False, peer: str | None = None
    ) -> TunnelStream:
        """Open a stream with ``head`` now; ``StreamRefused`` when the connection
        takes no new stream (ended, draining, or at the peer's limit)."""
        who = peer or self.peer
        if not self.can_open_stream():
            subject = who[:1].upper() + who[1:]
            raise StreamRefused(f"{subject} takes no new requests now.")
        sid = self._conn.open_stream(head, end_stream=end_stream)
        stream = TunnelStream(self, sid, head, local=True, peer=who, sent_eof=end_stream)
        self._streams[sid] = stream
        self.flush()
        return stream

    def send_presence(self, presence: Presence) -> None:
        with contextlib.suppress(LocalProtocolError):  # closed: nobody to tell
            self._conn.send_presence(presence)
            self.flush()

    def send_usage(self, usage: Usage) -> None:
        with contextlib.suppress(LocalProtocolError):
            self._conn.send_usage(usage)
            self.flush()

    def send_goaway(self, reason: GoAwayReason, message: str = "") -> None:
        """No new streams either way from now on; running ones may finish."""
        with contextlib.suppress(LocalProtocolError):
            self._conn.send_goaway(reason, message)
            self.flush()

    async def close(self, message: str = "the tunnel was closed") -> None:
        """End the connection now (its streams fail) and wait until ``run`` returned."""
        ended = Ended(EndReason.STOPPED, message)
        if self._stop is None:
            self._stop_early = self._stop_early or ended
            if self.ended is None:
                with contextlib.suppress(Exception):
                    await self._transport.close()
            return
        if not self._stop.done():
            self._stop.set_result(ended)
        assert self._finished is not None
        await asyncio.shield(self._finished)

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> Ended:
        """Pump until the connection ends; fail its streams; return why it ended."""
        if self._stop is not None:
            raise RuntimeError("a pump runs once")
        loop = asyncio.get_running_loop()
        clock = self._clock = self._clock or loop.time
        self._stop = loop.create_future()
        self._finished = loop.create_future()
        if self._stop_early is not None:
            self._stop.set_result(self._stop_early)
        stop = self._stop
        silent = self.keepalive.dead_after

        def dead() -> None:
            log.info("%s: %s silent for %.0f s: closing", self.name, self.peer, silent)
            if not stop.done():
                stop.set_result(
                    Ended(EndReason.SILENT, f"{self.peer} stopped answering for {silent:g} s")
                )

        heartbeat = self._heartbeat = Heartbeat(
            self._conn, self.keepalive, clock=clock, rng=self._rng, flush=self.flush, on_dead=dead
        )
        heartbeat.start()
        self.flush()  # the HELLO, and whatever else was queued before
        tasks = [
            asyncio.create_task(self._read(), name=f"{self.name}-reader"),
            asyncio.create_task(self._write(), name=f"{self.name}-writer"),
        ]
        ended = Ended(EndReason.STOPPED, "the tunnel was stopped")
        try:
            done, _ = await asyncio.wait([*tasks, self._stop], return_when=asyncio.FIRST_COMPLETED)
            ended = self._outcome(done)
        finally:
            heartbeat.stop()
            if ended.reason is EndReason.PROTOCOL_ERROR:
                self._transport.stop_reading()  # before anything else can let more in
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            broken = ended.reason is EndReason.PROTOCOL_ERROR
            last = self._conn.data_to_send() if broken else []
            self._lost(ended)
            await self._farewell(last, broken)
            self._finished.set_result(None)
        return ended

    def _outcome(self, done: set[asyncio.Future[Ended]]) -> Ended:
        if self._stop in done:  # a close() explains whatever else ended with it
            return self._stop.result()
        for task in done:
            if task.cancelled():
                continue
            if (exc := task.exception()) is not None:
                log.error("%s: %s failed", self.name, task, exc_info=exc)
                return Ended(EndReason.FAILED, "the tunnel failed (a bug; see the log)")
            return task.result()
        return Ended(EndReason.STOPPED, "the tunnel was stopped")

    async def _farewell(self, last: list[bytes], broken: bool) -> None:
        """Send the last frames (a GOAWAY after a protocol error) and close, bounded.

        A peer that broke the protocol is aborted: nothing more is read from it."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FAREWELL_TIMEOUT_S):
                for frame in last:
                    await self._transport.send(frame)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FAREWELL_TIMEOUT_S):
                if broken:
                    await self._transport.abort()
                else:
                    await self._transport.close()

    def _lost(self, ended: Ended) -> None:
        """The connection is over: every stream still running fails now."""
        self.ended = ended
        for event in self._conn.connection_lost():
            if isinstance(event, StreamReset) and (s := self._streams.get(event.stream_id)):
                self._guarded(s._on_reset, event.code, ended.message, False)
        self._streams.clear()
        self._slots_changed()
        self.flush()

    async def _read(self) -> Ended:
        receive, conn, clock = self._transport.receive, self._conn, self._clock
        heartbeat = self._heartbeat
        assert clock is not None and heartbeat is not None
        while True:
            try:
                data = await receive()
            except TransportClosed as exc:
                return Ended(EndReason.CLOSED, f"the tunnel connection was lost ({exc})")
            now = clock()
            heartbeat.heard(now)
            try:
                events = conn.receive_frame(data, now)
            except RemoteProtocolError as exc:
                log.warning("%s: %s broke the protocol: %s", self.name, self.peer, exc)
                return Ended(EndReason.PROTOCOL_ERROR, f"{self.peer} broke the tunnel protocol")
            self._dispatch(events)
            self.flush()

    async def _write(self) -> Ended:
        send, conn = self._transport.send, self._conn
        held: deque[bytes] = deque()  # drained, waiting for the socket, in order
        requests = 0  # REQUEST frames in `held`
        while True:
            if not held and not self._dirty:
                self._wakeup = asyncio.get_running_loop().create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
                # One turn of the loop first: what else is ready now (the next chunks of an
                # answer, already read) joins the same DATA frames, so fewer messages go out.
                await asyncio.sleep(0)
            self._dirty = False
            if late := conn.take_events():
                self._dispatch(late)
            try:
                for frame in conn.data_to_send():
                    if requests or frame[1] in _IN_ORDER:
                        held.append(frame)
                        requests += frame[1] == _REQUEST
                    else:
                        await send(frame)
                if held:
                    frame = held.popleft()
                    requests -= frame[1] == _REQUEST
                    await send(frame)
            except TransportClosed as exc:
                return Ended(EndReason.CLOSED, f"the tunnel connection was lost ({exc})")

    # -- events ------------------------------------------------------------------------------

    def forget(self, stream: TunnelStream) -> None:
        """A stream is over both ways: it leaves the table, freeing a slot."""
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]
        self._slots_changed()

    def _slots_changed(self) -> None:
        """Streams came or went (or the connection ended): wake whoever waits for a slot."""
        waiters, self._slot_waiters = self._slot_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _dispatch(self, events: list[Event]) -> None:
        streams = self._streams
        for event in events:
            match event:
                case DataReceived(sid, data):
                    if (s := streams.get(sid)) is not None:
                        self._guarded(s._on_data, data)
                    else:  # nobody will read it: give the credit back
                        with contextlib.suppress(LocalProtocolError):
                            self._conn.consumed(sid, len(data))
                case StreamWritable(sid):
                    if (s := streams.get(sid)) is not None:
                        self._guarded(s._on_writable)
                case StreamEnded(sid):
                    if (s := streams.get(sid)) is not None:
                        self._guarded(s._on_end)
                case ResponseReceived(sid, head, _):
                    if (s := streams.get(sid)) is not None:
                        self._guarded(s._on_response, head)
                case StreamReset(sid, code, message, remote):
                    if (s := streams.pop(sid, None)) is not None:
                        self._guarded(s._on_reset, code, message, remote)
                case StreamOpened(sid, head, end_stream):
                    self._accept(sid, head, end_stream)
                case _:
                    self._guarded(self._on_event, event)
        self._slots_changed()

    def _accept(self, sid: int, head: RequestHead, end_stream: bool) -> None:
        # No body: the StreamEnded that follows finds the stream ended already.
        stream = TunnelStream(self, sid, head, local=False, peer=self.peer, received_eof=end_stream)
        self._streams[sid] = stream
        if self._on_stream is None:
            stream.reset(ResetCode.REFUSED, "this end accepts no streams")
        else:
            self._guarded(self._on_stream, stream)

    def _guarded(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except LocalProtocolError as exc:
            # A stream closed under a handler (a reset crossed its frame): nothing to do.
            log.debug("%s: %s", self.name, exc)
        except Exception:
            log.exception("%s: a stream or connection handler failed", self.name)
