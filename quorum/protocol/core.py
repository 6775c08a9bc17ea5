"""State of one tunnel connection, and how each received frame changes it.

``Connection`` (connection.py) adds the calls an adapter makes to send. The
rules both enforce are written down in the package docstring
(``quorum/protocol/__init__.py``); a change here changes that text too.
"""

from __future__ import annotations

from enum import IntEnum

from quorum.errors import LocalProtocolError, RemoteProtocolError

from .events import (
    DataReceived,
    Event,
    GoAwayReceived,
    HelloReceived,
    PingReceived,
    PongReceived,
    PresenceReceived,
    ResponseReceived,
    RevocationReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamWritable,
    UsageReceived,
)
from .frames import (
    MAX_WINDOW,
    Flag,
    Frame,
    FrameType,
    ResetCode,
    Role,
    decode_frame,
    decode_reset,
    decode_window_update,
    encode_reset,
)
from .limits import CONNECTION_WINDOW_BASE, STREAM_WINDOW_BASE, Limits, OpenRate
from .messages import GoAway, GoAwayReason, Hello, Presence, RequestHead, ResponseHead, Usage
from .outbox import Outbox
from .revocations import REVOCATIONS, Revocation
from .streams import RecvWindow, Stream, StreamState, StreamTable


class ConnectionState(IntEnum):
    HANDSHAKE = 1
    """Our HELLO or the peer's is still missing."""
    OPEN = 2
    DRAINING = 3
    """GOAWAY sent or received: no new streams; running ones finish."""
    CLOSED = 4
    """Broken by a protocol error, or lost. Only ``data_to_send`` and
    ``connection_lost`` still do anything; other sends raise."""


