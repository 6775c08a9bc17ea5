"""What the pump needs of a socket: send one message, receive one message, close.

A tunnel runs over one WebSocket whose binary messages are frames. The node
holds a ``websockets`` client connection, the relay an aiohttp
``WebSocketResponse``, tests an in-memory pair: each is wrapped in a few lines
that satisfy ``Transport``, translating the library's exceptions into
``TransportClosed`` on the way, so nothing in :mod:`quorum.link` knows which
library carries the bytes.
"""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    """One message-oriented, ordered, reliable connection (a WebSocket).

    - ``send(frame)`` writes one binary message; it may wait for the socket to
      drain (that is the connection's own back-pressure).
    - ``receive()`` returns the next binary message.
    - ``close()`` closes the connection; safe to call more than once, never raises.
    - ``stop_reading()`` (not async) takes nothing more in from the peer, at once: the
      first step after a protocol error, so a flood behind the bad frame is never read.
    - ``abort()`` ends a connection whose peer broke the protocol: nothing more is
      read from it, what is queued is still sent, then the socket is closed without
      waiting for the peer. Safe to call more than once, never raises.

    ``send`` and ``receive`` raise ``quorum.errors.TransportClosed`` once the
    connection is closed, by either side or by a failure, and for anything
    that is not a binary message (a text message breaks the tunnel protocol).
    ``receive`` must survive cancellation (the pump cancels it on shutdown).
    """

    async def send(self, frame: bytes) -> None: ...

    async def receive(self) -> bytes: ...

    async def close(self) -> None: ...

    def stop_reading(self) -> None: ...

    async def abort(self) -> None: ...
