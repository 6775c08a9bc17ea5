"""Per-stream state and the credit (flow-control) arithmetic.

Nothing here sends or receives: ``Connection`` asks these objects what is
allowed and turns their answers into frames and events.
"""

from __future__ import annotations

from enum import IntEnum

from quorum.errors import LocalProtocolError, RemoteProtocolError

from .frames import Role, opened_by


class StreamState(IntEnum):
    """A stream as seen from one end. Half-closed names the half that has ended."""

    OPEN = 1
    """Both sides may still send."""
    HALF_CLOSED_LOCAL = 2
    """We sent END_STREAM; the peer may still send."""
    HALF_CLOSED_REMOTE = 3
    """The peer sent END_STREAM; we may still send."""
    CLOSED = 4
    """Both sides ended, or either reset it; also reported for ids no longer tracked."""


class RecvWindow:
    """Receive-side credit of one stream, or of the whole connection.

    Invariant: ``credit + unconsumed + pending == size``, where ``credit`` is
    what the peer may still send, ``unconsumed`` what arrived and the
    application has not consumed, and ``pending`` what it consumed and we have
    not granted back yet. Memory held for the peer is therefore at most ``size``.

    Grants are batched: credit goes back once ``pending`` reaches half of
    the window. The window doubles (up to ``max_size``) at a grant when the
    sender said it ran out of stream credit (DATA flag BLOCKED) *and* the
    reader has caught up to within a quarter window: the window, not the
    reader, is then the bottleneck (the link's bandwidth-delay product is
    larger than the window). A reader that stops consuming never triggers a
    grant, so its window never grows; a slow reader is still behind when it
    grants. No clock is needed for this decision. The receiver cannot see
    the sender run dry by itself, because its view of the credit includes
    grants still in flight: hence the flag.
    """

    __slots__ = ("credit", "max_size", "pending", "sender_blocked", "size", "unconsumed")

    def __init__(self, *, size: int, assumed: int, max_size: int) -> None:
        # The peer starts out believing it has `assumed` credit; the rest of
        # `size` is pending and goes out with the first grant.
        self.size = size
        self.max_size = max_size
        self.credit = assumed
        self.unconsumed = 0
        self.pending = size - assumed
        self.sender_blocked = False

    def receive(self, n: int) -> bool:
        """Account ``n`` received bytes; ``False`` (and no change) if over credit."""
        if n > self.credit:
            return False
        self.credit -= n
        self.unconsumed += n
        return True

    def consume(self, n: int) -> None:
        """The application is done with ``n`` bytes; they may be granted again."""
        if not 0 <= n <= self.unconsumed:
            raise LocalProtocolError(f"consumed {n} bytes but only {self.unconsumed} are unread")
        self.unconsumed -= n
        self.pending += n

    def take_grant(self, *, force: bool = False) -> int:
        """Bytes to grant the peer now (0: not worth a frame yet), and count them granted."""
        if not self.pending or (not force and self.pending < self.size // 2):
            return 0
        if self.sender_blocked and self.unconsumed <= self.size // 4 and self.size < self.max_size:
            grown = min(self.size * 2, self.max_size)
            self.pending += grown - self.size
            self.size = grown
        grant, self.pending = self.pending, 0
        self.credit += grant
        self.sender_blocked = False
        return grant


class Stream:
    """One request stream: who opened it, how far each half got, and its credit."""

    __slots__ = ("blocked_sent", "id", "local", "recv", "responded", "send_credit", "state")

    def __init__(self, stream_id: int, *, local: bool, recv: RecvWindow, send_credit: int) -> None:
        self.id = stream_id
        self.local = local
        """True if we opened it (we send the request and receive the response)."""
        self.state = StreamState.OPEN
        self.responded = False
        """The RESPONSE head has been sent (if the peer opened) or received (if we did)."""
        self.recv = recv
        self.send_credit = send_credit
        self.blocked_sent = False
        """We told the peer (flag BLOCKED) that its window stops us; cleared by new credit."""

    @property
    def can_send(self) -> bool:
        return self.state in (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)

    @property
    def can_receive(self) -> bool:
        return self.state in (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)

    def end_local(self) -> None:
        self.state = (
            StreamState.HALF_CLOSED_LOCAL if self.state is StreamState.OPEN else StreamState.CLOSED
        )

    def end_remote(self) -> None:
        self.state = (
            StreamState.HALF_CLOSED_REMOTE if self.state is StreamState.OPEN else StreamState.CLOSED
        )


class StreamTable:
    """Which stream ids exist: the live streams, and the counters that tell a
    closed id (late frames are normal) from one never opened (an error)."""

    __slots__ = ("lingering", "live", "next_id", "peer_accepted", "peer_highest", "role")

    def __init__(self, role: Role) -> None:
        self.role = role
        self.live: dict[int, Stream] = {}
        # Cleanly closed streams whose received bytes are not all consumed
        # yet: they hold connection credit until consumed() releases it.
        self.lingering: dict[int, int] = {}
        self.next_id = 1 if role is Role.NODE else 2
        self.peer_highest = 0
        """Highest id the peer opened, accepted or refused."""
        self.peer_accepted = 0
        """Highest id the peer opened that we accepted (GOAWAY's last_stream_id)."""

    def ours(self, stream_id: int) -> bool:
        return opened_by(stream_id) is self.role

    def was_opened(self, stream_id: int) -> bool:
        highest = self.next_id - 2 if self.ours(stream_id) else self.peer_highest
        return 0 < stream_id <= highest

    def known(self, stream_id: int) -> Stream | None:
        """The live stream, or None for one already closed; an id never
        opened is the peer's error."""
        stream = self.live.get(stream_id)
        if stream is None and not self.was_opened(stream_id):
            raise RemoteProtocolError(f"frame for stream {stream_id}, which was never opened")
        return stream

    def count(self, *, local: bool) -> int:
        return sum(1 for s in self.live.values() if s.local is local)

    def close_if_done(self, stream: Stream) -> None:
        """Forget a stream whose halves both ended, keeping its unread byte count."""
        if stream.state is StreamState.CLOSED:
            del self.live[stream.id]
            if stream.recv.unconsumed:
                self.lingering[stream.id] = stream.recv.unconsumed

    def remove(self, stream: Stream) -> None:
        """Forget a reset stream; the caller releases its unread bytes."""
        del self.live[stream.id]
        stream.state = StreamState.CLOSED

    def clear(self) -> None:
        self.live.clear()
        self.lingering.clear()
