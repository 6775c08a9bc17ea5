"""In-memory byte pipes: what a tunnel stream is to ``TLSStream``, for the TLS tests."""

from __future__ import annotations

import asyncio


class End:
    """One end of an in-memory byte pipe (what a tunnel stream is to TLSStream)."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self._in, self._out = inbox, outbox

    async def send_all(self, data: bytes) -> None:
        await self._out.put(bytes(data))

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._in.get()


def pipe(end: type[End] = End) -> tuple[End, End]:
    a: asyncio.Queue[bytes] = asyncio.Queue()
    b: asyncio.Queue[bytes] = asyncio.Queue()
    return end(a, b), end(b, a)
