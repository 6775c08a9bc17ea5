"""Frame codec: one binary WebSocket message is exactly one frame.

Layout, network byte order (``struct`` format ``"!BBBI"``, 7 bytes)::

    +---------+--------+--------+----------------+----------------------
    | version |  type  | flags  |  stream id u32 |  payload (rest of message)
    +---------+--------+--------+----------------+----------------------

The WebSocket message already delimits the frame, so the header carries no
length. This module checks structure only (sizes, which stream a type may
travel on, which flags it may carry) and the three binary payloads (PING/PONG,
WINDOW_UPDATE, RESET). What a frame *means* for the connection is decided in
``connection.py``; the JSON payloads live in ``messages.py``.

Every rule is checked by one function, ``_check``, which takes the exception
class to raise: encoding a bad frame is our bug (``LocalProtocolError``),
decoding one is the peer's (``RemoteProtocolError``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from quorum.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

VERSION = 1
HEADER = struct.Struct("!BBBI")
HEADER_SIZE = HEADER.size
MAX_DATA = 64 * 1024
"""Largest DATA payload; bigger writes are split into several frames."""
MAX_PAYLOAD = 64 * 1024
"""Largest payload of any frame type (a JSON control payload or a head)."""
MAX_FRAME_SIZE = HEADER_SIZE + MAX_PAYLOAD
"""Largest legal WebSocket message; the adapter passes it as ``max_size``."""
MAX_STREAM_ID = 2**32 - 1
MAX_WINDOW = 2**31 - 1
"""No credit window may ever exceed this (an increment that would is an error)."""
MAX_RESET_MESSAGE = 1024
PING_SIZE = 8

_WINDOW = struct.Struct("!I")
_RESET = struct.Struct("!H")


class Role(IntEnum):
    """Which end of a tunnel a connection is. Nodes open odd stream ids, the relay even."""

    NODE = 1
    RELAY = 2


def opened_by(stream_id: int) -> Role:
    """The role that opens ``stream_id`` (which must not be 0)."""
    return Role.NODE if stream_id % 2 == 1 else Role.RELAY


class FrameType(IntEnum):
    # Stream 0: the connection itself.
    HELLO = 0x01
    PING = 0x02
    PONG = 0x03
    GOAWAY = 0x04
    PRESENCE = 0x05
    USAGE = 0x06
    REVOCATION = 0x07
    # Request streams.
    REQUEST = 0x10
    RESPONSE = 0x11
    DATA = 0x12
    RESET = 0x13
    # Either: stream 0 for the connection window, else that stream's window.
    WINDOW_UPDATE = 0x14


class Flag(IntFlag):
    NONE = 0
    END_STREAM = 0x01
    """The sender's half of the stream ends with this frame (REQUEST, RESPONSE, DATA)."""
    BLOCKED = 0x02
    """DATA only: the sender has more to send but this frame used the last of the
    stream's credit. The receiver's cue to grow the window (like QUIC's
    STREAM_DATA_BLOCKED); may ride on an empty DATA frame."""
    IGNORABLE = 0x80
    """A receiver that does not know this frame type drops it instead of failing."""


class ResetCode(IntEnum):
    """Why a stream was reset. Codes outside this enum are a protocol error."""

    CANCEL = 1
    """The opener (or the app behind it) gave up; nothing is wrong."""
    REFUSED = 2
    """The stream was not processed at all (limits, draining): safe to retry elsewhere."""
    NO_ROUTE = 3
    """The relay knows no live connection to the target node, or it holds no such model."""
    TIMEOUT = 4
    """The request's deadline passed."""
    PROTOCOL_ERROR = 5
    """A frame on this stream broke the protocol; other streams are unaffected."""
    FLOW_CONTROL = 6
    """The peer sent more than its credit, or overflowed a window."""
    INTERNAL = 7
    """A failure on the resetting side (engine crashed, bug)."""
    PEER_GONE = 8
    """The connection on the far side of the relay was lost."""
    TOO_LARGE = 9
    """A head or body is over the receiver's limit."""


