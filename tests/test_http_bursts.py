"""The lean engine client under a fast stream: bursts handed over together, never held long,
and chunked bodies decoded whole-batch at C speed with the same answers as chunk by chunk."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorum.http import ConnectionLost, EngineConnection, EnginePool, HttpProtocolError, chunked
from quorum.http import connection as lean

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(i: int) -> bytes:
    return b'data: {"i": %d}\n\n' % i


class Transport:
    """What an engine connection needs of its transport, recording reads paused."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.paused = False
        self.pauses = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.written.extend(data)

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def connected() -> tuple[EngineConnection, Transport]:
    """A connection that sent its request and read the answer's head."""
    conn = EngineConnection(EnginePool(), ("127.0.0.1", 1))
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\n\r\n", b"")
    conn.data_received(HEAD)
    return conn, transport


async def until_waiting(task: asyncio.Task[Any]) -> None:
    """Let ``task`` run until it waits for the connection (it never finishes by itself here)."""
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()


async def test_a_burst_after_a_hand_over_goes_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean, "HOLD_S", 30.0)
    conn, transport = connected()
    await conn.head(5)
    conn.data_received(chunk(event(0)))
    assert await conn.next_chunk(hold=True) == event(0)  # the first piece: nothing to wait for
    pending = asyncio.ensure_future(conn.next_chunk(hold=True))
    conn.data_received(chunk(event(1)))
    await until_waiting(pending)  # held: more may come
    assert transport.paused  # ... and the kernel gathers what comes meanwhile
    for i in range(2, 40):  # (here delivered at once, as a real transport does on resuming)
        conn.data_received(chunk(event(i)))
    await until_waiting(pending)
    conn.data_received(b"0\r\n\r\n")  # the end ends the hold at once
    async with asyncio.timeout(5):
        together = await pending
    assert together == b"".join(event(i) for i in range(1, 40))
    assert not transport.paused  # reading resumed
    assert await conn.next_chunk(hold=True) == b""
    assert conn.complete


async def test_an_answer_read_whole_is_never_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean, "HOLD_S", 30.0)
    conn, transport = connected()
    await conn.head(5)
    conn.data_received(chunk(b'{"a": '))
    assert await conn.next_chunk() == b'{"a": '
    conn.data_received(chunk(b"1}"))
    async with asyncio.timeout(5):
        assert await conn.next_chunk() == b"1}"  # at once: a JSON answer is read to its end
    assert transport.pauses == 0


async def test_a_held_piece_waits_at_most_the_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean, "HOLD_S", 0.2)
    conn, transport = connected()
    await conn.head(5)
    conn.data_received(chunk(event(0)))
    assert await conn.next_chunk(hold=True) == event(0)
    handed = time.monotonic()
    conn.data_received(chunk(event(1)))  # and nothing after it for a while
    async with asyncio.timeout(10):
        assert await conn.next_chunk(hold=True) == event(1)
    waited = time.monotonic() - handed
    assert waited >= 0.15  # it was held (the loop's clock may round a little)
    assert not transport.paused
    conn.data_received(chunk(event(2)) + b"0\r\n\r\n")
    assert await conn.next_chunk(hold=True) == event(2)  # the end came with it: no hold
    assert await conn.next_chunk(hold=True) == b""


async def holding(
    monkeypatch: pytest.MonkeyPatch, held: bytes
) -> tuple[EngineConnection, Transport, asyncio.Future[bytes]]:
    """A connection that handed its first piece over and now holds ``held`` (a long hold:
    only what the test does next ends it), with the ``next_chunk`` that waits for it."""
    monkeypatch.setattr(lean, "HOLD_S", 30.0)
    conn, transport = connected()
    await conn.head(5)
    conn.data_received(chunk(b"x"))
    assert await conn.next_chunk(hold=True) == b"x"
    pending = asyncio.ensure_future(conn.next_chunk(hold=True))
    conn.data_received(chunk(held))
    await until_waiting(pending)
    return conn, transport, pending


async def test_enough_bytes_end_the_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    conn, transport, pending = await holding(monkeypatch, b"y" * 1000)
    conn.data_received(chunk(b"z" * lean.HOLD_BYTES))  # a large answer is never held back
    async with asyncio.timeout(5):
        assert await pending == b"y" * 1000 + b"z" * lean.HOLD_BYTES
    assert not transport.paused


async def test_a_broken_answer_ends_the_hold_with_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn, _, pending = await holding(monkeypatch, b"y")
    conn.connection_lost(None)  # the engine died mid-answer
    async with asyncio.timeout(5):
        assert await pending == b"y"  # what came is handed over...
    with pytest.raises(ConnectionLost):
        await conn.next_chunk(hold=True)  # ... and then the error, never a clean end


