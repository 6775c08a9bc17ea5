from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from quorum.http import (
    DEAD_PEER_S,
    BufferPayload,
    ConnectionLost,
    EngineConnection,
    EnginePool,
    HttpProtocolError,
    request_body,
    socket_factory,
)


def test_outgoing_sockets_detect_dead_peers() -> None:
    info = socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)[0]
    with socket_factory(info) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        user_timeout = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        assert user_timeout == DEAD_PEER_S * 1000
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) <= DEAD_PEER_S


def test_large_bodies_are_streamed_not_copied_at_once() -> None:
    assert request_body(b"x" * 10) == b"x" * 10
    held = bytearray(b"x" * (2 << 20) + b"y")  # how the node holds a body it read
    big = request_body(held)
    assert isinstance(big, BufferPayload) and big.size == len(held)
    held[-1:] = b"z"  # the payload is a view of the same buffer, never a copy
    assert asyncio.run(big.as_bytes()).endswith(b"z")

    class Writer:
        def __init__(self) -> None:
            self.pieces: list[int] = []

        async def write(self, chunk: memoryview) -> None:
            self.pieces.append(len(chunk))

    writer = Writer()
    asyncio.run(big.write(writer))  # type: ignore[arg-type]
    assert writer.pieces == [1 << 20, 1 << 20, 1]  # in slices, as the socket drains


# --- the lean client for engines on this machine ----------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEAD = b"POST /v1/x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n"


async def _server(script: Script) -> tuple[asyncio.Server, int, list[int]]:
    """A server running ``script`` per connection; the list counts connections."""
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def _ask(pool: EnginePool, port: int, timeout_s: float = 5) -> EngineConnection:
    conn, _ = await pool.connection("127.0.0.1", port, 5)
    conn.send(HEAD, b"{}")
    await conn.head(timeout_s)
    return conn


async def _body(conn: EngineConnection) -> bytes:
    parts = []
    while chunk := await conn.next_chunk():
        parts.append(chunk)
    return b"".join(parts)


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(2)


async def test_lean_client_reuses_a_kept_alive_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b'Content-Length: 7\r\n\r\n{"a":1}')
        await reader.read()

    server, port, seen = await _server(script)
    pool = EnginePool()
    try:
        for _ in range(2):
            conn = await _ask(pool, port)
            assert conn.status == 200 and conn.content_length == 7
            assert conn.headers["content-type"] == "application/json"
            assert await _body(conn) == b'{"a":1}'
            conn.release()
        assert len(seen) == 1
    finally:
        pool.close()
        server.close()


async def test_lean_client_decodes_chunks_split_anywhere() -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        for i in range(len(answer)):
            writer.write(answer[i : i + 1])
            await writer.drain()
        await reader.read()

    server, port, _ = await _server(script)
    pool = EnginePool()
    try:
        conn = await _ask(pool, port)
        assert conn.status == 200 and conn.content_length is None
        assert await _body(conn) == b"hello world"
        assert conn.complete
        conn.release()
    finally:
        pool.close()
        server.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"this is not http\r\n\r\n", HttpProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", HttpProtocolError),
        (b"HTTP/1.1 200 OK\r\n", ConnectionLost),
    ],
)
async def test_lean_client_refuses_what_is_not_http(answer: bytes, error: type) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(answer)
        await writer.drain()

    server, port, _ = await _server(script)
    pool = EnginePool()
    try:
        with pytest.raises(error):
            await _ask(pool, port)
    finally:
        pool.close()
        server.close()


async def test_lean_client_body_cut_short_is_an_error_and_until_close_is_not() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nall of it")
        await writer.drain()

    pool = EnginePool()
    server, port, _ = await _server(cut)
    try:
        conn = await _ask(pool, port)
        assert await conn.next_chunk() == b"abc"
        with pytest.raises(ConnectionLost):
            await conn.next_chunk()
        conn.release()
    finally:
        server.close()
    server, port, seen = await _server(until_close)
    try:
        conn = await _ask(pool, port)
        assert await _body(conn) == b"all of it"
        conn.release()  # not reusable: the body ended with the connection
        conn = await _ask(pool, port)
        conn.release()
        assert len(seen) == 2
    finally:
        pool.close()
        server.close()


async def test_lean_client_head_timeout_closes_the_connection() -> None:
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await reader.read()  # until the client goes away
        closed.set()

    server, port, _ = await _server(silent)
    pool = EnginePool()
    try:
        with pytest.raises(TimeoutError):
            await _ask(pool, port, timeout_s=0.05)
        await asyncio.wait_for(closed.wait(), 5)
    finally:
        pool.close()
        server.close()
