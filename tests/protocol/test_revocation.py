"""REVOCATION: the relay tells a node to drop its cached key checks, only if it asked."""

from __future__ import annotations

import pytest

from quorum.errors import LocalProtocolError, RemoteProtocolError
from quorum.protocol import (
    REVOCATIONS,
    Connection,
    ConnectionState,
    Revocation,
    RevocationReceived,
    Role,
)
from quorum.protocol.frames import Frame, FrameType, decode_frame, encode_frame
from tests.protocol.helpers import Pair


def asking() -> Pair:
    """A pair whose node announced ``revocations``."""
    pair = Pair(handshake=False)
    pair.node.send_hello("studio", ["presence", REVOCATIONS])
    pair.relay.send_hello("relay-1")
    pair.exchange()
    return pair


def test_a_node_that_asked_hears_each_revocation() -> None:
    pair = asking()
    assert pair.relay.can_revoke()
    pair.relay.send_revocation(Revocation("an API key of this cluster was revoked"))
    pair.relay.send_revocation(Revocation())
    events = pair.deliver(pair.relay)
    assert events == [
        RevocationReceived(Revocation("an API key of this cluster was revoked")),
        RevocationReceived(Revocation("")),
    ]
    assert pair.node.state is ConnectionState.OPEN


def test_the_relay_may_not_send_one_to_a_node_that_did_not_ask() -> None:
    pair = Pair()  # the node's hello says only "presence"
    assert not pair.relay.can_revoke()
    with pytest.raises(LocalProtocolError):
        pair.relay.send_revocation(Revocation("no"))
    assert pair.relay.data_to_send() == []  # nothing was queued


def test_a_node_never_sends_one() -> None:
    pair = asking()
    assert not pair.node.can_revoke()
    with pytest.raises(LocalProtocolError):
        pair.node.send_revocation(Revocation())


def test_a_revocation_the_node_did_not_ask_for_is_a_connection_error() -> None:
    pair = Pair()
    frame = encode_frame(Frame(FrameType.REVOCATION, 0, Revocation("x").encode()))
    with pytest.raises(RemoteProtocolError, match="did not announce"):
        pair.node.receive_frame(frame, pair.now)
    assert pair.node.state is ConnectionState.CLOSED


def test_a_relay_receiving_one_is_a_connection_error() -> None:
    pair = asking()
    frame = encode_frame(Frame(FrameType.REVOCATION, 0, Revocation("x").encode()))
    with pytest.raises(RemoteProtocolError):
        pair.relay.receive_frame(frame, pair.now)
    assert pair.relay.state is ConnectionState.CLOSED


@pytest.mark.parametrize(
    "payload",
    [b"", b"[]", b'{"message": 3}', b'{"message": "x", "key": "qk_1"}', b"{" * 10],
)
def test_a_malformed_revocation_is_a_connection_error(payload: bytes) -> None:
    pair = asking()
    raw = bytes([1, FrameType.REVOCATION, 0, 0, 0, 0, 0]) + payload
    with pytest.raises(RemoteProtocolError):
        pair.node.receive_frame(raw, pair.now)


def test_it_travels_only_on_stream_zero() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(Frame(FrameType.REVOCATION, 1, b"{}"))
    raw = bytes([1, FrameType.REVOCATION, 0, 0, 0, 0, 3]) + b"{}"
    with pytest.raises(RemoteProtocolError):
        decode_frame(raw)


def test_a_closed_connection_cannot_revoke() -> None:
    pair = asking()
    pair.relay.connection_lost()
    assert not pair.relay.can_revoke()
    with pytest.raises(LocalProtocolError):
        pair.relay.send_revocation(Revocation())


def test_our_hello_is_remembered() -> None:
    conn = Connection(Role.NODE)
    assert not conn.capabilities
    conn.send_hello("n", [REVOCATIONS])
    assert conn.capabilities == (REVOCATIONS,)
