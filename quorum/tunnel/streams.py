"""The answer to a request sent through the relay, as the proxy reads any upstream.

Credit: a received chunk is granted back to the relay only when the proxy
asks for the next one, i.e. after it wrote this one to its own client
(``TunnelStream``'s rule). A slow client therefore slows only its own stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from multidict import CIMultiDict

from quorum.errors import UpstreamFailed
from quorum.link import TunnelStream
from quorum.protocol import ResetCode, ResponseHead


class TunnelResponse:
    """Status, headers, body chunks and ``release``: the proxy's ``Upstream`` shape."""

    def __init__(self, stream: TunnelStream, head: ResponseHead) -> None:
        self._stream = stream
        self.status = head.status
        self.headers: CIMultiDict[str] = CIMultiDict(head.headers)
        length = self.headers.get("Content-Length")
        self.content_length = int(length) if length and length.isdigit() else None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; ``StreamBroken`` (an ``UpstreamFailed``) if it is cut off."""
        async for chunk in self._stream:
            yield chunk

    async def read(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self._stream:
            size += len(chunk)
            if size > limit:
                raise UpstreamFailed("the answer through the relay is too large")
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Stop the stream if it still runs (the client went away); give back its credit."""
        self._stream.reset(ResetCode.CANCEL, "the client went away")
