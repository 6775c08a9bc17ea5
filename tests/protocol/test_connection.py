"""Node side against relay side through an in-memory link: the stream life cycle."""

from __future__ import annotations

from typing import TypeVar

import pytest

from quorum.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from quorum.protocol import (
    Connection,
    ConnectionState,
    DataReceived,
    Event,
    GoAway,
    GoAwayReason,
    GoAwayReceived,
    Hello,
    HelloReceived,
    Limits,
    ModelInfo,
    PingReceived,
    PongReceived,
    Presence,
    PresenceReceived,
    RequestHead,
    ResetCode,
    ResponseHead,
    ResponseReceived,
    Role,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamState,
    Usage,
    UsageReceived,
    UsageRecord,
)
from quorum.protocol.frames import Flag, Frame, FrameType, decode_frame, encode_frame, encode_reset

from .helpers import HEAD, OK, Pair, body, consume_all


def kinds(frames: list[bytes]) -> list[FrameType]:
    decoded = [decode_frame(f) for f in frames]
    return [f.type for f in decoded if f is not None]


E = TypeVar("E")


def of_type(events: list[Event], cls: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, cls)]


def test_handshake_reports_each_hello_and_opens_the_connection() -> None:
    pair = Pair(handshake=False)
    assert pair.node.state is ConnectionState.HANDSHAKE
    assert pair.node.data_to_send() == []  # nothing before our HELLO
    pair.node.send_hello("studio", ["presence"])
    pair.relay.send_hello("relay-1")
    node_events, relay_events = pair.exchange()
    (hello,) = of_type(relay_events, HelloReceived)
    assert hello.hello.node_id == "studio" and hello.hello.role is Role.NODE
    assert hello.hello.capabilities == ("presence",)
    assert of_type(node_events, HelloReceived)[0].hello.role is Role.RELAY
    assert pair.node.state is pair.relay.state is ConnectionState.OPEN


def test_full_request_and_response_in_many_chunks() -> None:
    pair = Pair()
    request = bytes(range(256)) * 1000  # 256 000 bytes, under one window
    sid = pair.node.open_stream(HEAD)
    assert sid == 1
    for start in range(0, len(request), 1000):
        assert pair.node.send_data(sid, request[start : start + 1000]) == 1000
    pair.node.end_stream(sid)
    _, relay_events = pair.exchange()
    opened = of_type(relay_events, StreamOpened)
    assert opened == [StreamOpened(sid, HEAD, end_stream=False)]
    assert body(relay_events, sid) == request
    assert relay_events[-1] == StreamEnded(sid)
    consume_all(pair.relay, relay_events)
    assert pair.relay.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE
    assert pair.node.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL

    pair.relay.send_response_head(sid, OK)
    chunks = [f"data: {i}\n\n".encode() for i in range(500)]
    for chunk in chunks:
        assert pair.relay.send_data(sid, chunk) == len(chunk)
    pair.relay.end_stream(sid)
    node_events, _ = pair.exchange()
    assert of_type(node_events, ResponseReceived) == [ResponseReceived(sid, OK, False)]
    assert body(node_events, sid) == b"".join(chunks)
    assert node_events[-1] == StreamEnded(sid)
    consume_all(pair.node, node_events)
    assert pair.node.active_streams == pair.relay.active_streams == 0
    assert pair.node.stream_state(sid) is pair.relay.stream_state(sid) is StreamState.CLOSED


def test_relay_opens_even_streams_towards_the_node() -> None:
    pair = Pair()
    first = pair.relay.open_stream(HEAD, end_stream=True)
    second = pair.relay.open_stream(HEAD, end_stream=True)
    assert (first, second) == (2, 4)
    node_events, _ = pair.exchange()
    assert of_type(node_events, StreamOpened)[0].end_stream is True
    assert of_type(node_events, StreamEnded) == [StreamEnded(2), StreamEnded(4)]
    pair.node.send_response_head(first, ResponseHead(204), end_stream=True)
    _, relay_events = pair.exchange()
    assert relay_events == [ResponseReceived(first, ResponseHead(204), True), StreamEnded(first)]
    assert pair.relay.stream_state(first) is StreamState.CLOSED


