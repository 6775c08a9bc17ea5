"""The mesh's pure parts: announcements on the wire, tagged heads, and the directory of
which relay holds which node (a peer's sessions: ``test_mesh_sessions``). No socket, no
clock."""

from __future__ import annotations

import json

import pytest

from quorum.errors import RemoteProtocolError
from quorum.protocol import ModelInfo, Presence, RequestHead
from relay.mesh.directory import Directory
from relay.mesh.wire import (
    NodeAnnounced,
    NodeDropped,
    RelayAlive,
    RelayDraining,
    RelayGone,
    RelayHello,
    Subjects,
    check_prefix,
    decode,
    destination,
    encode,
    tag,
    untagged,
)

MODELS = (ModelInfo("m"),)


def online(node: str, name: str = "") -> Presence:
    return Presence(node, MODELS, True, 0, name or node)


def offline(node: str) -> Presence:
    return Presence(node, (), False, 0, node)


def _node_with(**fields: object) -> bytes:
    body = json.loads(encode(NodeAnnounced("r1", "c1", online("n1"), 1.0)))
    return json.dumps(body | fields).encode()


def test_an_older_relays_node_announcement_has_no_key() -> None:
    body = json.loads(encode(NodeAnnounced("r1", "c1", online("n1"), 1.0, True, "ab" * 32)))
    del body["fp"], body["caps"]
    decoded = decode(json.dumps(body).encode())
    assert isinstance(decoded, NodeAnnounced)
    assert (decoded.fingerprint, decoded.capabilities, decoded.bound) == (None, (), True)


def test_announcements_cross_the_wire_unchanged() -> None:
    for message in (
        NodeAnnounced("r1", "c1", online("n1", "studio"), 12.5),
        NodeAnnounced("r1", "c1", online("n1", "studio"), 12.5, bound=True),
        NodeAnnounced("r1", "c1", online("n1"), 1.0, True, "ab" * 32, ("streams", "relay-hop")),
        NodeAnnounced("r1", "c1", offline("n1"), 0.0),
        NodeDropped("r2", "c1", "n1", "removed"),
        RelayAlive("r1"),
        RelayHello("r1"),
        RelayDraining("r1"),
        RelayGone("r1"),
    ):
        assert decode(encode(message)) == message


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"t": "node", "relay": "r1"}',
        b'{"t": "alive", "relay": "r.1"}',  # a relay id that would break a subject
        b'{"t": "what", "relay": "r1"}',
        _node_with(fp="not-a-fingerprint"),
        _node_with(caps="relay-hop"),  # not a list
        _node_with(caps=["Relay Hop"]),  # not a capability a hello may name
        b'{"t": "drop", "relay": "r1", "cluster": 1, "node": "n", "why": ""}',
        b'{"t": "node", "relay": "r1", "cluster": "c", "seen": "x", "presence": {}}',
        b'{"t": "node", "relay": "r1", "cluster": "c", "seen": 1, "bound": 1, "presence": {}}',
    ],
)
def test_a_malformed_announcement_is_refused(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(data)


def test_a_head_says_where_it_goes_and_loses_it_on_arrival() -> None:
    head = RequestHead("POST", "/v1/chat/completions", (("Content-Type", "a/b"),), node="n1")
    tagged = tag(head, "c1", "n1")
    assert destination(tagged) == ("c1", "n1") and destination(head) is None
    assert untagged(tagged) == head
    # A head tagged twice (never: one hop) still names one destination.
    assert destination(tag(tagged, "c2", "n2")) == ("c2", "n2")
    # A client cannot smuggle a destination in: the relay's tag replaces it.
    smuggled = RequestHead("GET", "/", (("x-quorum-mesh-node", "other"),))
    assert destination(tag(smuggled, "c1", "n1")) == ("c1", "n1")


def test_subjects_name_sender_and_session() -> None:
    subjects = Subjects(check_prefix("t.abc"))
    assert subjects.frames("r2", "r1", 3) == "t.abc.mesh.r2.r1.3"
    assert subjects.parse_frames("t.abc.mesh.r2.r1.3") == ("r1", 3)
    with pytest.raises(RemoteProtocolError):
        subjects.parse_frames("t.abc.mesh.r2.r1.x")
    for bad in ("", "a..b", "a b", "a.*", ">"):
        with pytest.raises(ValueError):
            check_prefix(bad)


def test_the_latest_relay_to_announce_a_node_holds_it() -> None:
    directory = Directory("me")
    assert directory.apply(NodeAnnounced("r1", "c", online("a"), 1.0), now=1.0) == [
        ("c", online("a"))
    ]
    held = directory.holder("c", "a")
    assert held is not None and held.relay == "r1"
    key = "cd" * 32
    moved = NodeAnnounced("r2", "c", online("a"), 2.0, True, key, ("relay-hop",))
    directory.apply(moved, now=2.0)  # it moved
    held = directory.holder("c", "a")
    assert held is not None and held.relay == "r2"
    assert (held.fingerprint, held.capabilities) == (key, ("relay-hop",))
    # The old relay's goodbye, late: not from the holder, so nothing changes.
    assert directory.apply(NodeAnnounced("r1", "c", offline("a"), 0.0), now=3.0) == []
    assert directory.holder("c", "a") is not None
    assert directory.apply(NodeAnnounced("r2", "c", offline("a"), 0.0), now=4.0) == [
        ("c", offline("a"))
    ]
    assert directory.holder("c", "a") is None


def test_our_own_announcements_teach_nothing_and_clusters_stay_apart() -> None:
    directory = Directory("me")
    assert directory.apply(NodeAnnounced("me", "c", online("a"), 1.0), now=1.0) == []
    directory.apply(NodeAnnounced("r1", "c1", online("a"), 1.0), now=1.0)
    directory.apply(NodeAnnounced("r1", "c2", online("b"), 1.0), now=1.0)
    assert [h.presence.node_id for h in directory.held("c1")] == ["a"]
    assert directory.holder("c2", "a") is None


def test_a_silent_or_departed_relay_holds_nothing() -> None:
    directory = Directory("me", expires_after=15.0)
    directory.apply(NodeAnnounced("r1", "c", online("a"), 0.0), now=0.0)
    directory.apply(NodeAnnounced("r2", "c", online("b"), 0.0), now=0.0)
    directory.apply(RelayAlive("r2"), now=10.0)
    assert directory.expire(now=14.9) == []
    gone = directory.expire(now=15.0)  # r1 silent for 15 s
    assert [(c, p.node_id, p.online) for c, p in gone] == [("c", "a", False)]
    assert directory.relays() == ["r2"]
    directory.apply(RelayDraining("r2"), now=15.5)
    assert directory.draining == {"r2"}  # its streams run on while its nodes move
    assert [p.node_id for _, p in directory.apply(RelayGone("r2"), now=16.0)] == ["b"]
    assert directory.draining == set()
    assert len(directory) == 0 and directory.relays() == []


def test_a_presence_replayed_later_says_how_old_it_is() -> None:
    directory = Directory("me")
    directory.apply(NodeAnnounced("r1", "c", online("a"), 100.0), now=100.0)
    held = directory.holder("c", "a")
    assert held is not None and held.presence_at(102.5).age_ms == 2500
    assert held.presence_at(99.0).age_ms == 0  # a clock behind never makes it younger
