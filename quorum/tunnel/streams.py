"""Streams over the tunnel as asyncio objects: what the proxy reads, what the node serves.

Credit: a received chunk is granted back to the relay (``consumed``) only when
the reader asks for the next one, i.e. after the proxy wrote it to its own
client. A slow client therefore slows only its own stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from multidict import CIMultiDict

from quorum.errors import LocalProtocolError, NoReachableHolder, UpstreamFailed
from quorum.protocol import Connection, ResetCode

SEND_SLICE = 256 * 1024


class StreamRefused(NoReachableHolder):
    """The relay or the target refused the stream before processing it: safe to retry."""


class StreamBroken(UpstreamFailed):
    """The stream was reset (or the tunnel lost) after the response had started."""


END = object()


@dataclass(eq=False)
class OutStream:
    """A request this node sent through the relay; the response arrives into it."""

    conn: Connection
    sid: int
    flush: Callable[[], None]
    response: asyncio.Future[tuple[int, list[tuple[str, str]]]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    chunks: asyncio.Queue[bytes | object | BaseException] = field(default_factory=asyncio.Queue)
    writable: asyncio.Event = field(default_factory=asyncio.Event)
    done: bool = False

    async def write(self, data: bytes) -> None:
        """Send ``data`` as the request body, waiting for credit as needed."""
        view = memoryview(data)
        while view:
            # Offer at most one window at a time: the rest would only be copied for nothing.
            offered = bytes(view[:SEND_SLICE])
            n = self.conn.send_data(self.sid, offered)
            self.flush()
            view = view[n:]
            if n < len(offered):  # out of credit: StreamWritable will say when to go on
                self.writable.clear()
                await self.writable.wait()


class TunnelResponse:
    """The answer to an ``OutStream``, shaped like what the proxy needs of any upstream."""

    def __init__(self, stream: OutStream, status: int, headers: list[tuple[str, str]]) -> None:
        self._stream = stream
        self.status = status
        self.headers: CIMultiDict[str] = CIMultiDict(headers)
        length = self.headers.get("Content-Length")
        self.content_length = int(length) if length and length.isdigit() else None

    async def chunks(self) -> AsyncIterator[bytes]:
        stream = self._stream
        pending = 0
        while True:
            if pending:
                with contextlib.suppress(LocalProtocolError):
                    stream.conn.consumed(stream.sid, pending)
                stream.flush()
            item = await stream.chunks.get()
            if item is END:
                stream.done = True
                return
            if isinstance(item, BaseException):
                stream.done = True
                raise item
            assert isinstance(item, bytes)
            pending = len(item)
            yield item

    async def read(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise UpstreamFailed("the answer through the relay is too large")
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Stop the stream if it is still running (the client went away)."""
        stream = self._stream
        if not stream.done:
            stream.done = True
            with contextlib.suppress(LocalProtocolError):
                stream.conn.reset_stream(stream.sid, ResetCode.CANCEL, "the client went away")
            stream.flush()


@dataclass(eq=False)
class InStream:
    """A request the relay brought to this node; its body is gathered, then served."""

    sid: int
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)
    writable: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    reset: bool = False
