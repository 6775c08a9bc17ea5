"""What ``Connection.receive_frame`` reports: frozen values, one per thing that happened."""

from __future__ import annotations

from dataclasses import dataclass

from .frames import ResetCode
from .messages import GoAway, Hello, Presence, RequestHead, ResponseHead, Usage
from .revocations import Revocation


@dataclass(frozen=True, slots=True)
class HelloReceived:
    hello: Hello


@dataclass(frozen=True, slots=True)
class PresenceReceived:
    presence: Presence


@dataclass(frozen=True, slots=True)
class UsageReceived:
    usage: Usage


@dataclass(frozen=True, slots=True)
class RevocationReceived:
    """(At a node that announced ``revocations``.) Drop every cached answer about API keys."""

    revocation: Revocation


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The PONG is already queued; this is for liveness bookkeeping only."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PongReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """No new streams on this connection. Our streams above ``last_stream_id``
    are reported reset REFUSED right after this event."""

    goaway: GoAway


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream with this request. If ``end_stream``, there is
    no body, and ``StreamEnded`` follows at once."""

    stream_id: int
    head: RequestHead
    end_stream: bool


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The answer to a stream we opened. ``end_stream`` as for ``StreamOpened``."""

    stream_id: int
    head: ResponseHead
    end_stream: bool


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Body bytes. Pass ``len(data)`` to ``Connection.consumed`` once they are
    handed on (written downstream, read by the app): only that grants the
    peer more credit."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer's half ended (always reported, whichever frame carried END_STREAM)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is dead. ``remote``: the peer reset it (or refused it by GOAWAY);
    otherwise we did, because the peer broke a stream rule or the connection
    was lost. Its unconsumed bytes are released: drop whatever is buffered."""

    stream_id: int
    code: ResetCode
    message: str
    remote: bool


@dataclass(frozen=True, slots=True)
class StreamWritable:
    """Send credit arrived for a stream whose last ``send_data`` fell short."""

    stream_id: int


Event = (
    HelloReceived
    | PresenceReceived
    | UsageReceived
    | RevocationReceived
    | PingReceived
    | PongReceived
    | GoAwayReceived
    | StreamOpened
    | ResponseReceived
    | DataReceived
    | StreamEnded
    | StreamReset
    | StreamWritable
)
