"""The tunnel connection an adapter drives: frames in, events out; calls in, frames out.

The rules it enforces are written down in the package docstring
(``quorum/protocol/__init__.py``); a change here changes that text too.
"""

from __future__ import annotations

from collections.abc import Iterable

from quorum.errors import LocalProtocolError

from .core import ConnectionCore, ConnectionState
from .events import Event, StreamReset
from .frames import (
    MAX_DATA,
    MAX_STREAM_ID,
    VERSION,
    Flag,
    Frame,
    FrameType,
    ResetCode,
    Role,
    encode_frame,
    encode_reset,
    encode_window_update,
)
from .limits import STREAM_WINDOW_BASE
from .messages import GoAway, GoAwayReason, Hello, Presence, RequestHead, ResponseHead, Usage
from .revocations import REVOCATIONS, Revocation
from .streams import Stream

__all__ = ["Connection", "ConnectionState"]


class Connection(ConnectionCore):
    """One end of one tunnel (one WebSocket connection), without any I/O.

    The adapter feeds every received message to ``receive_frame`` and acts on
    the returned events; after any call it writes ``data_to_send()`` to the
    socket in order. Methods that break a rule raise ``LocalProtocolError``
    and change nothing. ``receive_frame`` raises only ``ProtocolError``
    subclasses; after a ``RemoteProtocolError`` the connection is CLOSED: flush
    ``data_to_send()`` (a GOAWAY PROTOCOL_ERROR), close the socket, then call
    ``connection_lost()`` to fail the streams that were running.
    """

    def can_open_stream(self) -> bool:
        """Whether ``open_stream`` would succeed now (OPEN, under the peer's max_streams)."""
        if self.state is not ConnectionState.OPEN or self.peer_hello is None:
            return False
        opened = self._ids.count(local=True)
        # A stream we closed whose END is still queued is open for the peer.
        queued = self._out.data_streams()
        opened += sum(1 for sid in queued if sid not in self._streams and self._ids.ours(sid))
        return opened < self.peer_hello.max_streams and self._ids.next_id <= MAX_STREAM_ID

    # -- connection-level sends ---------------------------------------------

    def send_hello(self, node_id: str, capabilities: Iterable[str] = ()) -> None:
        """Queue our HELLO. It goes out before anything else queued so far."""
        if self._closed or self._hello_sent:
            raise LocalProtocolError("HELLO already sent, or the connection is closed")
        hello = Hello(VERSION, node_id, self.role, self.limits.max_streams, tuple(capabilities))
        frames = [encode_frame(Frame(FrameType.HELLO, 0, hello.encode()))]
        if grant := self._conn_recv.take_grant(force=True):
            payload = encode_window_update(grant)
            frames.append(encode_frame(Frame(FrameType.WINDOW_UPDATE, 0, payload)))
        self._out.control_first(frames)
        self._hello_sent = True
        self.capabilities = hello.capabilities

    def send_presence(self, presence: Presence) -> None:
        self._require_hello()
        self._queue(Frame(FrameType.PRESENCE, 0, presence.encode()))

    def send_usage(self, usage: Usage) -> None:
        self._require_hello()
        self._queue(Frame(FrameType.USAGE, 0, usage.encode()))

    def send_revocation(self, revocation: Revocation) -> None:
        """(The relay.) The node's cluster's credentials changed: it drops its cached key
        checks. Only to a node whose HELLO announced ``revocations`` (``can_revoke``)."""
        self._require_hello()
        if not self.can_revoke():
            raise LocalProtocolError("the peer did not announce revocations (or is no node)")
        self._queue(Frame(FrameType.REVOCATION, 0, revocation.encode()))

    def can_revoke(self) -> bool:
        """Whether ``send_revocation`` may be called: we are the relay, the node asked."""
        hello = self.peer_hello
        return (
            self.role is Role.RELAY
            and hello is not None
            and REVOCATIONS in hello.capabilities
            and not self._closed
        )

    def send_ping(self, payload: bytes) -> None:
        """Queue a PING; the peer echoes ``payload`` (exactly 8 bytes) in a PONG."""
        self._require_hello()
        self._queue(Frame(FrameType.PING, 0, payload))

    def send_goaway(self, reason: GoAwayReason, message: str = "") -> None:
        """Stop new streams both ways; the peer's streams accepted so far may finish."""
        self._require_hello()
        goaway = GoAway(self._ids.peer_accepted, reason, message)
        self._queue(Frame(FrameType.GOAWAY, 0, goaway.encode()))
        self._goaway_sent = True

    # -- streams -----------------------------------------------------------------

    def open_stream(self, head: RequestHead, *, end_stream: bool = False) -> int:
        """Open a stream with ``head`` and return its id. Needs both HELLOs,
        no GOAWAY either way, and room under the peer's ``max_streams``."""
        self._require_hello()
        if not self.can_open_stream():
            raise LocalProtocolError(f"cannot open a stream now (connection {self.state.name})")
        sid = self._ids.next_id
        self._queue(Frame(FrameType.REQUEST, sid, head.encode(), _end(end_stream)))
        self._ids.next_id += 2
        stream = self._streams[sid] = Stream(
            sid, local=True, recv=self._new_window(), send_credit=STREAM_WINDOW_BASE
        )
        if end_stream:
            stream.end_local()
        self._grant(stream, force=True)
        return sid

    def send_response_head(
        self, stream_id: int, head: ResponseHead, *, end_stream: bool = False
    ) -> None:
        """Answer a stream the peer opened; allowed once, before any of our DATA."""
        stream = self._sendable(stream_id)
        if stream.local or stream.responded:
            raise LocalProtocolError(f"stream {stream_id} cannot take a response head")
        self._queue(Frame(FrameType.RESPONSE, stream_id, head.encode(), _end(end_stream)))
        stream.responded = True
        if end_stream:
            stream.end_local()
            self._maybe_close(stream)

    def send_data(self, stream_id: int, data: bytes) -> int:
        """Queue as much of ``data`` as credit allows and return how many bytes that was.

        The rest is the caller's to keep: wait for ``StreamWritable`` (or check
        ``send_credit``) and call again. The protocol never holds more than
        the peer granted.
        """
        stream = self._sendable(stream_id)
        if not stream.local and not stream.responded:
            raise LocalProtocolError(f"send the response head of stream {stream_id} first")
        n = min(len(data), stream.send_credit, self._conn_send)
        # Say so once when the stream window is what stops us: that is how the
        # receiver learns its window is too small for this link (RecvWindow).
        signal = n < len(data) and n == stream.send_credit and not stream.blocked_sent
        chunks = [data[i : min(i + MAX_DATA, n)] for i in range(0, n, MAX_DATA)]
        if signal and not chunks:
            chunks = [b""]
        for i, chunk in enumerate(chunks):
            flags = Flag.BLOCKED if signal and i == len(chunks) - 1 else Flag.NONE
            self._out.data(stream_id, chunk, flags)
        stream.send_credit -= n
        self._conn_send -= n
        stream.blocked_sent |= signal
        if n < len(data):
            self._blocked.add(stream_id)
        return n

    def end_stream(self, stream_id: int) -> None:
        """End our half; the END goes out after the stream's queued data."""
        stream = self._sendable(stream_id)
        if not stream.local and not stream.responded:
            raise LocalProtocolError(f"send the response head of stream {stream_id} first")
        self._out.data(stream_id, b"", Flag.END_STREAM)
        stream.end_local()
        self._blocked.discard(stream_id)
        self._maybe_close(stream)

    def reset_stream(self, stream_id: int, code: ResetCode, message: str = "") -> None:
        """Kill a stream: its queued data is dropped, its unread bytes released.

        A no-op for a stream already closed (the peer's RESET may have crossed
        ours); ``LocalProtocolError`` for an id that was never opened.
        """
        if self._closed:
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._queue(Frame(FrameType.RESET, stream_id, encode_reset(code, message)))
            self._drop(stream, self._deferred)
        elif stream_id in self._ids.lingering:
            self._release(self._ids.lingering.pop(stream_id))
        elif not self._ids.was_opened(stream_id):
            raise LocalProtocolError(f"stream {stream_id} was never opened")

    def consumed(self, stream_id: int, n: int) -> None:
        """The app handed on ``n`` received bytes of this stream: grant them back.

        The only way credit returns to the peer. Bytes of a stream that was
        reset are released already, so this is then a no-op.
        """
        if n < 0:
            raise LocalProtocolError("consumed a negative number of bytes")
        if self._closed or n == 0:
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.recv.consume(n)
            if stream.can_receive:
                self._grant(stream)
            self._release(n)
        elif stream_id in self._ids.lingering:
            left = self._ids.lingering[stream_id] - n
            if left < 0:
                raise LocalProtocolError(f"consumed {n} bytes more than stream {stream_id} got")
            if left:
                self._ids.lingering[stream_id] = left
            else:
                del self._ids.lingering[stream_id]
            self._release(n)
        elif not self._ids.was_opened(stream_id):
            raise LocalProtocolError(f"stream {stream_id} was never opened")

    @property
    def control_queued(self) -> bool:
        """Whether control frames (a REVOCATION, a GOAWAY...) wait for ``data_to_send``."""
        return self._out.control_queued

    def take_events(self) -> list[Event]:
        """Events caused by local calls (a reset that freed connection credit may
        make a blocked stream writable). ``receive_frame`` returns them too."""
        events, self._deferred = self._deferred, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Whole frames to write, in order: control frames (stream 0, heads,
        RESET, WINDOW_UPDATE) first, then DATA round-robin across streams.
        Nothing goes out before our HELLO."""
        return self._out.drain() if self._hello_sent else []

    def connection_lost(self) -> list[Event]:
        """The socket is gone: every running stream is reset (PEER_GONE, or
        PROTOCOL_ERROR after a protocol error) and the connection is CLOSED."""
        events: list[Event] = [
            StreamReset(sid, self._close_code, "tunnel connection lost", remote=False)
            for sid in self._streams
        ]
        self._closed = True
        self._ids.clear()
        self._out.clear()
        self._blocked.clear()
        self._deferred.clear()
        return events


def _end(end_stream: bool) -> Flag:
    return Flag.END_STREAM if end_stream else Flag.NONE
