"""A node's tunnel WebSocket (aiohttp, server side) as a ``quorum.link`` transport.

aiohttp's messages and exceptions stop here: a binary message is a frame;
a close, an error or a text message (which breaks the tunnel protocol) ends
the transport with ``TransportClosed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from quorum.errors import TransportClosed

log = logging.getLogger("relay.transport")

_CLOSED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})
ABORT_WAIT_S = 0.25
"""How long an aborted node's close frame may take to go out before the socket closes."""


class WebSocketTransport:
    def __init__(
        self, ws: web.WebSocketResponse, remote: str, socket: asyncio.Transport | None = None
    ) -> None:
        self._ws = ws
        self._remote = remote
        self._socket = socket

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

    def stop_reading(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(RuntimeError):  # closed already
                self._socket.pause_reading()

    async def abort(self) -> None:
        # aiohttp's close() reads on until the node's close frame, discarding what comes
        # before it, and resumes a paused socket to do so: on uvloop a flood behind a broken
        # frame was read at a gigabyte a second for the close frame's whole wait. So no close
        # handshake: reading stops, what was written (the GOAWAY) is flushed, and the socket
        # closes. Only without the socket (never in the relay) does aiohttp close it.
        self.stop_reading()
        if self._socket is not None:
            self._socket.close()
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(ABORT_WAIT_S):
                await self._ws.close(code=WSCloseCode.PROTOCOL_ERROR)
