"""Credit windows: a frozen reader stops its sender after one window, and nothing more."""

from __future__ import annotations

import pytest

from quorum.errors import LocalProtocolError, RemoteProtocolError
from quorum.protocol import (
    ConnectionState,
    DataReceived,
    Limits,
    ResetCode,
    StreamOpened,
    StreamReset,
    StreamWritable,
)
from quorum.protocol.frames import Flag, Frame, FrameType, decode_frame, encode_frame

from .helpers import HEAD, OK, Pair, body, consume_all

KIB = 1024
MIB = 1024 * KIB
WINDOW = 256 * KIB


def responding_pair() -> tuple[Pair, int]:
    """A pair with one node stream the relay has answered (so both ways may carry DATA)."""
    pair = Pair()
    sid = pair.node.open_stream(HEAD)
    pair.exchange()
    pair.relay.send_response_head(sid, OK)
    pair.exchange()
    return pair, sid


def raw_data(sid: int, size: int, flags: Flag = Flag.NONE) -> bytes:
    return encode_frame(Frame(FrameType.DATA, sid, b"d" * size, flags))


def test_frozen_reader_stops_the_sender_at_exactly_one_window() -> None:
    pair, sid = responding_pair()
    big = b"z" * MIB
    assert pair.relay.send_data(sid, big) == WINDOW
    assert pair.relay.send_credit(sid) == 0
    assert pair.relay.send_data(sid, big[WINDOW:]) == 0
    node_events, _ = pair.exchange()
    assert len(body(node_events, sid)) == WINDOW
    # However long the link stays up, nothing more moves or piles up anywhere.
    for _ in range(3):
        assert pair.exchange() == ([], [])
    assert pair.relay.send_data(sid, big) == 0
    assert pair.relay.data_to_send() == []


def test_consumed_releases_credit_in_batches() -> None:
    pair, sid = responding_pair()
    pair.relay.send_data(sid, b"z" * MIB)
    pair.exchange()
    pair.node.consumed(sid, 10 * KIB)  # under half a window: not worth a frame
    pair.node.consumed(sid, 100 * KIB)
    assert pair.node.data_to_send() == []
    pair.node.consumed(sid, 30 * KIB)
    _, relay_events = pair.exchange()
    assert relay_events == [StreamWritable(sid)]
    assert pair.relay.send_credit(sid) == 140 * KIB
    with pytest.raises(LocalProtocolError):
        pair.node.consumed(sid, WINDOW)  # more than is unread


@pytest.mark.parametrize("max_window", [WINDOW, 4 * MIB])
def test_relay_grants_upstream_only_after_writing_downstream(max_window: int) -> None:
    # Node A uploads a body through the relay to node B, whose reader is frozen.
    up = Pair(relay_limits=Limits(max_window=max_window))
    down = Pair()
    up_sid = up.node.open_stream(HEAD)
    up.exchange()
    down_sid = down.relay.open_stream(HEAD)
    down.exchange()
    held = b""  # what the relay has received from A but B's window did not take yet

    def pump() -> None:
        nonlocal held
        for event in up.deliver(up.node):
            if isinstance(event, DataReceived):
                held += event.data
        taken = down.relay.send_data(down_sid, held) if held else 0
        held = held[taken:]
        up.relay.consumed(up_sid, taken)  # credit upstream only for what went downstream
        up.deliver(up.relay)
        down.exchange()

    upload = b"u" * (8 * MIB)
    progress = []
    accepted = 0
    for _ in range(20):
        accepted += up.node.send_data(up_sid, upload[accepted:])
        pump()
        progress.append(accepted)
    # A stalls for good; the relay holds at most A's window, B at most its own.
    assert progress[-1] == progress[-10]
    assert up.node.send_credit(up_sid) == 0
    assert len(held) <= max_window
    assert accepted == len(held) + WINDOW
    if max_window == WINDOW:
        assert accepted == 2 * WINDOW


def test_connection_window_caps_the_sum_of_streams() -> None:
    pair = Pair(relay_limits=Limits(connection_window=MIB))
    sids = [pair.node.open_stream(HEAD) for _ in range(6)]
    pair.exchange()
    accepted = [pair.node.send_data(sid, b"x" * WINDOW) for sid in sids]
    assert accepted == [WINDOW] * 4 + [0, 0]
    _, relay_events = pair.exchange()
    assert sum(len(e.data) for e in relay_events if isinstance(e, DataReceived)) == MIB
    pair.relay.consumed(sids[0], WINDOW)  # a quarter of the connection's window: kept
    assert pair.exchange() == ([], [])  # (the stream's own credit goes back: nobody waits)
    pair.relay.consumed(sids[1], WINDOW)  # half of it: granted back
    node_events, _ = pair.exchange()
    assert node_events == [StreamWritable(sids[4]), StreamWritable(sids[5])]
    assert pair.node.send_data(sids[4], b"x" * WINDOW) == WINDOW
    assert pair.node.send_data(sids[5], b"x" * 2 * WINDOW) == WINDOW
    assert pair.node.send_credit(sids[1]) == 0  # its own credit back, the connection's not


def test_blocked_streams_wake_when_connection_credit_returns() -> None:
    pair = Pair(relay_limits=Limits(connection_window=MIB))
    sids = [pair.node.open_stream(HEAD) for _ in range(5)]
    pair.exchange()
    for sid in sids:
        pair.node.send_data(sid, b"x" * WINDOW)
    _, relay_events = pair.exchange()
    done = {sids[0], sids[1]}  # half the connection's window: worth a grant
    consume_all(pair.relay, [e for e in relay_events if getattr(e, "stream_id", 0) in done])
    node_events = pair.deliver(pair.relay)
    assert node_events == [StreamWritable(sids[4])]
    assert pair.node.send_credit(sids[4]) == WINDOW


