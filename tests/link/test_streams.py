"""Tunnel streams, node pump against relay pump in memory: data, credit, resets."""

from __future__ import annotations

import asyncio

import pytest

from quorum.errors import (
    NoReachableHolder,
    StreamBroken,
    StreamRefused,
    UpstreamFailed,
)
from quorum.link import TunnelStream
from quorum.protocol import STREAM_WINDOW_BASE, FrameType, Limits, ResetCode, ResponseHead
from tests.harness import timeout
from tests.link.helpers import HEAD, read_all, running_pair, until

OK = ResponseHead(200, (("content-type", "text/event-stream"),))


def data_sent(frames: list[bytes]) -> int:
    """DATA payload bytes among ``frames`` (7-byte header each)."""
    return sum(len(f) - 7 for f in frames if f[1] == FrameType.DATA)


async def test_a_request_and_its_streamed_answer() -> None:
    async with running_pair() as pair:
        out = pair.node.open_stream(HEAD)
        await out.send_all(b'{"model": "qwen3", "stream": true}')
        await out.send_eof()
        inc = await pair.accepted()
        assert (inc.head.method, inc.head.path) == ("POST", "/v1/chat/completions")
        assert await read_all(inc) == b'{"model": "qwen3", "stream": true}'
        inc.send_response(OK)
        events = [f"data: {i}\n\n".encode() for i in range(5)]
        for event in events:
            await inc.send_all(event)
        await inc.send_eof()
        head = await out.response()
        assert head.status == 200 and dict(head.headers)["content-type"] == "text/event-stream"
        assert await read_all(out) == b"".join(events)
        assert out.closed and inc.closed
        await until(lambda: pair.node.active_streams == pair.relay.active_streams == 0)


async def test_a_slow_reader_stops_the_writer_after_one_window() -> None:
    async with running_pair() as pair:
        out = pair.node.open_stream(HEAD, end_stream=True)
        inc = await pair.accepted()
        inc.send_response(OK)
        body = bytes(range(256)) * (4 * STREAM_WINDOW_BASE // 256)

        async def answer() -> None:
            await inc.send_all(body)
            await inc.send_eof()

        writer = asyncio.create_task(answer())
        await out.response()
        # The node reads nothing: the relay may send exactly one window, then waits.
        await until(lambda: out.unconsumed == STREAM_WINDOW_BASE)
        await until(lambda: pair.relay.conn.send_credit(inc.id) == 0)
        for _ in range(100):  # let everything that could still move, move
            await asyncio.sleep(0)
        assert not writer.done()
        assert out.unconsumed == STREAM_WINDOW_BASE
        assert data_sent(pair.link.relay.sent) == STREAM_WINDOW_BASE  # nothing queued beyond
        # Reading lets the rest through, a window at a time.
        assert await read_all(out) == body
        async with asyncio.timeout(timeout(5)):
            await writer
        assert out.unconsumed == 0


async def test_a_frozen_stream_does_not_slow_the_others() -> None:
    async with running_pair() as pair:
        frozen = pair.node.open_stream(HEAD, end_stream=True)
        moving = pair.node.open_stream(HEAD, end_stream=True)
        body = b"x" * (3 * STREAM_WINDOW_BASE)

        async def answer(inc: TunnelStream) -> None:
            inc.send_response(OK)
            await inc.send_all(body)
            await inc.send_eof()

        writers = [asyncio.create_task(answer(await pair.accepted())) for _ in range(2)]
        await frozen.response()
        await moving.response()
        assert await read_all(moving) == body
        assert frozen.unconsumed == STREAM_WINDOW_BASE
        assert not writers[0].done()
        await frozen.aclose()  # reset CANCEL: the frozen stream's writer gives up
        async with asyncio.timeout(timeout(5)):
            results = await asyncio.gather(*writers, return_exceptions=True)
        assert isinstance(results[0], StreamBroken) and results[1] is None


async def test_the_opener_resets_and_the_acceptor_stops_at_once() -> None:
    async with running_pair() as pair:
        out = pair.node.open_stream(HEAD, end_stream=True)
        inc = await pair.accepted()
        inc.send_response(OK)
        writer = asyncio.create_task(inc.send_all(bytes(2 * STREAM_WINDOW_BASE)))
        await out.response()
        await until(lambda: out.unconsumed == STREAM_WINDOW_BASE)
        out.reset(ResetCode.CANCEL, "the client went away")
        async with asyncio.timeout(timeout(5)):
            with pytest.raises(StreamBroken, match="the client went away"):
                await writer
        assert inc.reset_info is not None
        assert (inc.reset_info.code, inc.reset_info.remote) == (ResetCode.CANCEL, True)
        with pytest.raises(StreamBroken):
            await inc.receive_some()
        # The reset gave the connection its credit back on both sides.
        await until(lambda: pair.node.active_streams == pair.relay.active_streams == 0)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (ResetCode.REFUSED, StreamRefused),
        (ResetCode.NO_ROUTE, NoReachableHolder),
        (ResetCode.PEER_GONE, NoReachableHolder),
        (ResetCode.INTERNAL, UpstreamFailed),
        (ResetCode.TIMEOUT, UpstreamFailed),
    ],
)
async def test_the_acceptor_resets_before_answering(
    code: ResetCode, error: type[Exception]
) -> None:
    async with running_pair() as pair:
        out = pair.node.open_stream(HEAD, end_stream=True)
        inc = await pair.accepted()
        inc.reset(code, "because")
        async with asyncio.timeout(timeout(5)):
            with pytest.raises(error, match="because") as info:
                await out.response()
        assert not isinstance(info.value, StreamBroken)
        assert (code is ResetCode.REFUSED) == isinstance(info.value, StreamRefused)


