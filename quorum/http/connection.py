"""One keep-alive HTTP/1.1 connection to an engine on this machine, and its answer's parser
(the rules are in :mod:`quorum.http`)."""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, cast

from multidict import CIMultiDict

from quorum.errors import ConnectionLost, HttpProtocolError
from quorum.http.chunked import chunk_size, whole_chunks

if TYPE_CHECKING:
    from quorum.http.pool import EnginePool

LEAN_BODY_LIMIT = 1 << 20  # larger request bodies go through aiohttp, streamed
IDLE_S = 15.0  # aiohttp's keep-alive time for an idle pooled connection
READ_HIGH = 256 * 1024
HOLD_S = 0.001  # pieces of an answer that come faster than this are handed over together
HOLD_BYTES = 64 * 1024  # ... unless this much is already here
HEAD_LIMIT = 64 * 1024
LINE_LIMIT = 8 * 1024


class _State(enum.IntEnum):
    IDLE = 0  # in the pool, or not yet used
    HEAD = 1
    LENGTH = 2  # Content-Length body
    UNTIL_CLOSE = 3
    CHUNK_SIZE = 4
    CHUNK_DATA = 5
    CHUNK_END = 6
    TRAILER = 7
    DONE = 8


_BODY_STATES = frozenset(
    (
        _State.LENGTH,
        _State.UNTIL_CLOSE,
        _State.CHUNK_SIZE,
        _State.CHUNK_DATA,
        _State.CHUNK_END,
        _State.TRAILER,
    )
)