def test_reset_of_unsent_data_returns_connection_credit() -> None:
    pair = Pair(relay_limits=Limits(connection_window=MIB))
    sids = [pair.node.open_stream(HEAD) for _ in range(5)]
    pair.exchange()
    for sid in sids:
        pair.node.send_data(sid, b"x" * WINDOW)  # the fifth gets nothing
    pair.node.reset_stream(sids[0], ResetCode.CANCEL)  # its 256 KiB never left
    assert pair.node.take_events() == [StreamWritable(sids[4])]
    assert pair.node.send_credit(sids[4]) == WINDOW


def test_ended_streams_hold_connection_credit_until_consumed() -> None:
    pair = Pair(relay_limits=Limits(connection_window=MIB))
    sids = [pair.node.open_stream(HEAD) for _ in range(4)]
    pair.exchange()
    for sid in sids:
        pair.node.send_data(sid, b"x" * WINDOW)
        pair.node.end_stream(sid)
        pair.relay.send_response_head(sid, OK, end_stream=True)
    pair.exchange()
    assert pair.node.active_streams == pair.relay.active_streams == 0
    late = pair.node.open_stream(HEAD)
    pair.exchange()
    assert pair.node.send_credit(late) == 0  # the relay's app still holds 1 MiB
    pair.relay.consumed(sids[0], WINDOW)
    pair.relay.reset_stream(sids[1], ResetCode.CANCEL)  # dropping them releases too
    pair.exchange()
    assert pair.node.send_credit(late) == WINDOW
    with pytest.raises(LocalProtocolError):
        pair.relay.consumed(sids[2], WINDOW + 1)


def test_data_beyond_the_stream_window_resets_that_stream() -> None:
    pair = Pair()
    sid = pair.node.open_stream(HEAD)
    other = pair.node.open_stream(HEAD)
    pair.exchange()
    for _ in range(4):
        pair.relay.receive_frame(raw_data(sid, 64 * KIB), pair.now)
    events = pair.relay.receive_frame(raw_data(sid, 1), pair.now)
    assert events == [
        StreamReset(sid, ResetCode.FLOW_CONTROL, "DATA beyond the stream window", False)
    ]
    assert pair.relay.state is ConnectionState.OPEN
    assert pair.relay.receive_frame(raw_data(other, 10), pair.now) == [
        DataReceived(other, b"d" * 10)
    ]


def test_data_beyond_the_connection_window_fails_the_connection() -> None:
    pair = Pair(relay_limits=Limits(connection_window=MIB))
    sids = [pair.node.open_stream(HEAD) for _ in range(5)]
    pair.exchange()
    for sid in sids[:4]:
        for _ in range(4):
            pair.relay.receive_frame(raw_data(sid, 64 * KIB), pair.now)
    with pytest.raises(RemoteProtocolError, match="connection window"):
        pair.relay.receive_frame(raw_data(sids[4], 1), pair.now)


def test_stream_window_overflow_resets_the_stream() -> None:
    pair, sid = responding_pair()
    update = encode_frame(Frame(FrameType.WINDOW_UPDATE, sid, (2**31 - 1).to_bytes(4, "big")))
    events = pair.relay.receive_frame(update, pair.now)
    assert [type(e) for e in events] == [StreamReset]
    assert pair.relay.state is ConnectionState.OPEN


def test_bigger_initial_window_is_granted_at_open() -> None:
    pair = Pair(relay_limits=Limits(initial_window=MIB, max_window=MIB))
    sid = pair.node.open_stream(HEAD)
    _, relay_events = pair.exchange()
    assert [type(e) for e in relay_events] == [StreamOpened]
    assert pair.node.send_credit(sid) == MIB


def run_rounds(pair: Pair, sid: int, rounds: int, *, fast_reader: bool) -> list[int]:
    """Each round: the node sends all it may; the frames reach the relay; the grants
    come back only afterwards (one round trip). Returns what each round accepted."""
    accepted = []
    for _ in range(rounds):
        accepted.append(pair.node.send_data(sid, b"x" * (8 * MIB)))
        unread = []
        for frame in pair.node.data_to_send():
            for event in pair.relay.receive_frame(frame, pair.now):
                if isinstance(event, DataReceived):
                    if fast_reader:
                        pair.relay.consumed(sid, len(event.data))
                    else:
                        unread.append(len(event.data))
        for n in unread:  # a reader that only catches up after everything arrived
            pair.relay.consumed(sid, n)
        pair.deliver(pair.relay)
    return accepted


def test_window_grows_when_the_window_not_the_reader_is_the_bottleneck() -> None:
    pair = Pair(relay_limits=Limits(max_window=MIB))
    sid = pair.node.open_stream(HEAD)
    pair.exchange()
    assert run_rounds(pair, sid, 5, fast_reader=True) == [WINDOW, 2 * WINDOW, MIB, MIB, MIB]


def test_window_does_not_grow_for_a_reader_that_lags() -> None:
    pair = Pair(relay_limits=Limits(max_window=MIB))
    sid = pair.node.open_stream(HEAD)
    pair.exchange()
    assert run_rounds(pair, sid, 4, fast_reader=False) == [WINDOW] * 4


def test_sender_flags_blocked_once_per_stall() -> None:
    pair, sid = responding_pair()
    pair.relay.send_data(sid, b"z" * MIB)
    pair.relay.send_data(sid, b"z")
    flags = [f.flags for f in map(decode_frame, pair.relay.data_to_send()) if f is not None]
    assert [bool(f & Flag.BLOCKED) for f in flags] == [False, False, False, True]