class ConnectionCore:
    """Connection state and the receiving half of the state machine; use ``Connection``."""

    def __init__(self, role: Role, limits: Limits | None = None) -> None:
        self.role = role
        self.limits = limits if limits is not None else Limits()
        self.peer_hello: Hello | None = None
        self.capabilities: tuple[str, ...] = ()
        """What our own HELLO announced."""
        self.goaway_received: GoAway | None = None
        self._hello_sent = False
        self._goaway_sent = False
        self._closed = False
        self._close_code = ResetCode.PEER_GONE
        self._ids = StreamTable(role)
        self._streams = self._ids.live
        self._conn_recv = RecvWindow(
            size=self.limits.connection_window,
            assumed=CONNECTION_WINDOW_BASE,
            max_size=self.limits.connection_window,
        )
        self._conn_send = CONNECTION_WINDOW_BASE
        self._blocked: set[int] = set()  # streams whose last send_data fell short
        self._deferred: list[Event] = []  # events caused by local calls
        self._out = Outbox()
        self._opens = OpenRate(self.limits.max_opens_per_second)

    # -- introspection -----------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        if self._closed:
            return ConnectionState.CLOSED
        if self._goaway_sent or self.goaway_received is not None:
            return ConnectionState.DRAINING
        if self._hello_sent and self.peer_hello is not None:
            return ConnectionState.OPEN
        return ConnectionState.HANDSHAKE

    @property
    def active_streams(self) -> int:
        """Streams not yet closed on our side (a drained connection has none)."""
        return len(self._streams)

    def stream_state(self, stream_id: int) -> StreamState:
        """State of a stream; CLOSED for any id not (or no longer) tracked."""
        stream = self._streams.get(stream_id)
        return stream.state if stream is not None else StreamState.CLOSED

    def send_credit(self, stream_id: int) -> int:
        """Bytes ``send_data`` would accept right now (0 if the stream cannot send)."""
        stream = self._streams.get(stream_id)
        if self._closed or stream is None or not stream.can_send:
            return 0
        return min(stream.send_credit, self._conn_send)

    # -- the I/O boundary ------------------------------------------------------

    def receive_frame(self, data: bytes, now: float) -> list[Event]:
        """Process one received WebSocket message; ``now`` is a monotonic clock in seconds.

        Also returns events that earlier local calls caused (see ``take_events``).
        """
        if self._closed:
            raise LocalProtocolError("the connection is closed")
        events, self._deferred = self._deferred, []
        try:
            frame = decode_frame(data)
            if frame is not None:
                self._dispatch(frame, now, events)
        except RemoteProtocolError as exc:
            self._fail(str(exc))
            raise
        return events

    # -- receiving, frame by frame -------------------------------------------------

    def _dispatch(self, frame: Frame, now: float, events: list[Event]) -> None:
        kind = frame.type
        if self.peer_hello is None and kind is not FrameType.HELLO:
            raise RemoteProtocolError(f"{kind.name} before HELLO")
        if kind is FrameType.HELLO:
            if self.peer_hello is not None:
                raise RemoteProtocolError("second HELLO")
            hello = Hello.decode(frame.payload)
            if hello.role is self.role:
                raise RemoteProtocolError(f"the peer claims our own role {self.role.name}")
            self.peer_hello = hello
            events.append(HelloReceived(hello))
        elif kind is FrameType.PING:
            self._queue(Frame(FrameType.PONG, 0, frame.payload))
            events.append(PingReceived(frame.payload))
        elif kind is FrameType.PONG:
            events.append(PongReceived(frame.payload))
        elif kind is FrameType.PRESENCE:
            events.append(PresenceReceived(Presence.decode(frame.payload)))
        elif kind is FrameType.USAGE:
            events.append(UsageReceived(Usage.decode(frame.payload)))
        elif kind is FrameType.REVOCATION:
            if self.role is not Role.NODE or REVOCATIONS not in self.capabilities:
                raise RemoteProtocolError("REVOCATION sent to a peer that did not announce it")
            events.append(RevocationReceived(Revocation.decode(frame.payload)))
        elif kind is FrameType.GOAWAY:
            self._on_goaway(GoAway.decode(frame.payload), events)
        elif kind is FrameType.WINDOW_UPDATE:
            self._on_window_update(frame.stream_id, decode_window_update(frame.payload), events)
        elif kind is FrameType.REQUEST:
            self._on_request(frame, now, events)
        elif kind is FrameType.RESPONSE:
            self._on_response(frame, events)
        elif kind is FrameType.DATA:
            self._on_data(frame, events)
        else:  # FrameType.RESET, the last type
            code, message = decode_reset(frame.payload)
            if (stream := self._ids.known(frame.stream_id)) is not None:
                self._drop(stream, events)
                events.append(StreamReset(stream.id, code, message, remote=True))

    def _on_goaway(self, goaway: GoAway, events: list[Event]) -> None:
        last = goaway.last_stream_id
        if last and (not self._ids.ours(last) or last >= self._ids.next_id):
            raise RemoteProtocolError(f"GOAWAY names stream {last}, which we never opened")
        previous = self.goaway_received
        if previous is not None and last > previous.last_stream_id:
            raise RemoteProtocolError("a later GOAWAY raised last_stream_id")
        self.goaway_received = goaway
        events.append(GoAwayReceived(goaway))
        # Our streams above `last` were never processed: report them refused (retryable).
        for stream in [s for s in self._streams.values() if s.local and s.id > last]:
            self._drop(stream, events)
            events.append(StreamReset(stream.id, ResetCode.REFUSED, "refused by GOAWAY", True))

    def _on_window_update(self, stream_id: int, increment: int, events: list[Event]) -> None:
        if stream_id == 0:
            if self._conn_send + increment > MAX_WINDOW:
                raise RemoteProtocolError("connection window overflow")
            self._conn_send += increment
            self._wake(self._blocked, events)
        elif (stream := self._ids.known(stream_id)) is not None:
            if stream.send_credit + increment > MAX_WINDOW:
                self._stream_error(stream, ResetCode.FLOW_CONTROL, "window overflow", events)
                return
            stream.send_credit += increment
            stream.blocked_sent = False
            self._wake({stream_id} & self._blocked, events)

    def _on_request(self, frame: Frame, now: float, events: list[Event]) -> None:
        sid = frame.stream_id
        if self._ids.ours(sid):
            raise RemoteProtocolError(f"the peer opened stream {sid}, an id of our parity")
        if sid <= self._ids.peer_highest:
            raise RemoteProtocolError(f"stream id {sid} is not above {self._ids.peer_highest}")
        if self.goaway_received is not None or not self._hello_sent:
            raise RemoteProtocolError("REQUEST after the peer's GOAWAY or before our HELLO")
        self._ids.peer_highest = sid
        refusal = self._refusal(len(frame.payload), now)
        if refusal is not None:
            # Never seen by the app; DATA already in flight for it is ignored.
            self._queue(Frame(FrameType.RESET, sid, encode_reset(*refusal)))
            return
        head = RequestHead.decode(frame.payload)
        stream = self._streams[sid] = Stream(
            sid, local=False, recv=self._new_window(), send_credit=STREAM_WINDOW_BASE
        )
        self._ids.peer_accepted = sid
        events.append(StreamOpened(sid, head, frame.end_stream))
        if frame.end_stream:
            stream.end_remote()
            events.append(StreamEnded(sid))
        else:
            self._grant(stream, force=True)

    def _refusal(self, head_size: int, now: float) -> tuple[ResetCode, str] | None:
        if self._goaway_sent:
            return ResetCode.REFUSED, "going away"
        if head_size > self.limits.max_header_block:
            return ResetCode.TOO_LARGE, f"request head over {self.limits.max_header_block} bytes"
        if self._ids.count(local=False) >= self.limits.max_streams:
            return ResetCode.REFUSED, "too many concurrent streams"
        if not self._opens.allow(now):
            return ResetCode.REFUSED, "too many stream opens per second"
        return None

    def _on_response(self, frame: Frame, events: list[Event]) -> None:
        stream = self._ids.known(frame.stream_id)
        if stream is None:
            return
        if not stream.local or stream.responded or not stream.can_receive:
            self._stream_error(stream, ResetCode.PROTOCOL_ERROR, "unexpected RESPONSE", events)
        elif len(frame.payload) > self.limits.max_header_block:
            self._stream_error(stream, ResetCode.TOO_LARGE, "response head too large", events)
        else:
            head = ResponseHead.decode(frame.payload)
            stream.responded = True
            events.append(ResponseReceived(stream.id, head, frame.end_stream))
            if frame.end_stream:
                self._end_remote(stream, events)

    def _on_data(self, frame: Frame, events: list[Event]) -> None:
        n = len(frame.payload)
        if not self._conn_recv.receive(n):
            raise RemoteProtocolError("DATA beyond the connection window")
        stream = self._ids.known(frame.stream_id)
        problem: tuple[ResetCode, str] | None = None
        if stream is None:
            pass
        elif not stream.can_receive:
            problem = ResetCode.PROTOCOL_ERROR, "DATA after END_STREAM"
        elif stream.local and not stream.responded:
            problem = ResetCode.PROTOCOL_ERROR, "DATA before RESPONSE"
        elif not stream.recv.receive(n):
            problem = ResetCode.FLOW_CONTROL, "DATA beyond the stream window"
        else:
            if frame.flags & Flag.BLOCKED:
                stream.recv.sender_blocked = True
            if n:
                events.append(DataReceived(stream.id, frame.payload))
            if frame.end_stream:
                self._end_remote(stream, events)
            return
        # Nobody will consume these bytes: give their connection credit back now.
        self._release(n)
        if stream is not None and problem is not None:
            self._stream_error(stream, *problem, events)

    # -- helpers -------------------------------------------------------------------

    def _require_hello(self) -> None:
        if self._closed:
            raise LocalProtocolError("the connection is closed")
        if not self._hello_sent:
            raise LocalProtocolError("send HELLO first")

    def _sendable(self, stream_id: int) -> Stream:
        self._require_hello()
        stream = self._streams.get(stream_id)
        if stream is None or not stream.can_send:
            raise LocalProtocolError(f"stream {stream_id} is not open for sending")
        return stream

    def _queue(self, frame: Frame) -> None:
        self._out.control(frame)

    def _new_window(self) -> RecvWindow:
        return RecvWindow(
            size=self.limits.initial_window,
            assumed=STREAM_WINDOW_BASE,
            max_size=self.limits.max_window,
        )

    def _grant(self, stream: Stream, *, force: bool = False) -> None:
        if grant := stream.recv.take_grant(force=force):
            self._out.window_update(stream.id, grant)

    def _release(self, n: int) -> None:
        """Connection-level: ``n`` received bytes are done with."""
        if n:
            self._conn_recv.consume(n)
            if grant := self._conn_recv.take_grant():
                self._out.window_update(0, grant)

    def _wake(self, candidates: set[int], events: list[Event]) -> None:
        for sid in sorted(candidates):
            if self.send_credit(sid) > 0:
                self._blocked.discard(sid)
                events.append(StreamWritable(sid))

    def _end_remote(self, stream: Stream, events: list[Event]) -> None:
        stream.end_remote()
        events.append(StreamEnded(stream.id))
        self._maybe_close(stream)

    def _maybe_close(self, stream: Stream) -> None:
        self._ids.close_if_done(stream)
        if stream.state is StreamState.CLOSED:
            self._blocked.discard(stream.id)

    def _drop(self, stream: Stream, events: list[Event]) -> None:
        """Forget a reset stream: unsent data returns its connection credit,
        unread data its connection window."""
        self._ids.remove(stream)
        self._blocked.discard(stream.id)
        unsent = self._out.drop(stream.id)
        if unsent:
            self._conn_send += unsent
            self._wake(self._blocked, events)
        self._release(stream.recv.unconsumed)
        stream.recv.unconsumed = 0

    def _stream_error(
        self, stream: Stream, code: ResetCode, message: str, events: list[Event]
    ) -> None:
        self._queue(Frame(FrameType.RESET, stream.id, encode_reset(code, message)))
        self._drop(stream, events)
        events.append(StreamReset(stream.id, code, message, remote=False))

    def _fail(self, message: str) -> None:
        self._closed = True
        self._close_code = ResetCode.PROTOCOL_ERROR
        self._out.clear_data()
        if self._hello_sent:
            # The message may quote the peer's bytes: keep it valid text for the wire.
            text = message.encode("utf-8", "replace").decode("utf-8")[:1024]
            goaway = GoAway(self._ids.peer_accepted, GoAwayReason.PROTOCOL_ERROR, text)
            self._queue(Frame(FrameType.GOAWAY, 0, goaway.encode()))