CONTROL_TYPES = frozenset(
    {
        FrameType.HELLO,
        FrameType.PING,
        FrameType.PONG,
        FrameType.GOAWAY,
        FrameType.PRESENCE,
        FrameType.USAGE,
        FrameType.REVOCATION,
    }
)
STREAM_TYPES = frozenset({FrameType.REQUEST, FrameType.RESPONSE, FrameType.DATA, FrameType.RESET})
_END_STREAM_TYPES = frozenset({FrameType.REQUEST, FrameType.RESPONSE, FrameType.DATA})
_FIXED_SIZE = {
    FrameType.PING: PING_SIZE,
    FrameType.PONG: PING_SIZE,
    FrameType.WINDOW_UPDATE: _WINDOW.size,
}
_JSON_TYPES = (CONTROL_TYPES - {FrameType.PING, FrameType.PONG}) | {
    FrameType.REQUEST,
    FrameType.RESPONSE,
}


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame, before or after the wire. ``payload`` is opaque at this level."""

    type: FrameType
    stream_id: int = 0
    payload: bytes = b""
    flags: Flag = Flag.NONE

    @property
    def end_stream(self) -> bool:
        return bool(self.flags & Flag.END_STREAM)


def _check(frame: Frame, error: type[ProtocolError]) -> None:
    """Raise ``error`` unless ``frame`` is structurally legal."""
    kind, sid, size = frame.type, frame.stream_id, len(frame.payload)
    if not 0 <= sid <= MAX_STREAM_ID:
        raise error(f"stream id {sid} out of range")
    if kind in CONTROL_TYPES and sid != 0:
        raise error(f"{kind.name} must travel on stream 0, not {sid}")
    if kind in STREAM_TYPES and sid == 0:
        raise error(f"{kind.name} may not travel on stream 0")
    allowed = Flag.IGNORABLE | (Flag.END_STREAM if kind in _END_STREAM_TYPES else Flag.NONE)
    if kind is FrameType.DATA:
        allowed |= Flag.BLOCKED
    if frame.flags & ~allowed:
        raise error(f"{kind.name} does not allow flags {int(frame.flags):#04x}")
    fixed = _FIXED_SIZE.get(kind)
    if fixed is not None and size != fixed:
        raise error(f"{kind.name} payload must be {fixed} bytes, got {size}")
    if kind is FrameType.RESET and not _RESET.size <= size <= _RESET.size + MAX_RESET_MESSAGE:
        raise error(f"RESET payload of {size} bytes")
    if kind in _JSON_TYPES and size == 0:
        raise error(f"{kind.name} needs a payload")
    if size > MAX_PAYLOAD:
        raise error(f"{kind.name} payload of {size} bytes is over {MAX_PAYLOAD}")


def encode_frame(frame: Frame) -> bytes:
    """Serialize ``frame``; raise ``LocalProtocolError`` if it breaks a rule."""
    _check(frame, LocalProtocolError)
    return HEADER.pack(VERSION, frame.type, frame.flags, frame.stream_id) + frame.payload


def decode_frame(data: bytes, max_size: int = MAX_FRAME_SIZE) -> Frame | None:
    """Parse one WebSocket message into a frame.

    Returns ``None`` for a frame of unknown type that carries ``IGNORABLE``.
    Raises ``RemoteProtocolError`` for anything else that is not a legal frame:
    too short or over ``max_size``, another version, unknown type, flags the
    type does not allow, a payload of the wrong size, a stream id the type may
    not use.
    """
    if len(data) < HEADER_SIZE:
        raise RemoteProtocolError(f"frame of {len(data)} bytes is shorter than the header")
    if len(data) > max_size:
        raise RemoteProtocolError(f"frame of {len(data)} bytes is over {max_size}")
    version, kind, flags, sid = HEADER.unpack_from(data)
    if version != VERSION:
        raise RemoteProtocolError(f"unsupported protocol version {version}")
    try:
        frame_type = FrameType(kind)
    except ValueError:
        if flags & Flag.IGNORABLE:
            return None
        raise RemoteProtocolError(f"unknown frame type {kind:#04x}") from None
    frame = Frame(frame_type, sid, bytes(data[HEADER_SIZE:]), Flag(flags))
    _check(frame, RemoteProtocolError)
    return frame


def encode_window_update(increment: int) -> bytes:
    if not 1 <= increment <= MAX_WINDOW:
        raise LocalProtocolError(f"window increment {increment} out of range")
    return _WINDOW.pack(increment)


def decode_window_update(payload: bytes) -> int:
    (increment,) = _WINDOW.unpack(payload)
    if not 1 <= increment <= MAX_WINDOW:
        raise RemoteProtocolError(f"window increment {increment} out of range")
    return int(increment)


def encode_reset(code: ResetCode, message: str = "") -> bytes:
    """RESET payload: u16 code, then a UTF-8 diagnostic, cut to fit (it is never parsed)."""
    text = message.encode("utf-8", "replace")[:MAX_RESET_MESSAGE]
    # A cut may split a character; drop the partial one so the peer can decode strictly.
    text = text.decode("utf-8", "ignore").encode("utf-8")
    return _RESET.pack(ResetCode(code)) + text


def decode_reset(payload: bytes) -> tuple[ResetCode, str]:
    (raw,) = _RESET.unpack_from(payload)
    try:
        return ResetCode(raw), payload[_RESET.size :].decode("utf-8")
    except ValueError as exc:  # unknown code or bad UTF-8
        raise RemoteProtocolError(f"bad RESET payload: {exc}") from None