class EngineConnection(asyncio.Protocol):
    """One keep-alive connection to an engine: one request, then its answer as it comes."""

    def __init__(self, pool: EnginePool, key: tuple[str, int]) -> None:
        self._pool = pool
        self.key = key
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._state = _State.IDLE
        self._pending = b""  # an incomplete head, chunk-size line or chunk end
        self._left = 0  # bytes still to come in the body or the chunk
        self._body: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._paused = False
        self._keep_alive = False
        self.closed = False
        self.heard = False  # any byte of the answer to the current request
        self.idle_since = 0.0
        self._handed = float("-inf")  # when next_chunk last handed something over
        self._holding = False
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.content_length: int | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance here.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._state is _State.IDLE or self._state is _State.DONE:
            self.close()  # nobody asked: an idle connection must hear nothing
            return
        self.heard = True
        try:
            self._feed(self._pending + data if self._pending else data)
        except HttpProtocolError as exc:
            self._fail(exc)
            self.close()
            return
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost tells the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        self._pool.forget(self)
        if self._state is _State.UNTIL_CLOSE and exc is None:
            self._state = _State.DONE
        elif self._state is _State.HEAD:
            self._fail(ConnectionLost("the engine closed the connection before answering"))
        elif self._state in _BODY_STATES:
            self._fail(ConnectionLost("the engine closed the connection mid-answer"))
        self._wake()

    # what the proxy calls

    def send(self, head: bytes, body: bytes) -> None:
        """Write one request (one ``write`` for a small body)."""
        transport = self._transport
        if transport is None or self.closed:
            raise ConnectionLost("the connection is closed")
        self._state = _State.HEAD
        self._error = None
        self._pending = b""
        self.heard = False
        self._handed = float("-inf")
        if len(body) <= 16384:
            transport.write(head + body)
        else:
            transport.writelines((head, body))

    async def head(self, timeout_s: float) -> None:
        """Wait for the answer's status and headers; ``TimeoutError`` after ``timeout_s``."""
        if self._state is _State.HEAD and self._error is None:
            handle = self._loop.call_later(max(0.0, timeout_s), self._head_timeout)
            try:
                while self._state is _State.HEAD and self._error is None:
                    await self._wait()
            finally:
                handle.cancel()
        if self._state is _State.HEAD:
            assert self._error is not None
            raise self._error

    async def next_chunk(self, *, hold: bool = False) -> bytes:
        """What arrived of the body since the last call; ``b""`` at its end.

        With ``hold`` (an answer passed on as it comes), pieces that come less than
        ``HOLD_S`` after the last hand-over wait for the rest of that time (or until
        ``HOLD_BYTES`` or the end came) and go together: a fast stream of small SSE events
        costs the node, and every hop after it, one write per millisecond rather than one
        per event. A piece waits at most ``HOLD_S``; one that comes later than that, like
        every token of a real engine, goes at once. An answer read whole is never held."""
        while not self._body:
            if self._error is not None:
                raise self._error
            if self._state is _State.DONE:
                return b""
            await self._wait()
        if hold:
            await self._hold()
        body = self._body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    async def _hold(self) -> None:
        """Wait, with reading paused, for the rest of ``HOLD_S`` after the last hand-over
        (or for ``HOLD_BYTES``, the end or an error); then count this hand-over's time."""
        loop = self._loop
        due = self._handed + HOLD_S
        if self._holding_worth() and loop.time() < due:
            self._holding = True
            handle = loop.call_at(due, self._end_hold)
            held = None if self._paused else self._transport
            if held is not None:
                held.pause_reading()  # the kernel gathers the pieces: one read, not many
            try:
                await self._wait()
            finally:
                self._holding = False
                handle.cancel()
                if held is not None and self._transport is held:
                    held.resume_reading()
        self._handed = loop.time()

    @property
    def complete(self) -> bool:
        return self._state is _State.DONE and not self._body

    def release(self) -> None:
        """Back to the pool when the answer was read whole and may be followed; else close."""
        if self._state is _State.DONE and self._keep_alive and not self.closed:
            self._state = _State.IDLE
            self._body.clear()
            self._pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.close()
        self._pool.forget(self)

    # internals

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _holding_worth(self) -> bool:
        """Whether to keep holding what arrived: more may come soon, and little is here."""
        return (
            self._state is not _State.DONE and self._error is None and self._buffered < HOLD_BYTES
        )

    def _end_hold(self) -> None:
        self._holding = False
        self._wake()

    def _wake(self) -> None:
        if self._holding and self._holding_worth():
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc

    def _head_timeout(self) -> None:
        if self._state is _State.HEAD:
            self._fail(TimeoutError())
            self.close()
            self._wake()

    def _push(self, data: bytes) -> None:
        if data:
            self._body.append(data)
            self._buffered += len(data)
            if self._buffered > READ_HIGH and not self._paused and self._transport is not None:
                self._paused = True
                self._transport.pause_reading()

    def _feed(self, data: bytes) -> None:
        self._pending = b""
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state is _State.LENGTH:
                take = min(self._left, end - pos)
                self._push(data[pos : pos + take] if take < end - pos or pos else data)
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _State.DONE
            elif state is _State.CHUNK_DATA:
                take = min(self._left, end - pos)
                self._push(data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _State.CHUNK_END
            elif state is _State.CHUNK_SIZE:
                pos = self._chunks(data, pos, end)
            elif state is _State.CHUNK_END:
                if end - pos < 2:
                    return self._keep(data, pos, 2, "a chunk end")
                if data[pos : pos + 2] != b"\r\n":
                    raise HttpProtocolError("a chunk does not end with CRLF")
                pos += 2
                self._state = _State.CHUNK_SIZE
            elif state is _State.TRAILER:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return self._keep(data, pos, LINE_LIMIT, "a trailer line")
                self._state = _State.DONE if eol == pos else _State.TRAILER
                pos = eol + 2
            elif state is _State.HEAD:
                eoh = data.find(b"\r\n\r\n", pos)
                if eoh < 0:
                    return self._keep(data, pos, HEAD_LIMIT, "the answer's head")
                self._head_parsed(data[pos:eoh])
                pos = eoh + 4
            elif state is _State.UNTIL_CLOSE:
                self._push(data[pos:] if pos else data)
                return
            else:  # DONE: bytes past the answer; never reuse this connection
                self._keep_alive = False
                return
        return None

    def _chunks(self, data: bytes, pos: int, end: int) -> int:
        """Whole chunks from ``pos`` in one loop (a stream of small SSE chunks is the hot
        case); returns where parsing stopped, with the state set for what comes next."""
        whole = whole_chunks(data, pos, end)
        if whole is not None:
            joined, pos = whole
            self._push(joined)
            if pos == end:
                return end
        pieces: list[bytes] = []
        size = -1
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                break
            line = data[pos:eol]
            try:
                size = int(line, 16)
            except ValueError:
                size = chunk_size(line)  # extensions, or an error
            if size < 0:
                raise HttpProtocolError(f"bad chunk size: {line[:20]!r}")
            start = eol + 2
            stop = start + size
            if not size or stop + 2 > end:
                pos = start
                break
            if data[stop : stop + 2] != b"\r\n":
                raise HttpProtocolError("a chunk does not end with CRLF")
            pieces.append(data[start:stop])
            pos = stop + 2
            size = -1
        if pieces:
            self._push(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        if size < 0:  # no whole size line left
            if eol < 0:
                self._keep(data, pos, LINE_LIMIT, "a chunk size line")
                return end
        elif size == 0:
            self._state = _State.TRAILER
        else:  # a chunk that goes on in later data
            self._left = size
            self._state = _State.CHUNK_DATA
        return pos

    def _keep(self, data: bytes, pos: int, limit: int, what: str) -> None:
        if len(data) - pos > limit:
            raise HttpProtocolError(f"{what} is over {limit} bytes")
        self._pending = data[pos:]

    def _head_parsed(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
            raise HttpProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        try:
            status = int(parts[1])
        except ValueError:
            raise HttpProtocolError(f"bad status: {parts[1][:10]!r}") from None
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in b" \t" or line[:1] in b" \t":
                raise HttpProtocolError(f"bad header line: {line[:80]!r}")
            try:
                key = name.decode("ascii")
            except UnicodeDecodeError:
                raise HttpProtocolError("a header name is not ASCII") from None
            headers.add(key, value.strip(b" \t").decode("utf-8", "surrogateescape"))
        if status < 200:
            return  # 1xx: an interim answer; the real head follows
        self.status, self.headers = status, headers
        connection = headers.get("Connection", "").lower()
        if parts[0] == b"HTTP/1.1":
            self._keep_alive = "close" not in connection
        else:
            self._keep_alive = "keep-alive" in connection
        encoding = headers.get("Transfer-Encoding")
        length = headers.get("Content-Length")
        self.content_length = None
        if status in (204, 304):
            self._state = _State.DONE
        elif encoding is not None:
            if encoding.lower().rsplit(",", 1)[-1].strip() == "chunked":
                self._state = _State.CHUNK_SIZE
            else:
                self._state, self._keep_alive = _State.UNTIL_CLOSE, False
        elif length is not None:
            if not length.isdigit() or not length.isascii():
                raise HttpProtocolError(f"bad Content-Length: {length[:20]!r}")
            self._left = self.content_length = int(length)
            self._state = _State.LENGTH if self._left else _State.DONE
        else:
            self._state, self._keep_alive = _State.UNTIL_CLOSE, False
