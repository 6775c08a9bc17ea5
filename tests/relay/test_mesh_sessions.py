"""Which peer session is the other side of a relay-to-relay connection
(``relay.mesh.sessions``), pure; and two relays in memory that start their connection
over at awkward moments (as around a NATS restart) and still converge on one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from quorum.link import EndReason
from quorum.protocol import Frame, FrameType, RequestHead, encode_frame
from relay.hub import Hub
from relay.mesh import connections
from relay.mesh.mesh import Mesh
from relay.mesh.sessions import Heard, Sessions, token
from tests.link.helpers import read_all, until
from tests.relay.mesh_fakes import MemoryBus, MemoryNats, Node
from tests.relay.test_mesh_hubs import echo

CLUSTER = "c1"
DELIVER, DROP, ANSWER, START = Heard.DELIVER, Heard.DROP, Heard.ANSWER, Heard.START


def test_a_peer_that_starts_over_is_answered_and_its_old_frames_drop() -> None:
    heard = Sessions(wins=False)
    assert heard.heard(token(1)) is ANSWER  # the peer starts: we answer it
    assert heard.answering(7) == token(7, 1)
    assert heard.heard(token(1)) is DELIVER
    assert heard.heard(token(2)) is ANSWER  # it started over
    heard.answering(8)
    assert heard.heard(token(1)) is DROP  # late frames of its old connection
    assert heard.heard(token(2)) is DELIVER


def test_our_start_takes_the_answer_to_it_not_an_answer_to_one_we_replaced() -> None:
    """Around a NATS restart a relay may start over twice before the answer to its first
    start comes: that answer (its frames are for streams of the first connection) must not
    become the second connection's other side."""
    heard = Sessions(wins=False)
    assert heard.started(3) == token(3)
    heard.started(4)  # started over again before the peer answered 3
    assert heard.heard(token(5, 3)) is DROP
    assert heard.heard(token(5, 3)) is DROP
    assert heard.heard(token(6, 4)) is DELIVER
    assert heard.heard(token(6, 4)) is DELIVER
    assert heard.heard(token(7, 4)) is DROP  # 4 is answered already


def test_an_answer_never_makes_an_answer() -> None:
    """Each side's answer to the other's start is not a start to answer: no ping-pong."""
    one, two = Sessions(wins=True), Sessions(wins=False)
    start = one.started(1)
    assert two.heard(start) is ANSWER
    assert one.heard(two.answering(1)) is DELIVER
    assert two.heard(start) is DELIVER


def test_when_both_start_at_once_the_lower_id_wins_and_the_other_answers() -> None:
    one, two = Sessions(wins=True), Sessions(wins=False)
    first, other = one.started(1), two.started(1)
    assert one.heard(other) is DROP
    assert two.heard(first) is ANSWER
    answer = two.answering(2)
    assert one.heard(answer) is DELIVER
    assert two.heard(first) is DELIVER


def test_a_winner_whose_start_may_be_lost_starts_again_when_it_hears_the_loser() -> None:
    """As NATS comes back, the lower id's start may go out before the other relay
    subscribed again: waiting on it would wait for nothing."""
    one, two = Sessions(wins=True), Sessions(wins=False)
    one.started(1, sure=False)  # (never reaches two)
    other = two.started(1)
    assert one.heard(other) is START
    again = one.started(2)
    assert two.heard(again) is ANSWER
    assert one.heard(two.answering(2)) is DELIVER


def test_after_our_connection_ended_its_peer_session_is_dropped_not_reconnected() -> None:
    """The rest of a session goes to no new connection: it would start mid-way (frames for
    streams that connection never opened)."""
    heard = Sessions(wins=False)
    heard.heard(token(1))
    heard.answering(1)
    heard.ended()
    assert heard.heard(token(1)) is DROP
    assert heard.heard(token(2)) is ANSWER


def test_a_relay_of_an_earlier_version_is_followed_as_before() -> None:
    """Its bare numbers: the next session is the answer while we wait, else a restart."""
    heard = Sessions(wins=True)
    assert heard.heard(1) is ANSWER
    heard.answering(1)
    assert heard.heard(1) is DELIVER
    heard.started(2)
    assert heard.heard(1) is DROP  # the old connection's last frames
    assert heard.heard(2) is DELIVER  # its side of our new connection
    assert heard.heard(3) is ANSWER
    assert token(1) > 2**31  # and it sees our numbers grow, as it expects


# -- two relays in memory -------------------------------------------------------------