def test_node_resets_its_stream_and_relay_is_told() -> None:
    pair = Pair()
    sid = pair.node.open_stream(HEAD)
    pair.exchange()
    pair.node.reset_stream(sid, ResetCode.CANCEL, "client went away")
    _, relay_events = pair.exchange()
    assert relay_events == [StreamReset(sid, ResetCode.CANCEL, "client went away", remote=True)]
    assert pair.node.active_streams == pair.relay.active_streams == 0
    with pytest.raises(LocalProtocolError):
        pair.node.send_data(sid, b"late")
    pair.node.reset_stream(sid, ResetCode.CANCEL)  # already closed: no-op


def test_relay_resets_while_node_data_is_in_flight() -> None:
    pair = Pair()
    sid = pair.node.open_stream(HEAD)
    pair.exchange()
    pair.node.send_data(sid, b"x" * 100_000)  # queued, "on the wire"
    pair.relay.reset_stream(sid, ResetCode.NO_ROUTE, "studio is offline")
    relay_events = pair.deliver(pair.node)  # the late DATA arrives after the reset
    assert relay_events == []
    node_events = pair.deliver(pair.relay)
    assert node_events == [StreamReset(sid, ResetCode.NO_ROUTE, "studio is offline", True)]
    # The late bytes' connection credit was handed back: a new stream can use it all.
    pair.exchange()
    other = pair.node.open_stream(HEAD)
    pair.exchange()
    assert pair.node.send_credit(other) == 256 * 1024


def test_data_before_response_head_and_after_end_is_refused_locally() -> None:
    pair = Pair()
    sid = pair.node.open_stream(HEAD, end_stream=True)
    pair.exchange()
    with pytest.raises(LocalProtocolError):
        pair.relay.send_data(sid, b"too early")
    with pytest.raises(LocalProtocolError):
        pair.node.send_data(sid, b"after end")
    with pytest.raises(LocalProtocolError):
        pair.node.send_response_head(sid, OK)  # the opener does not answer
    pair.relay.send_response_head(sid, OK)
    with pytest.raises(LocalProtocolError):
        pair.relay.send_response_head(sid, OK)
    with pytest.raises(LocalProtocolError):
        pair.node.send_data(99, b"never opened")


def test_control_frames_leave_before_data() -> None:
    pair = Pair()
    a = pair.node.open_stream(HEAD)
    pair.node.send_data(a, b"a" * 200_000)
    b = pair.node.open_stream(HEAD)
    pair.node.send_data(b, b"b" * 10)
    pair.node.send_ping(b"12345678")
    pair.node.reset_stream(a, ResetCode.CANCEL)
    pair.node.send_presence(Presence("studio", (ModelInfo("qwen3"),)))
    sent = kinds(pair.node.data_to_send())
    assert sent == [
        FrameType.REQUEST,
        FrameType.REQUEST,
        FrameType.PING,
        FrameType.RESET,
        FrameType.PRESENCE,
        FrameType.DATA,
    ]


def test_data_of_different_streams_is_interleaved() -> None:
    pair = Pair()
    a = pair.node.open_stream(HEAD)
    b = pair.node.open_stream(HEAD)
    pair.node.send_data(a, b"a" * 200_000)
    pair.node.send_data(b, b"b" * 200_000)
    pair.node.end_stream(a)
    frames = [decode_frame(f) for f in pair.node.data_to_send()]
    data = [f.stream_id for f in frames if f is not None and f.type is FrameType.DATA]
    assert data == [a, b, a, b, a, b, a, b, a]  # four 64 KiB-or-less chunks each, then END
    end = frames[-1]
    assert end is not None and end.flags & Flag.END_STREAM and end.payload == b""


