"""One relay-to-relay connection's transport: tunnel frames as bus messages.

A ``PeerTransport`` satisfies ``quorum.link.Transport`` for the pump of one
connection to one other relay: ``send`` publishes each frame on the peer's
subject for this session, ``receive`` returns the frames the mesh delivered
from the peer's (``deliver``, called by the bus handler, never waits). What
waits here is bounded by the tunnel's own credit: a peer may only send what
the connection's windows allow, and control frames.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from quorum.errors import TransportClosed

Publish = Callable[[bytes], Awaitable[None]]


class PeerTransport:
    __slots__ = ("_closed", "_deaf", "_frames", "_publish", "_waiter")

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._frames: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._deaf = False  # after the peer broke the protocol: what it sends is dropped

    def deliver(self, frame: bytes) -> None:
        if self._closed or self._deaf:
            return
        self._frames.append(frame)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def send(self, frame: bytes) -> None:
        if self._closed:
            raise TransportClosed("the relay-to-relay connection is closed")
        await self._publish(frame)

    async def receive(self) -> bytes:
        while not self._frames:
            if self._closed:
                raise TransportClosed("the relay-to-relay connection is closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._frames.popleft()

    async def close(self) -> None:
        self._closed = True
        self._frames.clear()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def stop_reading(self) -> None:
        self._deaf = True
        self._frames.clear()

    async def abort(self) -> None:
        await self.close()
