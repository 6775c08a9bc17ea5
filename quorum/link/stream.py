"""One tunnel stream as an async byte stream, with its credit kept honest.

``TunnelStream`` has the shape of a plain byte stream (``send_all``,
``receive_some``, ``send_eof``, ``aclose``, as trio's ``Stream``, so TLS
over ``ssl.MemoryBIO`` can later wrap it as it would a socket), plus what a
tunnel stream adds: ``reset`` with a reason code, the request head, and the
response head (``response`` for the opener, ``send_response`` for the other).

Credit (DESIGN.md, "Tunnel protocol"): bytes returned by ``receive_some``
are granted back to the peer when the reader comes back for more, or lets
go (``reset``, ``aclose``); so a reader that forwards each chunk before
asking for the next holds at most one window, and a frozen reader stops its
sender without slowing other streams. ``send_all`` hands the protocol only
what the peer's window allows and waits for more: nothing is buffered
beyond what the peer granted.

Each method has a form that never waits (``receive_nowait``,
``send_nowait``, ``send_eof_nowait``) for code that reacts to the pump
instead of running a task per stream (the relay's pipes): its ``listener``
is called after each thing the peer did to the stream.

Errors: once reset (by either side, or with its tunnel) every call raises
the ``ApiError`` its code maps to (``resets``). Misuse (data after
``send_eof``, a second response head, two tasks reading at once) raises
``LocalProtocolError`` or ``RuntimeError``: our bug, never the peer's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from quorum.errors import ApiError, LocalProtocolError
from quorum.protocol import Connection, RequestHead, ResetCode, ResponseHead

from .resets import reset_error


@dataclass(frozen=True, slots=True)
class ResetInfo:
    """Why a stream died. ``remote``: the peer reset it; otherwise we did, or its tunnel died."""

    code: ResetCode
    message: str
    remote: bool


class Owner(Protocol):
    """What a stream needs of its pump."""

    @property
    def conn(self) -> Connection: ...

    def flush(self) -> None: ...

    def forget(self, stream: TunnelStream) -> None: ...


Listener = Callable[["TunnelStream"], None]
_READ, _WRITE = 0, 1
_SIDES = ("reading", "writing")


class TunnelStream:
    """One request stream of one tunnel connection, either direction.

    Made by the pump: ``Pump.open_stream`` for one we open (``local``; we send
    the request body and read the answer), ``Pump``'s ``on_stream`` callback
    for one the peer opened (we read the request body and send the answer).
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_discarding",
        "_done",
        "_eof",
        "_eof_sent",
        "_handed",
        "_owner",
        "_responded",
        "_response",
        "_waiters",
        "head",
        "id",
        "listener",
        "local",
        "on_close",
        "peer",
        "reset_info",
    )

    def __init__(
        self,
        owner: Owner,
        stream_id: int,
        head: RequestHead,
        *,
        local: bool,
        peer: str,
        sent_eof: bool = False,
        received_eof: bool = False,
    ) -> None:
        self._owner = owner
        self.id = stream_id
        self.head = head
        """The request head: the one we sent (``local``) or the one we received."""
        self.local = local
        """We opened this stream: we send the request, the peer answers."""
        self.peer = peer
        """The far end, as error messages name it ("node studio")."""
        self.reset_info: ResetInfo | None = None
        self.listener: Listener | None = None
        """Called (synchronously, from the pump's reader) after each thing the
        peer did to this stream: response head, data, end, credit, reset."""
        self.on_close: Listener | None = None
        """Called once, when the stream is over both ways (ended or reset)."""
        self._chunks: deque[bytes] = deque()
        self._buffered = 0  # bytes in _chunks
        self._handed = 0  # bytes returned to the reader, not yet granted back
        self._eof = received_eof  # the peer's half ended
        self._eof_sent = sent_eof  # our half ended
        self._response: ResponseHead | None = None
        self._responded = False
        self._done = False
        self._discarding = False  # aclose()d after answering: drop what still arrives
        self._waiters: list[asyncio.Future[None] | None] = [None, None]  # _READ, _WRITE

    def __repr__(self) -> str:
        return f"<TunnelStream {self.id} {'out' if self.local else 'in'} {self.head.path}>"

    # -- state -----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Over both ways: reset, or both halves ended (unread bytes may remain)."""
        return self.reset_info is not None or (self._eof and self._eof_sent)

    @property
    def at_eof(self) -> bool:
        """The peer ended its half and every byte of it was read."""
        return self._eof and not self._chunks

    @property
    def sent_eof(self) -> bool:
        """Our half ended (``send_eof``, or a response head sent with ``end_stream``)."""
        return self._eof_sent

    @property
    def unconsumed(self) -> int:
        """Bytes received and not yet granted back: what this stream holds of the peer's."""
        return self._buffered + self._handed

    @property
    def response_head(self) -> ResponseHead | None:
        """The answer's head, once it arrived (streams we opened only)."""
        return self._response

    def error(self) -> ApiError | None:
        """The error every call raises now that the stream was reset (None if it was not)."""
        info = self.reset_info
        if info is None:
            return None
        answered = self._response is not None
        return reset_error(
            info.code, info.message, peer=self.peer, opener=self.local, answered=answered
        )

    # -- reading ---------------------------------------------------------------

    def receive_nowait(self, max_bytes: int | None = None) -> bytes | None:
        """The next received bytes (at most ``max_bytes``), ``b""`` once the peer's
        half ended and all was read, ``None`` if nothing arrived yet.

        Grants the bytes of the previous call back to the peer first.
        """
        self._give_back()
        if self._chunks:
            chunk = self._chunks.popleft()
            if max_bytes is not None and len(chunk) > max_bytes:
                if max_bytes < 1:
                    raise ValueError("max_bytes must be at least 1")
                self._chunks.appendleft(chunk[max_bytes:])
                chunk = chunk[:max_bytes]
            self._buffered -= len(chunk)
            self._handed = len(chunk)
            return chunk
        if self.reset_info is not None:
            raise self._failure()
        if self._eof:
            return b""
        return None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Wait for the next received bytes; ``b""`` at the end of the peer's half."""
        while (chunk := self.receive_nowait(max_bytes)) is None:
            await self._wait(_READ)
        return chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while chunk := await self.receive_some():
            yield chunk

    async def response(self) -> ResponseHead:
        """Wait for the answer's head (streams we opened only)."""
        if not self.local:
            raise LocalProtocolError("only the side that opened a stream receives its response")
        while self._response is None:
            if self.reset_info is not None:
                raise self._failure()
            await self._wait(_READ)
        return self._response

    # -- writing ---------------------------------------------------------------

    def send_nowait(self, data: bytes) -> int:
        """Hand the protocol as much of ``data`` as the peer's credit allows; return
        how much. When short, the listener hears when credit returns."""
        if self.reset_info is not None:
            raise self._failure()
        if self._eof_sent:
            raise LocalProtocolError(f"stream {self.id}: data after send_eof")
        n = self._owner.conn.send_data(self.id, data)
        self._owner.flush()
        return n

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``, waiting for the peer's credit as often as needed."""
        view = memoryview(data)
        while view:
            # One byte over the credit: a short send registers us for the credit's
            # return, and flags the last frame BLOCKED (the peer's cue to grow the window).
            size = min(len(view), self._owner.conn.send_credit(self.id) + 1)
            n = self.send_nowait(bytes(view[:size]))
            view = view[n:]
            if n < size:
                await self._wait(_WRITE)

    def send_eof_nowait(self) -> None:
        """End our half (after everything sent so far). Again is a no-op."""
        if self._eof_sent:
            return
        if self.reset_info is not None:
            raise self._failure()
        self._owner.conn.end_stream(self.id)
        self._eof_sent = True
        self._owner.flush()
        self._settle()

    async def send_eof(self) -> None:
        self.send_eof_nowait()

    def send_response(self, head: ResponseHead, *, end_stream: bool = False) -> None:
        """Answer a stream the peer opened: once, before any data."""
        if self.local or self._responded:
            raise LocalProtocolError(f"stream {self.id} cannot take a response head")
        if self.reset_info is not None:
            raise self._failure()
        self._owner.conn.send_response_head(self.id, head, end_stream=end_stream)
        self._responded = True
        self._eof_sent = end_stream
        self._owner.flush()
        self._settle()

    # -- ending ----------------------------------------------------------------

    def reset(self, code: ResetCode = ResetCode.CANCEL, message: str = "") -> None:
        """Abandon the stream: RESET it if it still runs, drop what is unread, and give
        the peer its credit back. Safe to call at any time, more than once."""
        if self.closed:
            # Over already: the bytes still held are all that is left to give back.
            held = self._handed + self._buffered
            self._handed = 0
            self._drop()
            if held and self.reset_info is None:
                with contextlib.suppress(LocalProtocolError):
                    self._owner.conn.consumed(self.id, held)
                self._owner.flush()
            return
        with contextlib.suppress(LocalProtocolError):
            self._owner.conn.reset_stream(self.id, code, message)
        self._dead(ResetInfo(code, message, remote=False))
        self._owner.flush()
        self._settle()

    async def aclose(self) -> None:
        """Done with the stream. One we answered completely (our half ended) stays
        open only to read and drop the rest of the request; any other that is not
        over is reset CANCEL, so the peer stops working for us."""
        if self.closed or self.local or not self._eof_sent:
            self.reset(ResetCode.CANCEL, "closed before the end")
            return
        self._discarding = True
        held = self._handed + self._buffered
        self._handed = 0
        self._drop()
        if held:
            with contextlib.suppress(LocalProtocolError):
                self._owner.conn.consumed(self.id, held)
            self._owner.flush()

    # -- what the pump calls -------------------------------------------------------

    def _on_response(self, head: ResponseHead) -> None:
        self._response = head
        self._wake(_READ)
        self._notify()

    def _on_data(self, data: bytes) -> None:
        if self._discarding:
            with contextlib.suppress(LocalProtocolError):
                self._owner.conn.consumed(self.id, len(data))
            self._owner.flush()
            return
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake(_READ)
        self._notify()

    def _on_end(self) -> None:
        if self._eof:
            return
        self._eof = True
        self._wake(_READ)
        self._notify()
        self._settle()

    def _on_writable(self) -> None:
        self._wake(_WRITE)
        self._notify()

    def _on_reset(self, code: ResetCode, message: str, remote: bool) -> None:
        if self.reset_info is not None:
            return
        self._dead(ResetInfo(code, message, remote))
        self._notify()
        self._settle()

    # -- inside ------------------------------------------------------------------------

    def _failure(self) -> ApiError:
        error = self.error()
        assert error is not None
        return error

    def _give_back(self) -> None:
        if self._handed:
            n, self._handed = self._handed, 0
            with contextlib.suppress(LocalProtocolError):  # the connection is gone
                self._owner.conn.consumed(self.id, n)
            self._owner.flush()

    def _drop(self) -> None:
        self._chunks.clear()
        self._buffered = 0

    def _dead(self, info: ResetInfo) -> None:
        # The protocol released the unread bytes of a reset stream itself.
        self.reset_info = info
        self._handed = 0
        self._drop()
        self._wake(_READ)
        self._wake(_WRITE)

    def _notify(self) -> None:
        if self.listener is not None:
            self.listener(self)

    def _settle(self) -> None:
        if not self._done and self.closed:
            self._done = True
            self._owner.forget(self)
            if self.on_close is not None:
                self.on_close(self)

    async def _wait(self, side: int) -> None:
        """Wait for the pump to change something on ``side`` (_READ or _WRITE)."""
        if self._waiters[side] is not None:
            raise RuntimeError(f"another task is already {_SIDES[side]} stream {self.id}")
        waiter = self._waiters[side] = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiters[side] = None

    def _wake(self, side: int) -> None:
        waiter = self._waiters[side]
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