def test_ping_is_answered_with_the_same_payload() -> None:
    pair = Pair()
    pair.node.send_ping(b"\x00\x01\x02\x03\x04\x05\x06\x07")
    node_events, relay_events = pair.exchange()
    assert relay_events == [PingReceived(b"\x00\x01\x02\x03\x04\x05\x06\x07")]
    assert node_events == [PongReceived(b"\x00\x01\x02\x03\x04\x05\x06\x07")]
    with pytest.raises(LocalProtocolError):
        pair.node.send_ping(b"short")


def test_presence_and_usage_travel_on_stream_zero() -> None:
    pair = Pair()
    presence = Presence("studio", (ModelInfo("whisper", "stt", "asr", ("timestamps",)),))
    usage = Usage((UsageRecord("qwen3", 3, 100, 200),))
    pair.node.send_presence(presence)
    pair.node.send_usage(usage)
    pair.relay.send_presence(Presence("laptop", online=False, age_ms=1500))
    node_events, relay_events = pair.exchange()
    assert relay_events == [PresenceReceived(presence), UsageReceived(usage)]
    assert node_events == [PresenceReceived(Presence("laptop", online=False, age_ms=1500))]


def test_concurrent_stream_limit_refuses_the_extra_stream() -> None:
    pair = Pair(relay_limits=Limits(max_streams=2))
    assert pair.node.peer_hello is not None and pair.node.peer_hello.max_streams == 2
    pair.node.open_stream(HEAD)
    pair.node.open_stream(HEAD)
    assert not pair.node.can_open_stream()
    with pytest.raises(LocalProtocolError):
        pair.node.open_stream(HEAD)
    # A peer that ignores the announced limit is refused, stream by stream.
    pair.exchange()
    rogue = encode_frame(Frame(FrameType.REQUEST, 5, HEAD.encode()))
    assert pair.relay.receive_frame(rogue, pair.now) == []
    assert kinds(pair.relay.data_to_send()) == [FrameType.RESET]
    assert pair.relay.state is ConnectionState.OPEN


def test_closing_a_stream_frees_its_slot() -> None:
    pair = Pair(relay_limits=Limits(max_streams=1))
    sid = pair.node.open_stream(HEAD, end_stream=True)
    pair.exchange()
    assert not pair.node.can_open_stream()
    pair.relay.send_response_head(sid, OK, end_stream=True)
    pair.exchange()
    assert pair.node.can_open_stream()


def test_opens_per_second_limit_uses_the_injected_clock() -> None:
    pair = Pair(relay_limits=Limits(max_opens_per_second=3))
    sids = [pair.node.open_stream(HEAD, end_stream=True) for _ in range(4)]
    node_events, relay_events = pair.exchange()
    assert [e.stream_id for e in of_type(relay_events, StreamOpened)] == sids[:3]
    (refused,) = of_type(node_events, StreamReset)
    assert (refused.stream_id, refused.code, refused.remote) == (sids[3], ResetCode.REFUSED, True)
    pair.now += 1 / 3  # one token back, exactly
    again = pair.node.open_stream(HEAD, end_stream=True)
    over = pair.node.open_stream(HEAD, end_stream=True)
    node_events, relay_events = pair.exchange()
    assert [e.stream_id for e in of_type(relay_events, StreamOpened)] == [again]
    assert [e.stream_id for e in of_type(node_events, StreamReset)] == [over]
    pair.now += 60  # the bucket refills only up to its burst
    burst = [pair.node.open_stream(HEAD, end_stream=True) for _ in range(4)]
    node_events, relay_events = pair.exchange()
    assert [e.stream_id for e in of_type(relay_events, StreamOpened)] == burst[:3]


def test_oversized_request_head_is_reset_too_large() -> None:
    pair = Pair(relay_limits=Limits(max_header_block=1024))
    sid = pair.node.open_stream(RequestHead("POST", "/v1/x", (("x-big", "v" * 2000),)))
    node_events, relay_events = pair.exchange()
    assert relay_events == []
    (reset,) = node_events
    assert isinstance(reset, StreamReset)
    assert (reset.stream_id, reset.code, reset.remote) == (sid, ResetCode.TOO_LARGE, True)


