"""Streams the relay itself opens on a node's tunnel, to serve its public ``/v1``.

The relay is the opener (even stream ids): it sends the request head and
body, then reads the node's response. A ``LocalStream`` is the
``quorum.link.TunnelStream`` the hub opened, with the few calls the public
handler makes. Credit works as in a pipe: a chunk of the answer is granted
back to the node only when the reader asks for the next one, i.e. after the
relay wrote it to its HTTP client, so a slow client holds at most one window
and slows nothing else.

Failures arrive as ``quorum.errors`` values (``quorum.link.resets``):
``StreamRefused`` before the node processed anything (safe to try another
node), ``NoReachableHolder`` or ``UpstreamFailed`` before the response head,
``StreamBroken`` after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

from quorum.errors import ApiError
from quorum.link import TunnelStream
from quorum.protocol import ResetCode, ResponseHead


class LocalStream:
    def __init__(self, stream: TunnelStream, node_name: str) -> None:
        self.stream = stream
        self.node_name = node_name

    @property
    def response(self) -> Awaitable[ResponseHead]:
        """The node's response head; raises the stream's error if it died first."""
        return self.stream.response()

    async def send_body(self, data: bytes) -> None:
        """Send the request body and end it, waiting for credit as needed.

        Returns early if the stream dies meanwhile; ``response`` then says why.
        """
        try:
            await self.stream.send_all(data)
            await self.stream.send_eof()
        except ApiError:
            pass

    async def body(self) -> AsyncIterator[bytes]:
        """The answer's body, chunk by chunk; credit returns as each chunk is passed on."""
        async for chunk in self.stream:
            yield chunk

    def cancel(self, why: str) -> None:
        """Stop the stream if it still runs (the client went away, or a timeout)."""
        self.stream.reset(ResetCode.CANCEL, why)
