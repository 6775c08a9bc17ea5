"""Length-prefixed frames inside a TLS stream: the framing of every request carried end to
end through the relay (``quorum.tunnel.e2e`` between nodes, ``relay.hop`` from the relay).

A frame is a 4-byte big-endian length and that many bytes. A request is one
frame with its head (JSON), its body in frames of at most ``FRAME_MAX`` bytes,
and an empty frame that ends it; an answer the same way back. Frames are read
one at a time, so the tunnel's flow-control windows still bound what either end
holds.
"""

from __future__ import annotations

import struct

from quorum.errors import StreamBroken
from quorum.secure.stream import TLSFailed, TLSStream

FRAME_MAX = 256 * 1024
HEAD_MAX = 256 * 1024
_LENGTH = struct.Struct(">I")


class Framed:
    """Length-prefixed frames over a :class:`TLSStream`."""

    __slots__ = ("_buffer", "_tls")

    def __init__(self, tls: TLSStream) -> None:
        self._tls = tls
        self._buffer = bytearray()

    async def write(self, *payloads: bytes) -> None:
        """Each payload as a frame, all in one TLS write (a small request's head, body and
        end: one record, not three)."""
        if len(payloads) == 1:
            data = _LENGTH.pack(len(payloads[0])) + payloads[0]
        else:
            data = b"".join(part for p in payloads for part in (_LENGTH.pack(len(p)), p))
        await self._tls.send_all(data)

    async def write_body(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            await self.write(bytes(view[:FRAME_MAX]))
            view = view[FRAME_MAX:]

    async def read_or_end(self, limit: int = FRAME_MAX) -> bytes | None:
        """The next frame; None if the stream ended cleanly where a frame would begin."""
        if not self._buffer:
            try:
                data = await self._tls.receive_some()
            except TLSFailed as exc:
                raise StreamBroken(f"the stream through the relay broke: {exc}") from None
            if not data:
                return None
            self._buffer += data
        return await self.read(limit)

    async def read(self, limit: int = FRAME_MAX) -> bytes:
        await self._fill(_LENGTH.size)
        (size,) = _LENGTH.unpack_from(self._buffer)
        if size > limit:
            raise StreamBroken(f"a frame of {size} bytes through the relay is over {limit}")
        await self._fill(_LENGTH.size + size)
        frame = bytes(self._buffer[_LENGTH.size : _LENGTH.size + size])
        del self._buffer[: _LENGTH.size + size]
        return frame

    async def read_batch(self, most: int = FRAME_MAX) -> bytes:
        """The next body frame joined with the body frames after it that have already
        arrived whole (up to ``most`` bytes): a stream of small chunks (an SSE answer) is
        read, and written on, in a few pieces rather than one per chunk. An empty frame (the
        end) is never joined: the next call returns it."""
        first = await self.read()
        if not first:
            return first
        buffer, parts, size, at = self._buffer, [first], len(first), 0
        while size < most and len(buffer) - at >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, at)
            end = at + _LENGTH.size + length
            if length == 0 or length > FRAME_MAX or end > len(buffer):
                break  # the end, one too large (read() says so), or not all here yet
            parts.append(bytes(buffer[at + _LENGTH.size : end]))
            size += length
            at = end
        if at:
            del buffer[:at]
        return first if len(parts) == 1 else b"".join(parts)

    async def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            try:
                data = await self._tls.receive_some()
            except TLSFailed as exc:
                raise StreamBroken(f"the stream through the relay broke: {exc}") from None
            if not data:
                raise StreamBroken("the stream through the relay ended in the middle of a frame")
            self._buffer += data