def test_goaway_stops_new_streams_and_lets_running_ones_finish() -> None:
    pair = Pair()
    running = pair.node.open_stream(HEAD)
    pair.exchange()
    pair.relay.send_goaway(GoAwayReason.SHUTDOWN, "restarting")
    assert pair.relay.state is ConnectionState.DRAINING
    late = pair.node.open_stream(HEAD)  # crosses the GOAWAY on the wire
    node_events, relay_events = pair.exchange()
    (goaway,) = of_type(node_events, GoAwayReceived)
    assert goaway.goaway.last_stream_id == running
    assert goaway.goaway.reason is GoAwayReason.SHUTDOWN
    assert StreamReset(late, ResetCode.REFUSED, "refused by GOAWAY", True) in node_events
    assert of_type(relay_events, StreamOpened) == []  # the late one was refused, not opened
    assert not pair.node.can_open_stream()
    with pytest.raises(LocalProtocolError):
        pair.node.open_stream(HEAD)
    with pytest.raises(LocalProtocolError):
        pair.relay.open_stream(HEAD)
    # The running stream completes normally.
    pair.node.send_data(running, b"body")
    pair.node.end_stream(running)
    pair.relay.send_response_head(running, OK)
    pair.relay.send_data(running, b"answer")
    pair.relay.end_stream(running)
    node_events, relay_events = pair.exchange()
    assert body(relay_events, running) == b"body"
    assert body(node_events, running) == b"answer"
    assert pair.node.active_streams == pair.relay.active_streams == 0


def test_goaway_may_lower_but_not_raise_last_stream_id() -> None:
    pair = Pair()
    first = pair.node.open_stream(HEAD, end_stream=True)
    second = pair.node.open_stream(HEAD, end_stream=True)
    pair.exchange()
    pair.relay.send_goaway(GoAwayReason.SHUTDOWN)
    pair.exchange()
    assert pair.node.goaway_received is not None
    assert pair.node.goaway_received.last_stream_id == second

    def goaway(last: int) -> bytes:
        payload = GoAway(last, GoAwayReason.SHUTDOWN).encode()
        return encode_frame(Frame(FrameType.GOAWAY, 0, payload))

    events = pair.node.receive_frame(goaway(first), pair.now)
    assert events[-1] == StreamReset(second, ResetCode.REFUSED, "refused by GOAWAY", True)
    with pytest.raises(RemoteProtocolError, match="raised"):
        pair.node.receive_frame(goaway(second), pair.now)


def test_remote_error_closes_the_connection_with_goaway() -> None:
    pair = Pair()
    sid = pair.node.open_stream(HEAD)
    pair.exchange()
    bogus = encode_frame(Frame(FrameType.DATA, 41, b"x"))  # never opened
    with pytest.raises(RemoteProtocolError, match="never opened"):
        pair.relay.receive_frame(bogus, pair.now)
    assert pair.relay.state is ConnectionState.CLOSED
    assert kinds(pair.relay.data_to_send()) == [FrameType.GOAWAY]
    assert pair.relay.connection_lost() == [
        StreamReset(sid, ResetCode.PROTOCOL_ERROR, "tunnel connection lost", False)
    ]
    with pytest.raises(LocalProtocolError):
        pair.relay.receive_frame(bogus, pair.now)
    with pytest.raises(LocalProtocolError):
        pair.relay.send_ping(b"12345678")


