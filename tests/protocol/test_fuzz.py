"""Fuzzing: whatever arrives, only ProtocolError subclasses come out; two honest
ends driven at random never accuse each other and never exceed their windows."""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from quorum.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from quorum.protocol import (
    Connection,
    DataReceived,
    Event,
    GoAway,
    GoAwayReason,
    Hello,
    Limits,
    ModelInfo,
    Presence,
    RequestHead,
    ResetCode,
    ResponseHead,
    Role,
    StreamOpened,
    StreamReset,
    StreamState,
    Usage,
)
from quorum.protocol.frames import HEADER, FrameType, decode_frame

from .helpers import HEAD, OK, Pair

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=64))
def test_decoder_only_raises_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(data)


small_ids = st.integers(0, 12) | st.integers(0, 2**32 - 1)


@FUZZ
@given(
    kind=st.sampled_from([int(t) for t in FrameType]) | st.integers(0, 255),
    flags=st.sampled_from([0, 1, 2, 3, 0x80]) | st.integers(0, 255),
    stream_id=small_ids,
    payload=st.binary(max_size=96),
    version=st.sampled_from([1, 1, 1, 0, 2]),
)
def test_connection_only_raises_protocol_errors_on_random_frames(
    kind: int, flags: int, stream_id: int, payload: bytes, version: int
) -> None:
    pair = Pair()
    pair.node.open_stream(HEAD)
    pair.exchange()
    with contextlib.suppress(ProtocolError):
        pair.relay.receive_frame(HEADER.pack(version, kind, flags, stream_id) + payload, 0.0)


def conversation() -> list[bytes]:
    """Everything a node sends in a busy but honest session, frame by frame."""
    pair = Pair(handshake=False)
    pair.node.send_hello("studio", ["presence"])
    pair.relay.send_hello("relay-1")
    sent: list[bytes] = []

    def pump() -> None:
        frames = pair.node.data_to_send()
        sent.extend(frames)
        for frame in frames:
            pair.relay.receive_frame(frame, pair.now)
        for frame in pair.relay.data_to_send():
            pair.node.receive_frame(frame, pair.now)

    pump()
    a = pair.node.open_stream(HEAD)
    pair.node.send_data(a, b"q" * 70_000)
    b = pair.node.open_stream(HEAD, end_stream=True)
    pair.node.send_presence(Presence("studio", (ModelInfo("qwen3"),)))
    pair.node.send_ping(b"pingpong")
    pump()
    pair.relay.send_response_head(b, OK)
    pair.relay.send_data(b, b"r" * 100_000)
    pair.relay.end_stream(b)
    pump()
    pair.node.consumed(b, 100_000)
    pair.node.end_stream(a)
    pair.node.reset_stream(a, ResetCode.CANCEL, "bye")
    pair.node.send_goaway(GoAwayReason.SHUTDOWN)
    pump()
    return sent


CONVERSATION = conversation()


@FUZZ
@given(
    index=st.integers(0, len(CONVERSATION) - 1),
    mutation=st.sampled_from(["flip", "truncate", "extend", "replace", "duplicate", "drop"]),
    position=st.integers(0, 2**16),
    byte=st.integers(0, 255),
    junk=st.binary(max_size=64),
)
def test_mutated_conversation_only_raises_protocol_errors(
    index: int, mutation: str, position: int, byte: int, junk: bytes
) -> None:
    frames = list(CONVERSATION)
    frame = bytearray(frames[index])
    if mutation == "flip":
        frame[position % len(frame)] ^= byte or 1
    elif mutation == "truncate":
        del frame[position % len(frame) :]
    elif mutation == "extend":
        frame += junk or b"\x00"
    elif mutation == "replace":
        frame[7:] = junk
    frames[index] = bytes(frame)
    if mutation == "duplicate":
        frames.insert(index, frames[index])
    elif mutation == "drop":
        del frames[index]
    relay = Connection(Role.RELAY)
    relay.send_hello("relay-1")
    try:
        for item in frames:
            relay.receive_frame(item, 0.0)
    except ProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
MESSAGE_KEYS: dict[Any, list[str]] = {
    Hello: ["version", "node_id", "role", "max_streams", "capabilities"],
    Presence: ["node_id", "models", "online", "age_ms"],
    Usage: ["records"],
    GoAway: ["last_stream_id", "reason", "message"],
    RequestHead: ["method", "path", "headers", "node", "model", "deadline_ms"],
    ResponseHead: ["status", "headers"],
}


@FUZZ
@given(
    cls=st.sampled_from(sorted(MESSAGE_KEYS, key=lambda c: c.__name__)),
    data=st.data(),
)
def test_message_decoders_reject_wrong_shapes_with_remote_errors(
    cls: Any, data: st.DataObject
) -> None:
    keys = MESSAGE_KEYS[cls]
    obj = data.draw(
        st.dictionaries(st.sampled_from([*keys, "models", "x"]), json_values, max_size=6)
    )
    with contextlib.suppress(RemoteProtocolError):
        cls.decode(json.dumps(obj).encode())


@FUZZ
@given(st.integers(0, 2**32 - 1))
def test_any_window_increment_is_taken_or_refused_cleanly(increment: int) -> None:
    pair = Pair()
    update = HEADER.pack(1, FrameType.WINDOW_UPDATE, 0, 0) + struct.pack("!I", increment)
    try:
        pair.relay.receive_frame(update, 0.0)
    except RemoteProtocolError:
        assert increment == 0 or increment > 2**31 - 1 - 16 * 1024 * 1024
    else:
        assert 0 < increment <= 2**31 - 1 - 16 * 1024 * 1024