# -- whole batches of chunks, decoded at once ------------------------------------------------

bodies = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=40),
        st.sampled_from([b"a\r\nb", b"\r\n", b"data: x\r\n\r\n", b"\r", b"\n"]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(bodies, st.lists(st.integers(min_value=0, max_value=2000), max_size=6), st.booleans())
def test_a_chunked_body_decodes_the_same_however_it_arrives(
    parts: list[bytes], cuts: list[int], extensions: bool
) -> None:
    """Split anywhere, with CRLF inside chunks or chunk extensions: the bytes that come out
    are the body, whichever way (whole batch or chunk by chunk) each piece was parsed."""
    wire = b"".join(
        (b"%x;e=1\r\n%s\r\n" % (len(p), p)) if extensions and i % 3 == 0 else chunk(p)
        for i, p in enumerate(parts)
    )
    wire += b"0\r\n\r\n"
    edges = sorted({min(c, len(wire)) for c in cuts})

    async def run() -> bytes:
        conn, _ = connected()
        await conn.head(5)
        start = 0
        for edge in [*edges, len(wire)]:
            if edge > start:
                conn.data_received(wire[start:edge])
                start = edge
        got = []
        while piece := await conn.next_chunk(hold=True):
            got.append(piece)
        return b"".join(got)

    assert asyncio.run(run()) == b"".join(parts)


@pytest.mark.parametrize(
    "batch",
    [
        chunk(b"abc") + b"4\r\nab\r\n",  # a size that does not match its body
        chunk(b"abc") + b"-3\r\nabc\r\n",
        chunk(b"abc") + b"zz\r\nabc\r\n",
    ],
)
async def test_a_wrong_chunk_in_a_batch_is_still_refused(batch: bytes) -> None:
    conn, transport = connected()
    await conn.head(5)
    conn.data_received(batch + b"0\r\n\r\n")
    with pytest.raises(HttpProtocolError):
        while await conn.next_chunk(hold=True):
            pass
    assert transport.closed


def test_the_whole_batch_decoder_takes_the_whole_non_empty_chunks_a_batch_starts_with() -> None:
    whole = chunk(b"one") + chunk(b"two")
    assert chunked.whole_chunks(whole, 0, len(whole)) == (b"onetwo", len(whole))
    assert chunked.whole_chunks(b"xx" + whole, 2, len(whole) + 2) == (b"onetwo", len(whole) + 2)
    for cut in (
        b"3\r\n",  # a size line with its chunk still to come
        b"3\r\nab",  # a chunk cut short
        b"3\r\nabc",  # a chunk whose CRLF is still to come
    ):
        assert chunked.whole_chunks(whole + cut, 0, len(whole + cut)) == (b"onetwo", len(whole))
        assert chunked.whole_chunks(cut, 0, len(cut)) is None, cut
    for rest in (
        b"0\r\n\r\n",  # the end: the loop handles it (and trailers)
        b"0\r\nX-Trailer: 1\r\n\r\n",
        chunk(b"a\r\nb"),  # CRLF inside a chunk
        b"3;x=y\r\nabc\r\n",  # an extension
        b"A\r\n0123456789\r\n",  # a size in capitals: right, but for the loop to read
        b"03\r\nabc\r\n",  # leading zeros, the same
        b"4\r\nab\r\n",  # a size that does not match its body: the loop refuses it
    ):
        batch = whole + rest + chunk(b"after")
        assert chunked.whole_chunks(batch, 0, len(batch)) == (b"onetwo", len(whole)), rest
        assert chunked.whole_chunks(rest, 0, len(rest)) is None, rest
    many = b"".join(chunk(b"%d" % i) for i in range(300))
    assert chunked.whole_chunks(many + b"0\r\n\r\n", 0, len(many) + 5) == (
        b"".join(b"%d" % i for i in range(300)),
        len(many),
    )


@pytest.mark.parametrize(
    "rest",
    [b"0\r\n\r\n", b"0\r\nX-Trailer: 1\r\n\r\n", b"A\r\n0123456789\r\n0\r\n\r\n"],
)
async def test_a_burst_that_ends_the_answer_is_read_whole(rest: bytes) -> None:
    events = [b"data: %d\n\n" % i for i in range(200)]
    conn, _ = connected()
    await conn.head(5)
    conn.data_received(b"".join(chunk(e) for e in events) + rest)
    got = []
    while piece := await conn.next_chunk(hold=True):
        got.append(piece)
    tail = b"0123456789" if rest.startswith(b"A") else b""
    assert b"".join(got) == b"".join(events) + tail
    assert conn.complete