def test_connection_lost_fails_every_running_stream() -> None:
    pair = Pair()
    a = pair.node.open_stream(HEAD)
    b = pair.node.open_stream(HEAD)
    pair.exchange()
    events = pair.node.connection_lost()
    assert events == [
        StreamReset(a, ResetCode.PEER_GONE, "tunnel connection lost", False),
        StreamReset(b, ResetCode.PEER_GONE, "tunnel connection lost", False),
    ]
    assert pair.node.state is ConnectionState.CLOSED
    assert pair.node.data_to_send() == []


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (Frame(FrameType.REQUEST, 2, HEAD.encode()), "our parity"),
        (Frame(FrameType.RESPONSE, 7, OK.encode()), "never opened"),
        (Frame(FrameType.RESET, 9, encode_reset(ResetCode.CANCEL)), "never opened"),
        (Frame(FrameType.WINDOW_UPDATE, 11, b"\x00\x00\x00\x01"), "never opened"),
        (Frame(FrameType.HELLO, 0, Hello(1, "x", Role.NODE, 1).encode()), "second HELLO"),
        (Frame(FrameType.GOAWAY, 0, b'{"last_stream_id":3,"reason":1}'), "never opened"),
        (Frame(FrameType.WINDOW_UPDATE, 0, b"\x7f\xff\xff\xff"), "overflow"),
    ],
)
def test_peer_violations_are_remote_errors(frame: Frame, why: str) -> None:
    pair = Pair()
    with pytest.raises(RemoteProtocolError, match=why):
        pair.relay.receive_frame(encode_frame(frame), pair.now)


def test_stream_ids_must_increase() -> None:
    pair = Pair()
    pair.node.open_stream(HEAD, end_stream=True)
    pair.node.open_stream(HEAD, end_stream=True)
    pair.exchange()
    with pytest.raises(RemoteProtocolError, match="not above"):
        pair.relay.receive_frame(encode_frame(Frame(FrameType.REQUEST, 1, HEAD.encode())), 0)


def test_first_frame_must_be_hello_and_from_the_other_role() -> None:
    relay = Connection(Role.RELAY)
    relay.send_hello("relay-1")
    with pytest.raises(RemoteProtocolError, match="before HELLO"):
        relay.receive_frame(encode_frame(Frame(FrameType.PING, 0, b"12345678")), 0)
    relay = Connection(Role.RELAY)
    other_relay = Connection(Role.RELAY)
    other_relay.send_hello("relay-2")
    with pytest.raises(RemoteProtocolError, match="own role"):
        for frame in other_relay.data_to_send():
            relay.receive_frame(frame, 0)


def test_stream_rule_violation_resets_only_that_stream() -> None:
    pair = Pair()
    a = pair.node.open_stream(HEAD)
    b = pair.node.open_stream(HEAD)
    pair.exchange()
    # DATA before RESPONSE on the node's stream `a`.
    events = pair.node.receive_frame(encode_frame(Frame(FrameType.DATA, a, b"x")), pair.now)
    assert events == [StreamReset(a, ResetCode.PROTOCOL_ERROR, "DATA before RESPONSE", False)]
    assert pair.node.state is ConnectionState.OPEN
    assert pair.node.stream_state(b) is StreamState.OPEN
    _, relay_events = pair.exchange()
    assert of_type(relay_events, StreamReset)[0].code is ResetCode.PROTOCOL_ERROR


def test_unknown_ignorable_frame_is_skipped() -> None:
    pair = Pair()
    future = bytes([1, 0x7E, Flag.IGNORABLE, 0, 0, 0, 0]) + b"whatever"
    assert pair.relay.receive_frame(future, pair.now) == []
    with pytest.raises(ProtocolError):
        pair.relay.receive_frame(bytes([1, 0x7E, 0, 0, 0, 0, 0]), pair.now)


def test_local_misuse_before_hello() -> None:
    node = Connection(Role.NODE)
    with pytest.raises(LocalProtocolError, match="HELLO first"):
        node.open_stream(HEAD)
    node.send_hello("studio")
    with pytest.raises(LocalProtocolError):
        node.send_hello("studio")
    with pytest.raises(LocalProtocolError):
        node.open_stream(HEAD)  # the peer's HELLO has not arrived
    with pytest.raises(LocalProtocolError):
        node.consumed(1, 10)
    with pytest.raises(LocalProtocolError):
        node.reset_stream(3, ResetCode.CANCEL)


def test_data_received_carries_the_exact_bytes() -> None:
    pair = Pair()
    sid = pair.node.open_stream(HEAD)
    pair.node.send_data(sid, b"\x00\xff" * 10)
    _, relay_events = pair.exchange()
    assert of_type(relay_events, DataReceived) == [DataReceived(sid, b"\x00\xff" * 10)]
