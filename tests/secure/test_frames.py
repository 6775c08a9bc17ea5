"""Length-prefixed frames inside the end-to-end TLS stream: reading them one at a time and
in batches (pure: a byte source in memory, cut at every place)."""

from __future__ import annotations

import asyncio
import itertools
import struct
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorum.errors import StreamBroken
from quorum.secure.frames import FRAME_MAX, Framed
from quorum.secure.stream import TLSStream


class Pieces:
    """What ``TLSStream.receive_some`` would return: the bytes in the pieces given."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""


def framed(data: bytes, cuts: list[int]) -> Framed:
    points = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(points)]
    return Framed(cast(TLSStream, Pieces(pieces)))


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


async def batches(f: Framed) -> list[bytes]:
    out: list[bytes] = []
    while chunk := await f.read_batch():
        out.append(chunk)
    return out


chunks = st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=30)


@given(chunks, st.lists(st.integers(0, 2000), max_size=12))
def test_a_batch_is_whole_frames_in_order_and_stops_at_the_end(
    body: list[bytes], cuts: list[int]
) -> None:
    after = frame(b'{"next": "head"}')
    data = b"".join(frame(c) for c in body) + frame(b"") + after
    f = framed(data, cuts)
    got = asyncio.run(batches(f))
    assert b"".join(got) == b"".join(body)  # nothing lost, nothing reordered
    assert len(got) <= len(body)
    # The end was not swallowed into a batch: the next frame is the next request's head.
    assert asyncio.run(f.read()) == b'{"next": "head"}'


def test_frames_already_here_come_as_one_batch() -> None:
    data = b"".join(frame(b"data: %d\n\n" % i) for i in range(50)) + frame(b"")
    got = asyncio.run(batches(framed(data, [])))
    assert got == [b"".join(b"data: %d\n\n" % i for i in range(50))]


def test_a_batch_is_bounded() -> None:
    data = b"".join(frame(b"x" * 1000) for _ in range(10)) + frame(b"")
    f = framed(data, [])
    first = asyncio.run(f.read_batch(most=2500))
    assert first == b"x" * 3000  # the frame that crossed the bound ends the batch
    assert asyncio.run(batches(f)) == [b"x" * 7000]


def test_a_frame_over_the_limit_is_refused_not_batched() -> None:
    data = frame(b"ok") + struct.pack(">I", FRAME_MAX + 1) + b"x" * 10
    f = framed(data, [])
    assert asyncio.run(f.read_batch()) == b"ok"
    with pytest.raises(StreamBroken, match="over"):
        asyncio.run(f.read_batch())


class Sent:
    """What ``TLSStream.send_all`` was given, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes) -> None:
        self.writes.append(data)


def test_several_frames_go_in_one_write_and_read_back_one_by_one() -> None:
    sink = Sent()
    out = Framed(cast(TLSStream, sink))
    asyncio.run(out.write(b'{"method": "POST"}', b"body", b""))
    asyncio.run(out.write(b"next"))
    assert sink.writes == [
        frame(b'{"method": "POST"}') + frame(b"body") + frame(b""),
        frame(b"next"),
    ]
    back = framed(b"".join(sink.writes), [])
    got = [asyncio.run(back.read()) for _ in range(4)]
    assert got == [b'{"method": "POST"}', b"body", b"", b"next"]
