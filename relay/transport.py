"""A node's tunnel WebSocket (aiohttp, server side) as a ``quorum.link`` transport.

aiohttp's messages and exceptions stop here: a binary message is a frame;
a close, an error or a text message (which breaks the tunnel protocol) ends
the transport with ``TransportClosed``.
"""

from __future__ import annotations

import logging

from aiohttp import WSMsgType, web

from quorum.errors import TransportClosed

log = logging.getLogger("relay.transport")

_CLOSED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})


class WebSocketTransport:
    def __init__(self, ws: web.WebSocketResponse, remote: str) -> None:
        self._ws = ws
        self._remote = remote

    async def send(self, frame: bytes) -> None:
        try:
            await self._ws.send_bytes(frame)
        except (OSError, RuntimeError) as exc:  # closing, or closed under us
            raise TransportClosed(f"cannot write: {type(exc).__name__}") from None

    async def receive(self) -> bytes:
        try:
            msg = await self._ws.receive()
        except RuntimeError as exc:  # read again after the close
            raise TransportClosed(str(exc)) from None
        if msg.type is WSMsgType.BINARY:
            data: bytes = msg.data
            return data
        if msg.type is WSMsgType.TEXT:
            log.warning("node %s sent a text message; closing", self._remote)
            raise TransportClosed("the node sent a text message")
        if msg.type is WSMsgType.ERROR:
            log.warning("node %s: websocket error: %s", self._remote, self._ws.exception())
            raise TransportClosed(f"websocket error: {self._ws.exception()}")
        if msg.type in _CLOSED:
            raise TransportClosed("the node closed the connection")
        raise TransportClosed(f"unexpected websocket message {msg.type.name}")

    async def close(self) -> None:
        await self._ws.close()
