"""Streams the relay itself opens on a node's tunnel, to serve its public ``/v1``.

The relay is the opener (even stream ids): it sends the request head and
body, then reads the node's response. Credit works as in a pipe: a chunk of
the answer is granted back to the node (``consumed``) only when the reader
asks for the next one, i.e. after the relay wrote it to its HTTP client, so
a slow client holds at most one window and slows nothing else.

The hub feeds events into a ``LocalStream`` (``on_*`` methods, never
blocking); the public handler awaits ``response`` and iterates ``body()``.
Failures arrive as ``quorum.errors`` values: ``StreamRefused`` before the
node processed anything (safe to try another node), ``NoReachableHolder`` or
``UpstreamFailed`` before the response head, ``StreamBroken`` after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from quorum.errors import LocalProtocolError, NoReachableHolder, UpstreamFailed
from quorum.protocol import (
    Connection,
    DataReceived,
    Event,
    ResetCode,
    ResponseHead,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    StreamWritable,
)

_NOT_REACHED = {ResetCode.NO_ROUTE, ResetCode.REFUSED, ResetCode.PEER_GONE}


class StreamRefused(NoReachableHolder):
    """The node refused the stream before processing it: another node may take it."""


class StreamBroken(UpstreamFailed):
    """The answer was cut off after it had started."""


_END = object()


@dataclass(eq=False)
class LocalStream:
    conn: Connection
    sid: int
    flush: Callable[[], None]
    node_name: str
    response: asyncio.Future[ResponseHead] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    chunks: asyncio.Queue[bytes | object | Exception] = field(default_factory=asyncio.Queue)
    writable: asyncio.Event = field(default_factory=asyncio.Event)
    reset: bool = False
    """The stream died (either side reset it, or the tunnel was lost)."""
    finished: bool = False
    """The whole answer was read."""

    # -- what the public handler calls ---------------------------------------

    async def send_body(self, data: bytes) -> None:
        """Send the request body and end it, waiting for credit as needed.

        Returns early if the stream dies meanwhile; ``response`` then says why.
        """
        view = memoryview(data)
        try:
            while view and not self.reset:
                # Copy only what credit allows; with none, offering one byte is what
                # registers the stream for the StreamWritable that returning credit brings.
                size = max(1, self.conn.send_credit(self.sid))
                self.writable.clear()
                n = self.conn.send_data(self.sid, bytes(view[:size]))
                self.flush()
                view = view[n:]
                if view and n < size:
                    await self.writable.wait()
            if not self.reset:
                self.conn.end_stream(self.sid)
                self.flush()
        except LocalProtocolError:
            pass  # reset under us: the reason arrives through ``response``

    async def body(self) -> AsyncIterator[bytes]:
        """The answer's body, chunk by chunk; credit returns as each chunk is passed on."""
        pending = 0
        while True:
            if pending:
                with contextlib.suppress(LocalProtocolError):
                    self.conn.consumed(self.sid, pending)
                self.flush()
                pending = 0
            item = await self.chunks.get()
            if item is _END:
                self.finished = True
                return
            if isinstance(item, Exception):
                raise item
            assert isinstance(item, bytes)
            pending = len(item)
            yield item

    def cancel(self, why: str) -> None:
        """Stop the stream if it still runs (the client went away, or a timeout)."""
        if not self.reset and not self.finished:
            self.reset = True
            with contextlib.suppress(LocalProtocolError):
                self.conn.reset_stream(self.sid, ResetCode.CANCEL, why)
            self.flush()

    # -- what the hub calls ----------------------------------------------------

    def on_response(self, head: ResponseHead, end_stream: bool) -> None:
        if not self.response.done():
            self.response.set_result(head)
        if end_stream:
            self.on_end()

    def on_data(self, data: bytes) -> None:
        self.chunks.put_nowait(data)

    def on_end(self) -> None:
        self.chunks.put_nowait(_END)

    def on_writable(self) -> None:
        self.writable.set()

    def on_reset(self, code: ResetCode, message: str) -> None:
        self.reset = True
        if not self.response.done():
            error: Exception
            if code is ResetCode.REFUSED:
                error = StreamRefused(f"node {self.node_name} refused the request: {message}.")
            elif code in _NOT_REACHED:
                error = NoReachableHolder(f"node {self.node_name} could not be reached: {message}.")
            else:
                error = UpstreamFailed(f"node {self.node_name} failed the request: {message}.")
            self.response.set_exception(error)
            # Nobody may be waiting yet (the body is still being sent): mark it retrieved.
            self.response.exception()
        else:
            self.chunks.put_nowait(
                StreamBroken(f"the answer from node {self.node_name} was cut off: {message}.")
            )
        self.writable.set()


class LocalStreams:
    """The relay's own streams, by (id of the link's object, stream id)."""

    def __init__(self) -> None:
        self._streams: dict[tuple[int, int], LocalStream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, link_key: int, stream: LocalStream) -> None:
        self._streams[(link_key, stream.sid)] = stream

    def dispatch(self, link_key: int, event: Event) -> bool:
        """Hand ``event`` to its stream; False when it is not one of the relay's streams."""
        sid = getattr(event, "stream_id", None)
        if not isinstance(sid, int) or (stream := self._streams.get((link_key, sid))) is None:
            return False
        match event:
            case ResponseReceived(_, head, end_stream):
                stream.on_response(head, end_stream)
                if end_stream:
                    del self._streams[(link_key, sid)]
            case DataReceived(_, data):
                stream.on_data(data)
            case StreamEnded():
                stream.on_end()
                del self._streams[(link_key, sid)]
            case StreamWritable():
                stream.on_writable()
            case StreamReset(_, code, message, _):
                stream.on_reset(code, message)
                del self._streams[(link_key, sid)]
            case _:
                return False
        return True
