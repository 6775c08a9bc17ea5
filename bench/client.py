"""A minimal HTTP/1.1 keep-alive client connection, cheap enough to load a proxy with.

One :class:`Connection` carries one request at a time. It writes pre-encoded
request bytes and parses the answer as it arrives: a ``Content-Length`` body
or a chunked one (trailers skipped). For a streamed answer it counts SSE
events (each ends with a blank line, ``\\n\\n``) and stamps the first and the
last, so a load generator gets time to first event and events per second
without decoding JSON.

Times are ``time.perf_counter()`` taken in ``data_received``, before the
waiting coroutine is scheduled, so they measure the wire, not this loop's
queue.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import time
from dataclasses import dataclass
from typing import cast


class State(enum.IntEnum):
    HEAD = 0
    BODY = 1
    CHUNK_SIZE = 2
    CHUNK_DATA = 3
    CHUNK_END = 4
    TRAILER = 5


@dataclass(slots=True)
class Window:
    """Events counted while ``time.perf_counter() <= deadline``, over every connection."""

    deadline: float
    events: int = 0


@dataclass(slots=True)
class Exchange:
    """One request and what came back."""

    sent: float
    status: int = 0
    first_event: float | None = None
    last_event: float | None = None
    end: float = 0.0
    events: int = 0
    body_bytes: int = 0


class ConnectionClosed(Exception):
    """The server closed the connection before the answer was complete."""


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 this client understands."""


def request_bytes(
    method: str, path: str, host: str, body: bytes = b"", headers: tuple[str, ...] = ()
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._state = State.HEAD
        self._remaining = 0
        self._close_after = False
        self._count_events = False
        self._tail = b""
        self._window: Window | None = None
        self._exchange: Exchange | None = None
        self._waiter: asyncio.Future[Exchange] | None = None

    @classmethod
    async def open(cls, host: str, port: int, tls: ssl.SSLContext | None = None) -> Connection:
        """A connection to ``host:port``; with ``tls``, TLS over it (the loop's own)."""
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port, ssl=tls)
        return protocol

    @property
    def usable(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionClosed(str(exc) if exc else "closed by peer"))

    def send(
        self, request: bytes, *, count_events: bool = False, window: Window | None = None
    ) -> asyncio.Future[Exchange]:
        """Write ``request``; the future resolves when the whole answer has arrived."""
        if self._transport is None or self._waiter is not None:
            raise ConnectionClosed("the connection is closed or busy")
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self._exchange = Exchange(sent=time.perf_counter())
        self._count_events = count_events
        self._window = window
        self._tail = b""
        self._transport.write(request)
        return waiter

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self._exchange is None:
            self._fail(ProtocolError("data with no request outstanding"))
            return
        self._buf += data
        try:
            self._parse(now)
        except (ValueError, IndexError) as exc:
            self._fail(ProtocolError(f"unparsable answer: {exc}"))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self._waiter = None
        self._exchange = None
        self.close()

    def _parse(self, now: float) -> None:
        buf = self._buf
        while self._exchange is not None:
            state = self._state
            if state is State.HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._head(bytes(buf[:end]))
                del buf[: end + 4]
            elif state is State.BODY:
                if not buf:
                    return
                take = min(self._remaining, len(buf))
                self._body(buf, take, now)
                del buf[:take]
                self._remaining -= take
                if self._remaining:
                    return
                self._done(now)
            elif state is State.CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                del buf[: end + 2]
                self._remaining = size
                self._state = State.CHUNK_DATA if size else State.TRAILER
            elif state is State.CHUNK_DATA:
                if not buf:
                    return
                take = min(self._remaining, len(buf))
                self._body(buf, take, now)
                del buf[:take]
                self._remaining -= take
                if self._remaining:
                    return
                self._state = State.CHUNK_END
            elif state is State.CHUNK_END:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                del buf[:2]
                self._state = State.CHUNK_SIZE
            else:  # TRAILER: lines up to an empty one
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self._done(now)

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1."):
            raise ValueError(f"status line {lines[0][:40]!r}")
        exchange = self._exchange
        assert exchange is not None
        exchange.status = int(lines[0][9:12])
        length, chunked = 0, False
        self._close_after = lines[0].startswith(b"HTTP/1.0")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self._close_after = value.strip().lower() == b"close"
        if chunked:
            self._state = State.CHUNK_SIZE
        elif length:
            self._state, self._remaining = State.BODY, length
        else:
            self._state = State.HEAD
            self._done(time.perf_counter())

    def _body(self, buf: bytearray, take: int, now: float) -> None:
        """Count the first ``take`` bytes of ``buf`` (copied only when events are counted)."""
        exchange = self._exchange
        assert exchange is not None
        exchange.body_bytes += take
        if not self._count_events or not take:
            return
        data = bytes(buf[:take])
        n = (self._tail + data).count(b"\n\n")
        self._tail = data[-1:]
        if n:
            if exchange.first_event is None:
                exchange.first_event = now
            exchange.last_event = now
            exchange.events += n
            window = self._window
            if window is not None and now <= window.deadline:
                window.events += n

    def _done(self, now: float) -> None:
        self._state = State.HEAD
        exchange, waiter = self._exchange, self._waiter
        self._exchange = self._waiter = None
        assert exchange is not None and waiter is not None
        exchange.end = now
        if not waiter.done():
            waiter.set_result(exchange)
        if self._close_after:
            self.close()
