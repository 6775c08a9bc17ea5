"""Helpers for the node's aiohttp client session: request bodies, and sockets that notice
a dead peer."""

from __future__ import annotations

import socket
from typing import Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

# aiohttp warns (ResourceWarning) when given more than 1 MiB as raw bytes: it would write
# them in one go. Larger bodies are sent in slices of a view instead: never copied (a
# BytesIO shares a bytes object's buffer, but copies a bytearray's, which is how the node
# holds a body it read), and written as the socket drains.
_RAW_BODY_LIMIT = 1 << 20
_SLICE = 1 << 20


class BufferPayload(Payload):
    """A large request body, written in slices of a memoryview over it."""

    def __init__(self, value: bytes | bytearray) -> None:
        super().__init__(value, content_type="application/octet-stream")
        self._size = len(value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return bytes(self._value)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = memoryview(self._value)
        if content_length is not None:
            view = view[:content_length]
        for at in range(0, len(view), _SLICE):
            await writer.write(view[at : at + _SLICE])


def request_body(payload: bytes | bytearray) -> bytes | bytearray | BufferPayload:
    """``payload`` in the form aiohttp sends best."""
    return payload if len(payload) <= _RAW_BODY_LIMIT else BufferPayload(payload)


# A peer whose machine vanished (cable pulled, laptop asleep) sends no RST: without
# these, a request on a pooled connection to it would wait for the header timeout
# (minutes). Keepalive probes are answered by a live peer's kernel whatever its
# engine is doing, so a slow generation is never cut; a dead peer is noticed within
# about DEAD_PEER_S, and the request fails over or ends with a visible error.
DEAD_PEER_S = 20


def socket_factory(addr_info: tuple[Any, ...]) -> socket.socket:
    """Sockets for the node's outgoing connections, with dead-peer detection."""
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", DEAD_PEER_S // 2),
            ("TCP_KEEPINTVL", DEAD_PEER_S // 4),
            ("TCP_KEEPCNT", 2),
            ("TCP_USER_TIMEOUT", DEAD_PEER_S * 1000),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        pass  # a platform without some option: the header timeout still bounds the wait
    return sock
