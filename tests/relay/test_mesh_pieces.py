"""A relay-to-relay connection's frames as bus messages (``relay.mesh.peers``): between relays
that both join pieces, a frame too long for one message under 64 KiB goes in pieces and
arrives whole, in order; with a relay that does not, every frame goes whole, as before."""

from __future__ import annotations

from quorum.link import TunnelStream
from quorum.protocol import MAX_FRAME_SIZE, RequestHead, ResponseHead
from relay.hub import Hub
from relay.mesh.mesh import Mesh
from relay.mesh.peers import PIECE, PeerTransport
from tests.link.helpers import read_all, until
from tests.relay.mesh_fakes import MemoryNats, Node

NATS_READ = 64 * 1024  # what nats-server reads at once: a message should fit, with its subject
FULL = bytes(range(7)) + b"d" * 65536  # a DATA frame with 64 KiB: 7 bytes over


async def carried(frames: list[bytes], *, joins: bool = True) -> tuple[list[bytes], list[bytes]]:
    """``frames`` sent over one transport into another (whose HELLO said it joins pieces, or
    not): the messages, and what arrived."""
    messages: list[bytes] = []
    receiver = PeerTransport(lambda m: _noop())

    async def publish(message: bytes) -> None:
        messages.append(message)
        receiver.deliver(message)

    sender = PeerTransport(publish)
    if joins:
        sender.peer_joins_pieces()
    for frame in frames:
        await sender.send(frame)
    return messages, [await receiver.receive() for _ in frames]


async def _noop() -> None:
    pass


async def test_a_full_data_frame_goes_in_messages_under_64_kib_and_arrives_whole() -> None:
    messages, arrived = await carried([FULL, b"w" * 11, FULL])
    assert arrived == [FULL, b"w" * 11, FULL]
    assert all(len(m) <= PIECE < NATS_READ - 512 for m in messages)
    # The switch first (an empty message), then two pieces for each full frame.
    assert [len(m) for m in messages] == [0, PIECE, len(FULL) - PIECE, 11, PIECE, 7 + 65536 - PIECE]


async def test_small_frames_go_as_they_are_one_message_each() -> None:
    frames = [b"a" * 7, b"b" * 1000, b"c" * (PIECE - 1)]
    messages, arrived = await carried(frames)
    assert messages == [b"", *frames] and arrived == frames


async def test_a_frame_of_whole_pieces_ends_with_an_empty_message() -> None:
    frames = [b"p" * PIECE, b"r" * 9, b"q" * PIECE]
    messages, arrived = await carried(frames)
    assert arrived == frames
    assert [len(m) for m in messages] == [0, PIECE, 0, 9, PIECE, 0]


async def test_with_a_relay_that_does_not_join_pieces_every_frame_goes_whole() -> None:
    """A relay of an earlier version: no pieces to it, and its frame of exactly PIECE bytes
    (it never sends the empty switch) is a frame, not the first piece of one."""
    frames = [FULL, b"p" * PIECE, b"r" * 9]
    messages, arrived = await carried(frames, joins=False)
    assert messages == frames and arrived == frames


async def test_pieces_past_the_largest_frame_are_handed_on_for_the_protocol_to_refuse() -> None:
    receiver = PeerTransport(lambda m: _noop())
    receiver.deliver(b"")  # the peer switched to pieces
    for _ in range(5):
        receiver.deliver(b"x" * PIECE)  # a peer that never ends its frame
    for _ in range(2):  # never more than one frame's worth held
        assert MAX_FRAME_SIZE < len(await receiver.receive()) <= MAX_FRAME_SIZE + PIECE
    receiver.deliver(b"end")
    assert await receiver.receive() == b"x" * PIECE + b"end"


async def test_two_relays_agree_on_pieces_and_a_large_answer_crosses_under_64_kib() -> None:
    """Both relays' HELLOs say they join pieces: a 4 MiB answer in 64 KiB DATA frames crosses
    the bus in messages under 64 KiB, and arrives whole."""
    nats = MemoryNats()
    hubs, meshes = [], []
    for n in (1, 2):
        hub = Hub(ping_interval=5.0)
        mesh = Mesh(hub, nats.client(), prefix="t", relay_id=f"r{n}", alive_every=0.5)
        await mesh.start()
        hubs.append(hub)
        meshes.append(mesh)

    async def big(stream: TunnelStream) -> None:
        await read_all(stream)
        stream.send_response(ResponseHead(200, ()))
        for _ in range(64):
            await stream.send_all(b"x" * 65536)
        await stream.send_eof()

    a = Node(hubs[0], "c1", "a", ("m",), big)
    b = Node(hubs[1], "c1", "b", ("m",), big)
    try:
        await until(lambda: b.online("a") and b.pump.can_open_stream())
        stream = b.pump.open_stream(RequestHead("GET", "/big", (), node="a"), end_stream=True)
        assert (await stream.response()).status == 200
        assert len(await read_all(stream)) == 64 * 65536
        assert 0 < nats.largest <= PIECE
    finally:
        for node in (a, b):
            await node.stop()
        for mesh in meshes:
            await mesh.close()
