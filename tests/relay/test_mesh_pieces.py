"""A relay-to-relay connection's frames as bus messages (``relay.mesh.peers``): a frame
too long for one message under 64 KiB goes in pieces and arrives whole, in order."""

from __future__ import annotations

from quorum.protocol import MAX_FRAME_SIZE
from relay.mesh.peers import PIECE, PeerTransport

NATS_READ = 64 * 1024  # what nats-server reads at once: a message should fit, with its subject


async def carried(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """``frames`` sent over one transport into another: the messages, and what arrived."""
    messages: list[bytes] = []
    receiver = PeerTransport(lambda m: _noop())

    async def publish(message: bytes) -> None:
        messages.append(message)
        receiver.deliver(message)

    sender = PeerTransport(publish)
    for frame in frames:
        await sender.send(frame)
    return messages, [await receiver.receive() for _ in frames]


async def _noop() -> None:
    pass


async def test_a_full_data_frame_goes_in_messages_under_64_kib_and_arrives_whole() -> None:
    full = bytes(range(7)) + b"d" * 65536  # a DATA frame with 64 KiB: 7 bytes over
    messages, arrived = await carried([full, b"w" * 11, full])
    assert arrived == [full, b"w" * 11, full]
    assert all(len(m) <= PIECE < NATS_READ - 512 for m in messages)
    assert len(messages) == 5  # two pieces for each full frame; a small one goes alone


async def test_small_frames_go_as_they_are_one_message_each() -> None:
    frames = [b"a" * 7, b"b" * 1000, b"c" * (PIECE - 1)]
    messages, arrived = await carried(frames)
    assert messages == frames and arrived == frames


async def test_a_frame_of_whole_pieces_ends_with_an_empty_message() -> None:
    frames = [b"p" * PIECE, b"r" * 9, b"q" * PIECE]
    messages, arrived = await carried(frames)
    assert arrived == frames
    assert [len(m) for m in messages] == [PIECE, 0, 9, PIECE, 0]


async def test_pieces_past_the_largest_frame_are_handed_on_for_the_protocol_to_refuse() -> None:
    receiver = PeerTransport(lambda m: _noop())
    for _ in range(5):
        receiver.deliver(b"x" * PIECE)  # a peer that never ends its frame
    for _ in range(2):  # never more than one frame's worth held
        assert MAX_FRAME_SIZE < len(await receiver.receive()) <= MAX_FRAME_SIZE + PIECE
    receiver.deliver(b"end")
    assert await receiver.receive() == b"x" * PIECE + b"end"