async def test_the_acceptor_resets_mid_answer_and_the_answer_is_cut_off() -> None:
    async with running_pair() as pair:
        out = pair.node.open_stream(HEAD, end_stream=True)
        inc = await pair.accepted()
        inc.send_response(OK)
        await inc.send_all(b"data: 1\n\n")
        await out.response()
        assert await out.receive_some() == b"data: 1\n\n"
        inc.reset(ResetCode.INTERNAL, "the engine crashed")
        async with asyncio.timeout(timeout(5)):
            with pytest.raises(StreamBroken, match="cut off: the engine crashed"):
                await out.receive_some()


async def test_an_answer_sent_whole_still_drops_the_unread_request() -> None:
    """An acceptor that answers without reading the body gives its credit back on aclose."""
    async with running_pair() as pair:
        out = pair.node.open_stream(HEAD)
        body = bytes(3 * STREAM_WINDOW_BASE)
        sender = asyncio.create_task(out.send_all(body))
        inc = await pair.accepted()
        inc.send_response(ResponseHead(413, ()), end_stream=True)
        await inc.aclose()
        async with asyncio.timeout(timeout(5)):
            await sender  # the whole body went, though nobody read it
        await out.send_eof()
        assert (await out.response()).status == 413
        assert await read_all(out) == b""
        await until(lambda: pair.relay.active_streams == 0 and inc.unconsumed == 0)


async def test_receive_some_honours_max_bytes_and_credit_follows_reads() -> None:
    async with running_pair() as pair:
        out = pair.node.open_stream(HEAD, end_stream=True)
        inc = await pair.accepted()
        inc.send_response(OK)
        await inc.send_all(b"abcdefgh")
        await inc.send_eof()
        await out.response()
        await until(lambda: out.unconsumed == 8)
        assert await out.receive_some(3) == b"abc"
        assert out.unconsumed == 8  # handed out, granted back only at the next read
        assert await out.receive_some(3) == b"def"
        assert out.unconsumed == 5
        assert await out.receive_some() == b"gh"
        assert await out.receive_some() == b""
        assert out.unconsumed == 0


async def test_a_side_that_accepts_no_streams_refuses_them() -> None:
    async with running_pair() as pair:
        inbound = pair.relay.open_stream(HEAD, end_stream=True)
        got = await pair.accepted(pair.node_streams)
        assert got.head.path == HEAD.path
        # A pump without on_stream refuses: the opener may retry elsewhere.
        pair.node._on_stream = None
        refused = pair.relay.open_stream(HEAD, end_stream=True)
        async with asyncio.timeout(timeout(5)):
            with pytest.raises(StreamRefused):
                await refused.response()
        got.reset()
        with pytest.raises(UpstreamFailed):
            await inbound.response()


async def test_the_peers_stream_limit_makes_openers_wait_for_a_slot() -> None:
    async with running_pair(relay_limits=Limits(max_streams=1)) as pair:
        first = pair.node.open_stream(HEAD, end_stream=True)
        assert not pair.node.can_open_stream()
        with pytest.raises(StreamRefused):
            pair.node.open_stream(HEAD, end_stream=True)
        waiting = asyncio.create_task(pair.node.wait_for_slot())
        inc = await pair.accepted()
        inc.send_response(OK, end_stream=True)
        await first.response()
        assert await first.receive_some() == b""
        async with asyncio.timeout(timeout(5)):
            await waiting
        second = pair.node.open_stream(HEAD, end_stream=True)
        assert second.id == first.id + 2