LIMITS = Limits(
    max_streams=3, max_opens_per_second=5, connection_window=1 << 20, max_window=1 << 20
)
SIDES = st.sampled_from([Role.NODE, Role.RELAY])


class TwoHonestEnds(RuleBasedStateMachine):
    """Random calls on both ends, random partial delivery (latency), random clock."""

    def __init__(self) -> None:
        super().__init__()
        self.conns = {
            Role.NODE: Connection(Role.NODE, LIMITS),
            Role.RELAY: Connection(Role.RELAY, LIMITS),
        }
        self.wire: dict[Role, list[bytes]] = {Role.NODE: [], Role.RELAY: []}
        self.unread: dict[Role, dict[int, int]] = {Role.NODE: {}, Role.RELAY: {}}
        self.ids: dict[Role, list[int]] = {Role.NODE: [], Role.RELAY: []}
        self.now = 0.0
        self.conns[Role.NODE].send_hello("studio")
        self.conns[Role.RELAY].send_hello("relay-1")
        self.settle()

    def settle(self) -> None:
        """Deliver everything both ways until the link is quiet."""
        for _ in range(100):
            if not any([self.deliver_from(side, None) for side in (Role.NODE, Role.RELAY)]):
                return
        raise AssertionError("the link never went quiet")

    def teardown(self) -> None:
        self.settle()  # whatever happened, the rest of the conversation is clean too

    def deliver_from(self, side: Role, count: int | None) -> int:
        self.wire[side] += self.conns[side].data_to_send()
        cut = len(self.wire[side]) if count is None else count
        frames, self.wire[side] = self.wire[side][:cut], self.wire[side][cut:]
        receiver = self.other(side)
        for frame in frames:
            self.apply(receiver, self.conns[receiver].receive_frame(frame, self.now))
        return len(frames)

    @staticmethod
    def other(side: Role) -> Role:
        return Role.RELAY if side is Role.NODE else Role.NODE

    def apply(self, side: Role, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, StreamOpened):
                self.ids[side].append(event.stream_id)
            elif isinstance(event, DataReceived):
                unread = self.unread[side]
                unread[event.stream_id] = unread.get(event.stream_id, 0) + len(event.data)
            elif isinstance(event, StreamReset):
                self.unread[side].pop(event.stream_id, None)

    def call(self, side: Role, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            result = getattr(self.conns[side], method)(*args, **kwargs)
        except LocalProtocolError:
            return None  # the API refused a call that breaks a rule: that is its job
        self.apply(side, self.conns[side].take_events())
        return result

    def pick(self, side: Role, index: int) -> int | None:
        """A live stream of this end, recent ones first."""
        conn = self.conns[side]
        live = [sid for sid in self.ids[side] if conn.stream_state(sid) is not StreamState.CLOSED]
        return live[-1 - index % len(live)] if live else None

    @rule(side=SIDES, count=st.integers(1, 8))
    def deliver(self, side: Role, count: int) -> None:
        self.deliver_from(side, count)

    @rule(side=SIDES, end=st.booleans())
    def open(self, side: Role, end: bool) -> None:
        if self.conns[side].can_open_stream():
            self.ids[side].append(self.conns[side].open_stream(HEAD, end_stream=end))

    @rule(side=SIDES, index=st.integers(0, 3), end=st.booleans())
    def respond(self, side: Role, index: int, end: bool) -> None:
        if (sid := self.pick(side, index)) is not None:
            self.call(side, "send_response_head", sid, ResponseHead(200), end_stream=end)

    @rule(side=SIDES, index=st.integers(0, 3), size=st.integers(0, 300_000))
    def send(self, side: Role, index: int, size: int) -> None:
        if (sid := self.pick(side, index)) is not None:
            accepted = self.call(side, "send_data", sid, b"x" * size)
            assert accepted is None or 0 <= accepted <= size

    @rule(side=SIDES, index=st.integers(0, 3))
    def end(self, side: Role, index: int) -> None:
        if (sid := self.pick(side, index)) is not None:
            self.call(side, "end_stream", sid)

    @rule(side=SIDES, index=st.integers(0, 3), code=st.sampled_from(ResetCode))
    def reset(self, side: Role, index: int, code: ResetCode) -> None:
        if (sid := self.pick(side, index)) is not None:
            self.call(side, "reset_stream", sid, code, "fuzz")
            self.unread[side].pop(sid, None)

    @rule(side=SIDES, index=st.integers(0, 50), part=st.floats(0, 1))
    def consume(self, side: Role, index: int, part: float) -> None:
        unread = self.unread[side]
        if unread:
            sid = sorted(unread)[index % len(unread)]
            n = int(unread[sid] * part)
            self.conns[side].consumed(sid, n)  # never more than arrived: must not raise
            unread[sid] -= n

    @rule(side=SIDES)
    def ping(self, side: Role) -> None:
        self.call(side, "send_ping", b"12345678")

    @precondition(lambda self: self.now > 20)
    @rule(side=SIDES)
    def goaway(self, side: Role) -> None:
        self.call(side, "send_goaway", GoAwayReason.SHUTDOWN)

    @rule(seconds=st.floats(0, 2))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def windows_bound_what_the_app_holds(self) -> None:
        for unread in self.unread.values():
            assert all(n <= LIMITS.max_window for n in unread.values())
            assert sum(unread.values()) <= LIMITS.connection_window


TwoHonestEnds.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
test_two_honest_ends = TwoHonestEnds.TestCase