class HeldBus(MemoryBus):
    """A relay's bus whose relay-to-relay frames can be held back (a slow hop), then let go
    in order."""

    def __init__(self, server: MemoryNats) -> None:
        super().__init__(server)
        self.held: list[tuple[str, bytes]] | None = None
        self.frames_to = ""  # the subject of the last relay-to-relay frame sent

    async def publish(self, subject: str, data: bytes) -> None:
        if ".mesh." in subject:
            self.frames_to = subject
            if self.held is not None:
                self.held.append((subject, data))
                return
        await super().publish(subject, data)

    async def release(self) -> None:
        held, self.held = self.held or [], None
        for subject, data in held:
            await super().publish(subject, data)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Mesh, Mesh, tuple[HeldBus, HeldBus], Node]]:
    nats = MemoryNats()
    buses = (HeldBus(nats), HeldBus(nats))
    meshes, nodes = [], []
    for n, bus in enumerate(buses):
        mesh = Mesh(Hub(ping_interval=5.0), bus, prefix="t", relay_id=f"r{n + 1}")
        await mesh.start()
        meshes.append(mesh)
    nodes.append(Node(meshes[0].hub, CLUSTER, "a", ("m",), echo))
    b = Node(meshes[1].hub, CLUSTER, "b", (), echo)
    nodes.append(b)
    one, two = meshes
    await until(lambda: b.online("a") and linked(two, "r1") and linked(one, "r2"), 10)
    try:
        yield one, two, buses, b
    finally:
        for node in nodes:
            await node.stop()
        for mesh in meshes:
            await mesh.close()


def linked(mesh: Mesh, relay: str) -> bool:
    pump = mesh.connections.pump(relay)
    return pump is not None and pump.can_open_stream()


async def ask(node: Node, text: bytes) -> bytes:
    stream = node.pump.open_stream(RequestHead("POST", "/x", (), node="a"), end_stream=False)
    await stream.send_all(text)
    await stream.send_eof()
    assert (await stream.response()).status == 200
    return await read_all(stream)


def started(mesh: Mesh) -> int:
    return mesh.connections._sessions_started


async def test_a_relay_that_starts_over_twice_before_the_answer_still_converges(
    pair: tuple[Mesh, Mesh, tuple[HeldBus, HeldBus], Node],
) -> None:
    """r2 starts over (say NATS came back), r1 answers, and r2 starts over again before
    that answer arrives: r1's first answer must not pair with r2's second connection, or
    each side takes the other's answer for a restart and they replace each other's new
    connection without end (as seen after a NATS restart)."""
    one, two, (slow, _), b = pair
    assert b'"got": "before"' in await ask(b, b"before")
    first = started(one)
    two.connections.connect("r1", fresh=True)
    slow.held = []  # r1's frames to r2 wait
    await until(lambda: started(one) == first + 1, 5)  # r1 answered
    two.connections.connect("r1", fresh=True)
    await until(lambda: started(one) == first + 2, 5)  # r1 answered again
    await slow.release()
    await until(lambda: linked(two, "r1") and linked(one, "r2"), 5)
    assert b'"got": "after"' in await ask(b, b"after")
    assert started(one) == first + 2  # r1 did not start over since: the mesh is still


async def test_a_connection_that_breaks_the_protocol_starts_over_and_converges(
    pair: tuple[Mesh, Mesh, tuple[HeldBus, HeldBus], Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame for a stream r1 never opened, in r2's session: r1's connection ends with a
    protocol error, r2's with it (r1's GOAWAY), the rest of r2's session goes nowhere, and
    the next connection carries requests again."""
    monkeypatch.setattr(connections, "RECONNECT_AFTER_S", 0.01)
    one, two, (slow, bus), b = pair
    broken = one.connections.pump("r2")
    assert broken is not None and bus.frames_to.startswith("t.mesh.r1.r2.")
    before = started(one) + started(two)
    slow.held = []  # r1's GOAWAY is slow to come: r2 still sends in its session
    await bus.publish(bus.frames_to, encode_frame(Frame(FrameType.DATA, 40, b"x")))
    await until(lambda: broken.ended is not None, 5)
    await bus.publish(bus.frames_to, encode_frame(Frame(FrameType.PING, 0, bytes(8))))
    await bus.publish(bus.frames_to, encode_frame(Frame(FrameType.DATA, 2, b"late")))
    await slow.release()
    assert broken.ended is not None and broken.ended.reason is EndReason.PROTOCOL_ERROR
    await until(lambda: linked(two, "r1") and linked(one, "r2"), 5)
    assert b'"got": "after"' in await ask(b, b"after")
    # Both started over when their connections ended (at once: one more start, and its
    # answers), and stopped there.
    assert started(one) + started(two) - before <= 5
