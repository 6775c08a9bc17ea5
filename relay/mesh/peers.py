"""One relay-to-relay connection's transport: tunnel frames as bus messages.

A ``PeerTransport`` satisfies ``quorum.link.Transport`` for the pump of one
connection to one other relay: ``send`` publishes each frame on the peer's
subject for this session, ``receive`` returns the frames the mesh delivered
from the peer's (``deliver``, called by the bus handler, never waits). What
waits here is bounded by the tunnel's own credit: a peer may only send what
the connection's windows allow, and control frames.

A frame longer than ``PIECE`` bytes may go as several messages: pieces of
exactly ``PIECE`` bytes, then the rest (an empty message when nothing is left).
So every message stays under 64 KiB with NATS's own framing: nats-server reads at
most 64 KiB at a time, and a message that does not fit costs it about twice the
CPU (a full 64 KiB DATA frame is 7 bytes over). Only between relays that both
say so in their HELLO (``PIECES``): the sender starts once it heard the peer's,
with one empty message first, and the receiver joins pieces only after that
message, so a frame of exactly ``PIECE`` bytes from a relay of an earlier
version (which sends whole frames, and never an empty message) is never taken
for a piece. Pieces are joined back in order (NATS keeps one connection's order
on a subject); a frame never legally exceeds ``MAX_FRAME_SIZE``, so what grows
past it is handed on as it is, for the protocol to refuse.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from quorum.errors import TransportClosed
from quorum.protocol import MAX_FRAME_SIZE

Publish = Callable[[bytes], Awaitable[None]]
PIECE = 63 * 1024
"""Bytes of a frame per message at most: with the subject and NATS's own framing, the
message stays under 64 KiB."""


PIECES = "mesh-pieces"
"""What a relay's HELLO on a mesh connection says when it sends and joins pieces."""


class PeerTransport:
    __slots__ = (
        "_closed",
        "_deaf",
        "_joining",
        "_messages",
        "_pieces",
        "_publish",
        "_splitting",
        "_switch",
        "_waiter",
    )

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._messages: deque[bytes] = deque()
        self._pieces: list[bytes] = []  # the first pieces of a frame not complete yet
        self._joining = False  # the peer switched to pieces (its empty message said so)
        self._splitting = False  # we send pieces: the peer's HELLO said it joins them
        self._switch = False  # the empty message that tells the peer so is still to go
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._deaf = False  # after the peer broke the protocol: what it sends is dropped

    def peer_joins_pieces(self) -> None:
        """The peer's HELLO said it joins pieces: frames from now on may go in pieces,
        after one empty message that tells it so."""
        if not self._splitting:
            self._splitting = self._switch = True

    def deliver(self, message: bytes) -> None:
        if self._closed or self._deaf:
            return
        self._messages.append(message)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def send(self, frame: bytes) -> None:
        if self._closed:
            raise TransportClosed("the relay-to-relay connection is closed")
        if self._switch:
            self._switch = False
            await self._publish(b"")
        if not self._splitting or len(frame) < PIECE:
            await self._publish(frame)
            return
        for at in range(0, len(frame) + 1, PIECE):
            await self._publish(frame[at : at + PIECE])

    async def receive(self) -> bytes:
        pieces = self._pieces
        while True:
            message = await self._next()
            if not message and not pieces:
                self._joining = True  # the peer's pieces may come from here on
                continue
            if (
                self._joining
                and len(message) == PIECE
                and (len(pieces) + 1) * PIECE <= MAX_FRAME_SIZE
            ):
                pieces.append(message)
                continue
            if pieces:
                pieces.append(message)
                message = b"".join(pieces)
                pieces.clear()
            return message

    async def _next(self) -> bytes:
        while not self._messages:
            if self._closed:
                raise TransportClosed("the relay-to-relay connection is closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._messages.popleft()

    async def close(self) -> None:
        self._closed = True
        self._messages.clear()
        self._pieces.clear()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def stop_reading(self) -> None:
        self._deaf = True
        self._messages.clear()
        self._pieces.clear()

    async def abort(self) -> None:
        await self.close()
