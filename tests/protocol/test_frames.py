"""The codec: every frame type and message survives a round trip; bad input is refused."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given

from quorum.errors import LocalProtocolError, RemoteProtocolError
from quorum.protocol import (
    MAX_DATA,
    MAX_FRAME_SIZE,
    GoAway,
    Hello,
    Presence,
    RequestHead,
    ResetCode,
    ResponseHead,
    Usage,
)
from quorum.protocol.frames import (
    HEADER,
    HEADER_SIZE,
    VERSION,
    Flag,
    Frame,
    FrameType,
    decode_frame,
    decode_reset,
    decode_window_update,
    encode_frame,
    encode_reset,
    encode_window_update,
)

from . import strategies as s


def raw(
    kind: int, sid: int = 0, payload: bytes = b"", flags: int = 0, version: int = VERSION
) -> bytes:
    return HEADER.pack(version, kind, flags, sid) + payload


@given(s.frames())
def test_every_frame_type_round_trips(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


def test_header_is_seven_bytes_and_network_order() -> None:
    wire = encode_frame(Frame(FrameType.DATA, 0x01020304, b"xy", Flag.END_STREAM))
    assert HEADER_SIZE == 7
    assert wire == bytes([1, 0x12, 0x01, 1, 2, 3, 4]) + b"xy"


@given(s.hellos)
def test_hello_round_trips(message: Hello) -> None:
    assert Hello.decode(message.encode()) == message


@given(s.presences)
def test_presence_round_trips(message: Presence) -> None:
    assert Presence.decode(message.encode()) == message


@given(s.usages)
def test_usage_round_trips(message: Usage) -> None:
    assert Usage.decode(message.encode()) == message


@given(s.goaways)
def test_goaway_round_trips(message: GoAway) -> None:
    assert GoAway.decode(message.encode()) == message


@given(s.request_heads)
def test_request_head_round_trips(message: RequestHead) -> None:
    assert RequestHead.decode(message.encode()) == message


@given(s.response_heads)
def test_response_head_round_trips(message: ResponseHead) -> None:
    assert ResponseHead.decode(message.encode()) == message


def test_reset_and_window_payloads_round_trip() -> None:
    for code in ResetCode:
        assert decode_reset(encode_reset(code, "why ✓")) == (code, "why ✓")
    assert decode_window_update(encode_window_update(1)) == 1
    assert decode_window_update(encode_window_update(2**31 - 1)) == 2**31 - 1


def test_reset_message_is_cut_on_a_character_boundary() -> None:
    code, message = decode_reset(encode_reset(ResetCode.INTERNAL, "é" * 2000))
    assert code is ResetCode.INTERNAL
    assert message == "é" * 512


def test_largest_data_frame_is_accepted_and_one_more_byte_is_not() -> None:
    biggest = raw(FrameType.DATA, 1, b"x" * MAX_DATA)
    assert len(biggest) == MAX_FRAME_SIZE
    frame = decode_frame(biggest)
    assert frame is not None and len(frame.payload) == MAX_DATA
    with pytest.raises(RemoteProtocolError):
        decode_frame(biggest + b"x")
    with pytest.raises(LocalProtocolError):
        encode_frame(Frame(FrameType.DATA, 1, b"x" * (MAX_DATA + 1)))


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"", "shorter"),
        (b"\x01\x12\x00\x00\x00\x01", "shorter"),
        (raw(FrameType.DATA, 1, version=2), "version"),
        (raw(0x7F, 0), "unknown frame type"),
        (raw(FrameType.PING, 0, b"1234567"), "8 bytes"),
        (raw(FrameType.PING, 3, b"12345678"), "stream 0"),
        (raw(FrameType.DATA, 0, b"x"), "stream 0"),
        (raw(FrameType.RESET, 0, b"\x00\x01"), "stream 0"),
        (raw(FrameType.DATA, 1, b"x", flags=0x04), "flags"),
        (raw(FrameType.PING, 0, b"12345678", flags=Flag.END_STREAM), "flags"),
        (raw(FrameType.HELLO, 0, b""), "needs a payload"),
        (raw(FrameType.WINDOW_UPDATE, 1, b"\x00\x00"), "4 bytes"),
        (raw(FrameType.RESET, 1, b"\x00"), "RESET payload"),
    ],
)
def test_structurally_bad_frames_are_remote_errors(wire: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        decode_frame(wire)


def test_unknown_type_with_ignorable_flag_is_dropped() -> None:
    assert decode_frame(raw(0x7F, 0, b"future", flags=Flag.IGNORABLE)) is None


def test_bad_binary_payloads_are_remote_errors() -> None:
    with pytest.raises(RemoteProtocolError, match="increment"):
        decode_window_update(struct.pack("!I", 0))
    with pytest.raises(RemoteProtocolError, match="increment"):
        decode_window_update(struct.pack("!I", 2**31))
    with pytest.raises(RemoteProtocolError, match="RESET"):
        decode_reset(struct.pack("!H", 99))
    with pytest.raises(RemoteProtocolError, match="RESET"):
        decode_reset(struct.pack("!H", 1) + b"\xff")


def test_encoding_a_broken_frame_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(Frame(FrameType.HELLO, 5, b"{}"))
    with pytest.raises(LocalProtocolError):
        encode_frame(Frame(FrameType.DATA, 2**32, b""))
    with pytest.raises(LocalProtocolError):
        encode_window_update(0)
