"""The tunnel's WebSocket to a relay is closed for good even when the relay never answers the
close: a farewell cut short by its time limit leaves no socket open behind it."""

from __future__ import annotations

import asyncio

import pytest
from websockets.utils import accept_key

from quorum.tunnel.dial import WebSocketTransport, dial_relay


async def deaf_relay() -> tuple[asyncio.Server, str, asyncio.Event]:
    """A server that accepts the WebSocket upgrade, then reads on and never answers anything;
    the event is set once the client's side of the socket is gone."""
    gone = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = accept_key(key).encode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await writer.drain()
        while await reader.read(65536):  # the close frame arrives; no answer ever goes back
            pass
        gone.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/tunnel", gone


async def test_a_close_cut_short_still_closes_the_socket() -> None:
    server, url, gone = await deaf_relay()
    try:
        transport = await dial_relay(url, "qc_token")
        assert isinstance(transport, WebSocketTransport)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):  # as the pump's farewell bounds it
                await transport.close()
        async with asyncio.timeout(5):
            await gone.wait()  # the relay saw the socket end
    finally:
        server.close()
        await server.wait_closed()
